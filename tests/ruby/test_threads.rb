# frozen_string_literal: true

require_relative "support"
require "timeout"

# The GVL is released around every waiting call, and the waits are
# interruptible by Timeout.timeout, Thread#raise and Thread#kill.
class TestThreads < Minitest::Test
  def setup
    @client = VKTest.client(options: { pool_size: 4 })
    @locks = VKClient::LockManager.new(@client)
  end

  def teardown
    @client&.close
  end

  def monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  def test_two_threads_blocked_at_once
    started = monotonic
    threads = 2.times.map { |i| Thread.new { @client.call("BLPOP", VKTest.key("blocked#{i}"), 1) } }
    # Meanwhile this thread keeps running Ruby and commands.
    counted = 0
    counted += 1 while monotonic - started < 0.3
    assert_equal "PONG", @client.call("PING")
    assert_equal [nil, nil], threads.map(&:value)
    elapsed = monotonic - started
    assert_operator counted, :>, 1000, "the main thread ran while both waited"
    assert_operator elapsed, :<, 1.8, "both BLPOPs waited at the same time (#{elapsed}s)"
  end

  def test_a_blocked_thread_is_woken_by_data
    list = VKTest.key("wake")
    waiter = Thread.new { @client.call("BLPOP", list, 5) }
    sleep 0.2
    @client.call("RPUSH", list, "hello")
    assert_equal [list, "hello"], waiter.value
  end

  def test_timeout_interrupts_a_blocked_command
    started = monotonic
    assert_raises(Timeout::Error) { Timeout.timeout(0.3) { @client.call("BLPOP", VKTest.key("timeout"), 10) } }
    assert_operator monotonic - started, :<, 2.0
    assert_equal "PONG", @client.call("PING"), "the client is still usable"
  end

  def test_timeout_interrupts_a_waiting_lock_acquire
    key = VKTest.key("lockwait")
    held = @locks.try_lock(key)
    started = monotonic
    assert_raises(Timeout::Error) do
      Timeout.timeout(0.3) { @locks.with_lock(key, tries: 1000, retry_delay: 0.5) { flunk "must not run" } }
    end
    assert_operator monotonic - started, :<, 2.0
    held.unlock
  end

  def test_thread_raise_interrupts_a_waiting_lock_acquire
    key = VKTest.key("raise")
    held = @locks.try_lock(key)
    marker = Class.new(StandardError)
    waiter = Thread.new do
      Thread.current.report_on_exception = false
      @locks.lock(key, tries: 1000, retry_delay: 0.2)
    end
    sleep 0.2
    started = monotonic
    waiter.raise(marker, "stop waiting")
    assert_raises(marker) { waiter.join }
    assert_operator monotonic - started, :<, 1.0
    held.unlock
  end

  def test_thread_kill_stops_a_blocked_command
    waiter = Thread.new { @client.call("BLPOP", VKTest.key("kill"), 10) }
    sleep 0.2
    started = monotonic
    waiter.kill
    waiter.join
    assert_operator monotonic - started, :<, 1.0
    refute waiter.alive?
  end

  def test_sigint_interrupts_a_blocked_command
    script = <<~RUBY
      $LOAD_PATH.unshift(#{VKTest::RUBY_DIR.inspect})
      require "vkclient"
      c = VKClient::Client.new(standalone: #{VKTest.addr.inspect})
      $stdout.puts "ready"; $stdout.flush
      begin
        c.call("BLPOP", "vkrb:sigint:#{SecureRandom.hex(4)}", 30)
      rescue Interrupt
        puts "interrupted"
      end
    RUBY
    blocked = -> { @client.call("INFO", "clients")[/^blocked_clients:(\d+)/, 1].to_i }
    before = blocked.call
    IO.popen([RbConfig.ruby, "-e", script], "r+") do |io|
      assert_equal "ready\n", io.gets
      # The signal is sent once the command waits in the server, not while
      # a loaded machine still runs the child up to its begin block.
      deadline = monotonic + 10
      sleep 0.02 until blocked.call > before || monotonic > deadline
      assert_operator blocked.call, :>, before, "the child's BLPOP is blocked in the server"
      started = monotonic
      Process.kill("INT", io.pid)
      assert_equal "interrupted\n", io.gets
      assert_operator monotonic - started, :<, 2.0
    end
  end

  def test_many_threads_share_a_client
    key = VKTest.key("counter")
    threads = 8.times.map { Thread.new { 200.times { @client.call("INCR", key) } } }
    threads.each(&:join)
    assert_equal "1600", @client.call("GET", key)
  end

  def test_with_lock_excludes_threads
    key = VKTest.key("mutex")
    counter = VKTest.key("mutex-counter")
    threads = 4.times.map do
      Thread.new do
        10.times do
          @locks.with_lock(key, tries: 200, retry_delay: 0.005) do
            value = @client.call("GET", counter).to_i
            @client.call("SET", counter, value + 1)
          end
        end
      end
    end
    threads.each(&:join)
    assert_equal "40", @client.call("GET", counter), "no lost update"
  end

  def test_background_events_arrive_on_a_ruby_thread
    rec = VKTest::Recorder.new
    c = VKTest.client(logger: rec.logger, metrics: rec.metrics_sink)
    # The lock renewer runs on a core thread: its events are queued and
    # delivered by the client's Ruby event thread.
    locks = VKClient::LockManager.new(c)
    locks.with_lock(VKTest.key("bg"), expiry: 1, auto_renew: true) { sleep 1.5 }
    c.flush_events
    threads = rec.logs.map { |entry| entry[3] }.uniq
    refute_empty threads
    assert(threads.all? { |t| t.is_a?(Thread) }, "every event came on a Ruby thread")
    c.close
  end
end
