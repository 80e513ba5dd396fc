# frozen_string_literal: true

require_relative "support"

class TestLock < Minitest::Test
  def setup
    @client = VKTest.client
    @locks = VKClient::LockManager.new(@client)
  end

  def teardown
    @client&.close
  end

  def test_with_lock_returns_the_block_value_and_releases
    key = VKTest.key("with")
    result = @locks.with_lock(key) do |handle|
      assert_instance_of VKClient::LockHandle, handle
      assert_equal key.b, handle.key
      assert_operator handle.validity, :>, 9.0
      assert_operator handle.fencing_token, :>, 0
      assert_nil @locks.try_lock(key), "held inside the block"
      :done
    end
    assert_equal :done, result
    assert_equal 0, @client.call("EXISTS", key), "released after the block"
  end

  def test_block_errors_are_wrapped_after_release
    key = VKTest.key("raise")
    custom = Class.new(StandardError)
    original = custom.new("boom")
    raised = assert_raises(VKClient::LockFunctionError) { @locks.with_lock(key) { raise original } }
    assert_equal "distributed lock: function execution: boom", raised.message
    assert_equal 16, raised.code
    assert_same original, raised.cause
    assert_equal 0, @client.call("EXISTS", key)
    raised = assert_raises(VKClient::LockFunctionError) { @locks.with_lock(key) { 1 / 0 } }
    assert_equal "distributed lock: function execution: divided by 0", raised.message
    assert_instance_of ZeroDivisionError, raised.cause
    assert_equal 0, @client.call("EXISTS", key)
    # Not a StandardError: passes unchanged, the lock released all the same.
    assert_raises(Interrupt) { @locks.with_lock(key) { raise Interrupt } }
    assert_equal 0, @client.call("EXISTS", key)
    value = @locks.with_lock(key) { break 10 }
    assert_equal 10, value, "break leaves with_lock and the lock is released"
    assert_equal 0, @client.call("EXISTS", key)
    caught = catch(:out) { @locks.with_lock(key) { throw :out, :thrown } }
    assert_equal :thrown, caught
    h = @locks.try_lock(key)
    refute_nil h
    h.unlock
  end

  # Faults are worded as the original words them, with the cause's class:
  # writes (SET, the release script) wait out a pause of the server.
  def test_try_lock_and_unlock_fault_texts
    key = VKTest.key("fault")
    slow = VKTest.client(options: { read_timeout: 0.2, max_retries: -1 })
    locks = VKClient::LockManager.new(slow)
    handle = locks.try_lock(key)
    assert_equal "OK", @client.call("CLIENT", "PAUSE", "600", "WRITE")
    err = assert_raises(VKClient::TimeoutError) { handle.unlock }
    assert_match(/\Adistributed lock: unlock: i\/o timeout/, err.message)
    err = assert_raises(VKClient::TimeoutError) { locks.try_lock("#{key}\t2") }
    assert err.message.start_with?("failed to attempt lock acquisition for #{"#{key}\t2".inspect}: i/o timeout"),
           err.message
    sleep 0.6
    handle.unlock
  ensure
    slow&.close
  end

  def test_try_lock_contention_extend_and_fencing
    key = VKTest.key("try")
    first = @locks.try_lock(key)
    refute_nil first
    assert_nil @locks.try_lock(key), "contention is not an error"
    assert_operator first.validity, :<=, 10.0
    first.extend(30)
    assert_operator @client.call("PTTL", key), :>, 20_000
    assert_operator first.validity, :>, 20.0
    refute first.lost?
    token = first.fencing_token
    first.unlock
    assert_equal 0.0, first.validity
    second = @locks.try_lock(key)
    assert_operator second.fencing_token, :>, token, "fencing tokens increase per key"
    @client.call("DEL", key)
    assert_raises(VKClient::LockNotHeldError) { second.extend(10) }
    assert_raises(VKClient::LockNotHeldError) { second.unlock }
  end

  def test_lock_with_options_and_presets
    key = VKTest.key("opts")
    handle = @locks.lock(key, expiry: 2, tries: 1)
    pttl = @client.call("PTTL", key)
    assert_operator pttl, :<=, 2000
    assert_operator pttl, :>, 1000
    handle.unlock
    @locks.with_lock(key, VKClient::LockOptions.rate_limiter) do
      assert_operator @client.call("PTTL", key), :<=, 2000
    end
    opts = VKClient::LockOptions.default
    assert_equal 10.0, opts.expiry
    assert_equal 3, opts.tries
    assert_equal 0.5, opts.retry_delay
    assert_equal 0.01, opts.drift_factor
    refute opts.auto_renew
    limiter = VKClient::LockOptions.rate_limiter
    assert_equal [2.0, 2, 0.1, 0.01], [limiter.expiry, limiter.tries, limiter.retry_delay, limiter.drift_factor]
    assert_equal VKClient::LockOptions.new, VKClient::LockOptions.default
    assert_equal 5, opts.with(tries: 5).tries
  end

  def test_retries_wait_for_a_release
    key = VKTest.key("retry")
    held = @locks.try_lock(key)
    releaser = Thread.new { sleep 0.3; held.unlock }
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    value = @locks.with_lock(key, tries: 20, retry_delay: 0.1) { :got_it }
    assert_equal :got_it, value
    assert_operator Process.clock_gettime(Process::CLOCK_MONOTONIC) - started, :>=, 0.25
    releaser.join
  end

  def test_auto_renew_keeps_the_lock_while_the_block_runs
    key = VKTest.key("renew")
    @locks.with_lock(key, expiry: 1, auto_renew: true) do |handle|
      sleep 2.5
      assert_equal 1, @client.call("EXISTS", key), "renewed past its first expiry"
      refute handle.lost?
    end
    assert_equal 0, @client.call("EXISTS", key)
  end

  def test_a_lock_lost_by_renewal_is_reported
    key = VKTest.key("lost")
    ran = false
    err = assert_raises(VKClient::LockLostError) do
      @locks.with_lock(key, expiry: 0.3, auto_renew: true) do |handle|
        @client.call("SET", key, "stranger")
        deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 5
        sleep 0.02 until handle.lost? || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
        assert handle.lost?
        ran = true
      end
    end
    assert ran
    assert_equal "lock was lost while held", err.message
    assert_equal "stranger", @client.call("GET", key)
  end

  def test_quorum_of_independent_nodes
    addrs = VKTest.env("VK_TEST_QUORUM_ADDRS").split(",")
    clients = addrs.map { |a| VKClient::Client.new(standalone: a) }
    quorum = VKClient::LockManager.new(clients)
    assert_equal 3, quorum.clients.size
    key = VKTest.key("quorum")
    # One node already has the key: a majority (2 of 3) is still reachable.
    clients[0].call("SET", key, "someone-else", "PX", 10_000)
    handle = quorum.try_lock(key)
    refute_nil handle
    assert_equal [0, 1, 1], clients.map { |c| c.call("EXISTS", key) }.each_with_index.map { |e, i| i.zero? ? 0 : e }
    handle.unlock
    assert_equal "someone-else", clients[0].call("GET", key), "a value that is not ours is left alone"
    # Two nodes taken: no majority.
    clients[1].call("SET", key, "someone-else", "PX", 10_000)
    assert_nil quorum.try_lock(key)
    assert_equal 0, clients[2].call("EXISTS", key), "a minority acquisition is rolled back"
    clients.each(&:close)
  end

  def test_manager_survives_reconnect
    key = VKTest.key("reconnect")
    @client.close
    @client.connect
    @locks.with_lock(key) { assert_equal 1, @client.call("EXISTS", key) }
  end

  def test_inspect
    assert_equal "#<VKClient::LockManager nodes=1>", @locks.inspect
    h = @locks.try_lock(VKTest.key("inspect"))
    assert_match(/\A#<VKClient::LockHandle key="vkrb:inspect:\h+" fencing_token=\d+ validity=[\d.]+>\z/, h.inspect)
    h.unlock
  end
end
