# frozen_string_literal: true

require_relative "support"
require "socket"
require "tmpdir"
require "fileutils"

# Tracing: Client.new(tracer:, trace_commands:) hands the client's spans to
# a Ruby object; VKClient.with_trace_parent gives the parent of a call's
# spans. Every span here comes from real servers started by the harness.
class TestTracing < Minitest::Test
  # Records every span, with the thread it started and ended on.
  class RecordingTracer
    Span = Struct.new(:name, :parent, :attributes, :start_ns, :error, :end_attributes, :end_ns,
                      :thread, :end_thread, :ended, keyword_init: true)

    def initialize
      @lock = Mutex.new
      @spans = []
    end

    def start_span(name, parent, attributes, start_ns)
      span = Span.new(name: name, parent: parent, attributes: attributes, start_ns: start_ns,
                      thread: Thread.current, ended: false)
      @lock.synchronize { @spans << span }
      span
    end

    def end_span(span, error, attributes, end_ns)
      span.error = error
      span.end_attributes = attributes
      span.end_ns = end_ns
      span.end_thread = Thread.current
      span.ended = true
      nil
    end

    def spans(name = nil)
      all = @lock.synchronize { @spans.dup }
      name ? all.select { |s| s.name == name } : all
    end

    def clear
      @lock.synchronize { @spans.clear }
    end
  end

  def setup
    @tracer = RecordingTracer.new
    @clients = []
  end

  def teardown
    @clients.each(&:close)
  end

  def traced_client(**kwargs)
    client = VKTest.client(tracer: @tracer, **kwargs)
    @clients << client
    client
  end

  def free_port
    server = TCPServer.new("127.0.0.1", 0)
    port = server.addr[1]
    server.close
    port
  end

  def assert_ended(span)
    assert span.ended, "#{span.name} ended"
    assert_operator span.end_ns, :>=, span.start_ns
    now_ns = Process.clock_gettime(Process::CLOCK_REALTIME, :nanosecond)
    assert_in_delta now_ns, span.start_ns, 60 * 1_000_000_000, "wall clock nanoseconds"
  end

  def test_failing_connect_gives_a_connect_span_with_the_error
    address = "127.0.0.1:#{free_port}"
    err = assert_raises(VKClient::ConnectionError) do
      VKClient::Client.new(standalone: address, tracer: @tracer, options: { dial_timeout: 1.0 })
    end
    connects = @tracer.spans("redis.connect")
    refute_empty connects
    span = connects.first
    assert_ended span
    assert_nil span.parent
    assert_equal({ "db.system" => "redis", "redis.mode" => "standalone", "server.address" => address },
                 span.attributes)
    assert_equal err.message, span.error
    assert_match(/Connection refused/, span.error)
    assert_same Thread.current, span.thread, "a span of the caller's thread reaches it directly"
    assert_empty @tracer.spans("redis.close"), "a client that never was is not closed"
  end

  def test_connect_then_close
    client = traced_client
    connect = @tracer.spans("redis.connect")
    assert_equal 1, connect.size
    assert_ended connect.first
    assert_nil connect.first.error
    assert_equal VKTest.addr, connect.first.attributes["server.address"]
    assert_equal "redis", connect.first.attributes["db.system"]
    assert_equal "standalone", connect.first.attributes["redis.mode"]
    assert_empty @tracer.spans("redis.command"), "no command spans unless trace_commands"
    assert_equal "PONG", client.call("PING")
    assert_empty @tracer.spans("redis.command")
    client.close
    closes = @tracer.spans("redis.close")
    assert_equal 1, closes.size
    assert_ended closes.first
    assert_nil closes.first.error
    assert_nil closes.first.parent
    assert_equal VKTest.addr, closes.first.attributes["server.address"]
    client.connect
    assert_equal 2, @tracer.spans("redis.connect").size, "Client#connect is a connect span too"
  end

  def test_contended_with_lock_times_out
    key = VKTest.key("trace-contended")
    owner = VKTest.client
    @clients << owner
    held = VKClient::LockManager.new(owner).try_lock(key)
    refute_nil held
    locks = VKClient::LockManager.new(traced_client)
    err = assert_raises(VKClient::Error) { locks.with_lock(key, tries: 3, retry_delay: 0.05) { flunk "not acquired" } }
    spans = @tracer.spans("redis.lock.with_lock")
    assert_equal 1, spans.size
    span = spans.first
    assert_ended span
    assert_equal key, span.attributes["redis.lock.key"]
    assert_equal "contended", span.end_attributes["redis.lock.outcome"]
    assert_equal "3", span.end_attributes["redis.lock.attempts"]
    assert_equal err.message, span.error
    assert_match(/lock already taken/, span.error)
    held.unlock
  end

  def test_with_lock_parents_the_commands_of_its_block
    key = VKTest.key("trace-with")
    client = traced_client(trace_commands: true)
    locks = VKClient::LockManager.new(client)
    @tracer.clear
    value = locks.with_lock(key) do
      client.call("SET", "#{key}:inner", "v")
      client.pipelined { |p| p.call("GET", "#{key}:inner"); p.call("DEL", "#{key}:inner") }
      :ran
    end
    assert_equal :ran, value
    with_lock = @tracer.spans("redis.lock.with_lock")
    assert_equal 1, with_lock.size
    lock_span = with_lock.first
    assert_ended lock_span
    assert_nil lock_span.error
    assert_nil lock_span.parent
    assert_equal "released", lock_span.end_attributes["redis.lock.outcome"]
    assert_equal "1", lock_span.end_attributes["redis.lock.attempts"]
    commands = @tracer.spans("redis.command")
    set = commands.find { |s| s.attributes["db.operation"] == "set" }
    refute_nil set, "a redis.command span for SET (lower case): #{commands.map(&:attributes).inspect}"
    assert_same lock_span, set.parent, "the command in the block is a child of the with_lock span"
    assert_ended set
    assert_nil set.error
    assert_equal "redis", set.attributes["db.system"]
    # The lock's own commands are spans of their own, inside the with_lock.
    pipelines = commands.select { |s| s.attributes["db.operation"] == "pipeline" && s.start_ns > set.end_ns }
    assert_equal 1, pipelines.size, "the block's pipeline (GET, DEL) is a span of its own"
    pipeline = pipelines.first
    assert_equal "2", pipeline.attributes["redis.pipeline.length"]
    assert_same lock_span, pipeline.parent
    assert_operator set.start_ns, :>=, lock_span.start_ns
    assert_operator set.end_ns, :<=, lock_span.end_ns
    # Outside the block, a command has no parent.
    @tracer.clear
    client.call("PING")
    ping = @tracer.spans("redis.command")
    assert_equal 1, ping.size
    assert_nil ping.first.parent
    assert_equal "ping", ping.first.attributes["db.operation"]
  end

  def test_a_failing_command_span_carries_the_error
    client = traced_client(trace_commands: true, options: { read_timeout: 0.2, max_retries: -1 })
    pauser = VKTest.client
    @clients << pauser
    @tracer.clear
    # Writes wait out the pause: the SET times out.
    assert_equal "OK", pauser.call("CLIENT", "PAUSE", "600", "WRITE")
    err = assert_raises(VKClient::TimeoutError) { client.call("SET", VKTest.key("trace-paused"), "v") }
    span = @tracer.spans("redis.command").last
    refute_nil span
    assert_equal "set", span.attributes["db.operation"]
    assert_equal err.message, span.error
    assert_equal "OK", pauser.call("CLIENT", "UNPAUSE")
    # An error reply is a reply: the span has no error.
    assert_raises(VKClient::ResponseError) { client.call("INCR", "#{VKTest.key('trace-paused')}:none", "x") }
    span = @tracer.spans("redis.command").last
    assert_equal "incr", span.attributes["db.operation"]
    assert_nil span.error
  end

  def test_busy_try_lock_is_contended
    key = VKTest.key("trace-try")
    owner = VKTest.client
    @clients << owner
    held = VKClient::LockManager.new(owner).try_lock(key)
    locks = VKClient::LockManager.new(traced_client)
    assert_nil locks.try_lock(key)
    span = @tracer.spans("redis.lock.try_lock").last
    assert_ended span
    assert_equal "contended", span.end_attributes["redis.lock.outcome"]
    assert_equal key, span.attributes["redis.lock.key"]
    assert_nil span.error, "a busy lock is not a failure"
    held.unlock
    handle = locks.try_lock(key)
    refute_nil handle
    assert_equal "acquired", @tracer.spans("redis.lock.try_lock").last.end_attributes["redis.lock.outcome"]
    handle.unlock
  end

  def test_caller_given_parent
    key = VKTest.key("trace-parent")
    client = traced_client(trace_commands: true)
    locks = VKClient::LockManager.new(client)
    parent = Object.new
    @tracer.clear
    assert_nil VKClient.trace_parent
    result = client.with_trace_parent(parent) do
      assert_same parent, VKClient.trace_parent
      client.call("PING")
      handle = locks.try_lock(key)
      handle.unlock
      locks.with_lock(key) { client.call("GET", key) }
      :value
    end
    assert_equal :value, result
    assert_nil VKClient.trace_parent, "restored after the block"
    command_parents = @tracer.spans("redis.command").map { |s| [s.attributes["db.operation"], s.parent] }
    assert_equal(["ping", parent], command_parents.find { |op, _| op == "ping" })
    assert_same parent, @tracer.spans("redis.lock.try_lock").first.parent
    with_lock = @tracer.spans("redis.lock.with_lock").first
    assert_same parent, with_lock.parent
    get = @tracer.spans("redis.command").find { |s| s.attributes["db.operation"] == "get" }
    assert_same with_lock, get.parent, "the client's own enclosing span comes first"
    # Nesting, other threads, and the block's exit.
    inner = Object.new
    VKClient.with_trace_parent(parent) do
      VKClient.with_trace_parent(inner) { client.call("ECHO", "a") }
      Thread.new { client.call("ECHO", "b") }.join
      client.call("ECHO", "c")
    end
    echoes = @tracer.spans("redis.command").select { |s| s.attributes["db.operation"] == "echo" }
    assert_equal [inner, nil, parent], echoes.map(&:parent)
    assert_raises(RuntimeError) { client.with_trace_parent(parent) { raise "boom" } }
    assert_nil VKClient.trace_parent
  end

  def test_attributes_never_hold_the_password
    pass = VKTest.env("VK_TEST_ACL_PASS")
    user = VKTest.env("VK_TEST_ACL_USER")
    address = VKTest.env("VK_TEST_ACL_ADDR")
    client = VKClient::Client.new(standalone: address, static_password: { username: user, password: pass },
                                  tracer: @tracer, trace_commands: true)
    @clients << client
    assert_equal user, client.call("ACL", "WHOAMI")
    key = VKTest.key("trace-secret")
    client.call("SET", key, pass)
    assert_equal pass, client.call("GET", key)
    VKClient::LockManager.new(client).with_lock("#{key}:lock") { client.call("ECHO", pass) }
    client.close
    assert_raises(VKClient::Error) do
      VKClient::Client.new(standalone: address, static_password: { username: user, password: "wrong-#{pass}" },
                           tracer: @tracer, trace_commands: true)
    end
    spans = @tracer.spans
    names = spans.map(&:name).uniq
    %w[redis.connect redis.command redis.lock.with_lock redis.close].each { |n| assert_includes names, n }
    assert(spans.any?(&:error), "the failed connect is in the record")
    spans.each do |span|
      texts = [span.error, *span.attributes.to_a.flatten, *(span.end_attributes || {}).to_a.flatten].compact
      texts.each { |t| refute_includes t, pass, "#{span.name} leaks the password" }
    end
  end

  def test_handles_survive_the_gc_until_their_end
    tracer = Class.new do
      attr_reader :ended

      def initialize
        @ids = {}
        @ended = []
      end

      # The span object is referenced by nothing but vkclient.
      def start_span(name, _parent, attributes, _start_ns)
        span = Object.new
        span.instance_variable_set(:@name, name.dup)
        @ids[span.object_id] = [name, attributes["db.operation"]]
        span
      end

      def end_span(span, _error, _attributes, _end_ns)
        name, operation = @ids.fetch(span.object_id)
        @ended << [span.instance_variable_get(:@name), name, operation]
      end
    end.new
    client = VKTest.client(tracer: tracer, trace_commands: true)
    @clients << client
    VKClient::LockManager.new(client).with_lock(VKTest.key("trace-gc")) do
      3.times do
        GC.start(full_mark: true, immediate_sweep: true)
        client.call("SET", VKTest.key("trace-gc-garbage"), "x" * 1000)
      end
    end
    names = tracer.ended.map(&:first)
    assert_equal names, tracer.ended.map { |e| e[1] }, "end_span gets the very object start_span returned"
    assert_includes names, "redis.lock.with_lock"
    assert_equal 3, tracer.ended.count { |e| e[2] == "set" }
  end

  def test_start_span_false_or_nil_is_handed_back_as_nil
    ends = []
    tracer = Object.new
    tracer.define_singleton_method(:start_span) { |name, *| name == "redis.connect" ? false : nil }
    tracer.define_singleton_method(:end_span) { |span, error, *| ends << [span, error] }
    client = VKTest.client(tracer: tracer, trace_commands: true)
    client.call("PING")
    client.close
    assert_equal [[nil, nil]] * 3, ends
  end

  def test_a_raising_tracer_does_not_break_the_client
    tracer = Object.new
    tracer.define_singleton_method(:start_span) { |*| raise ArgumentError, "start failed" }
    tracer.define_singleton_method(:end_span) { |*| flunk "no end_span after a failed start_span" }
    _, err = capture_io do
      client = VKTest.client(tracer: tracer, trace_commands: true)
      assert_equal "PONG", client.call("PING")
      client.close
    end
    assert_match(/vkclient: a tracer raised: .*start failed/, err)
    ender = RecordingTracer.new
    ender.define_singleton_method(:end_span) { |*| raise "end failed" }
    _, err = capture_io do
      other = VKTest.client(tracer: ender, trace_commands: true)
      assert_equal "x", other.call("ECHO", "x")
      other.close
    end
    assert_match(/vkclient: a tracer raised: .*end failed/, err)
    assert_equal %w[redis.connect redis.command redis.close], ender.spans.map(&:name)
  end

  def test_interrupts_in_a_tracer_reach_the_thread
    tracer = RecordingTracer.new
    client = VKTest.client(tracer: tracer, trace_commands: true)
    @clients << client
    tracer.define_singleton_method(:start_span) { |*| raise Interrupt }
    assert_raises(Interrupt) { client.call("PING") }
    tracer.singleton_class.send(:remove_method, :start_span)
    assert_equal "PONG", client.call("PING"), "the client still works"
  end

  def test_commands_from_many_threads
    client = traced_client(trace_commands: true)
    @tracer.clear
    threads = Array.new(4) do |i|
      Thread.new do
        25.times { |j| client.call("SET", VKTest.key("trace-threads-#{i}"), j) }
        Thread.current
      end
    end
    callers = threads.map(&:value)
    spans = @tracer.spans("redis.command")
    assert_equal 100, spans.size
    spans.each do |s|
      assert_ended s
      assert_nil s.parent
      assert_same s.thread, s.end_thread
    end
    assert_equal callers.sort_by(&:object_id), spans.map(&:thread).uniq.sort_by(&:object_id)
  end

  def test_tracer_is_checked_when_the_client_is_built
    err = assert_raises(TypeError) { VKTest.client(tracer: Object.new) }
    assert_equal "tracer must respond to #start_span(name, parent, attributes, start_ns) and " \
                 "#end_span(span, error, attributes, end_ns); Object lacks #start_span and #end_span",
                 err.message
    half = Object.new
    half.define_singleton_method(:start_span) { |*| nil }
    err = assert_raises(TypeError) { VKTest.client(tracer: half) }
    assert_match(/Object lacks #end_span\z/, err.message)
    err = assert_raises(TypeError) { VKTest.client(tracer: ->(*) {}) }
    assert_match(/Proc lacks #start_span and #end_span/, err.message)
    err = assert_raises(TypeError) { VKTest.client(tracer: @tracer, trace_commands: "yes") }
    assert_equal "trace_commands must be true or false, not String", err.message
    assert_empty @tracer.spans, "nothing was connected"
  end
end

# A GCP IAM refresh runs on the core's background thread: its spans are
# queued and reach the tracer on a Ruby thread (the client's event thread,
# or the caller's on flush_events), with no parent.
class TestTracingIAM < Minitest::Test
  def setup
    @dir = Dir.mktmpdir("vkrb-trace-iam")
    @pid = Process.spawn("/usr/bin/python3", File.join(__dir__, "..", "harness", "iam_env.py"), @dir)
    ready = File.join(@dir, "ready")
    deadline = Time.now + 30
    sleep 0.05 until File.exist?(ready) || Time.now > deadline
    assert File.exist?(ready), "the IAM test environment did not start"
    @env = File.readlines(ready, chomp: true).to_h { |line| line.split("=", 2) }
  end

  def teardown
    File.write(File.join(@dir, "stop"), "")
    Process.wait(@pid)
    FileUtils.remove_entry(@dir)
  end

  def wait_for(seconds)
    deadline = Time.now + seconds
    until yield
      return false if Time.now > deadline

      sleep 0.05
    end
    true
  end

  def test_refresh_failure_then_success
    tracer = TestTracing::RecordingTracer.new
    client = VKClient::Client.new(
      standalone: @env["ADDR"], tls: { ca_cert_base64: @env["CA_B64"] },
      gcp_iam: { credentials_base64: @env["CREDENTIALS_B64"], service_account: @env["SERVICE_ACCOUNT"],
                 endpoint: @env["ENDPOINT"], token_lifetime: 3, refresh_every: 1, refresh_check_interval: 0.2 },
      tracer: tracer
    )
    assert_equal "PONG", client.call("PING")
    File.write(@env["CONTROL_FILE"], '{"status": 500, "message": "backend down", "endpoints": ["iam"]}')
    refreshes = -> { tracer.spans("redis.iam_refresh").select { |s| s.thread.name == "vkclient-events" } }
    assert wait_for(15) { refreshes.call.any?(&:error) }, tracer.spans.map(&:name).inspect
    failed = refreshes.call.find(&:error)
    File.delete(@env["CONTROL_FILE"])
    assert wait_for(15) { refreshes.call.any? { |s| s.start_ns > failed.start_ns && s.error.nil? } }
    client.close
    recovered = refreshes.call.find { |s| s.start_ns > failed.start_ns && s.error.nil? }
    [failed, recovered].each do |span|
      assert span.ended
      assert_operator span.end_ns, :>=, span.start_ns
      assert_nil span.parent, "a background span has no parent"
      assert_equal "redis", span.attributes["db.system"]
      assert_equal @env["SERVICE_ACCOUNT"], span.attributes["gcp.service_account"]
    end
    assert_match(/GCP IAM token request failed/, failed.error)
    tracer.spans.each do |span|
      texts = [span.error, *span.attributes.to_a.flatten, *(span.end_attributes || {}).to_a.flatten].compact
      texts.each { |t| refute_includes t, @env["CREDENTIALS_B64"] }
    end
  end
end
