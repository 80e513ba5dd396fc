# frozen_string_literal: true

require_relative "support"
require "logger"
require "socket"
require "stringio"

class TestClient < Minitest::Test
  def setup
    @client = VKTest.client
  end

  def teardown
    @client&.close
  end

  def test_set_get_and_reply_types
    k = VKTest.key("types")
    assert_equal "OK", @client.call("SET", k, "v")
    value = @client.call("GET", k)
    assert_equal "v", value
    assert_equal Encoding::BINARY, value.encoding
    assert_equal 1, @client.call("DEL", k)
    assert_nil @client.call("GET", k)
    assert_equal 5, @client.call("INCRBY", VKTest.key("n"), 5)
    assert_equal "PONG", @client.call(:ping)
    list = VKTest.key("list")
    @client.call("RPUSH", list, "a", "b", 3)
    assert_equal %w[a b 3], @client.call("LRANGE", list, 0, -1)
    assert_equal [], @client.call("LRANGE", VKTest.key("none"), 0, -1)
    assert_in_delta 1.5, Float(@client.call("INCRBYFLOAT", VKTest.key("f"), 1.5)), 1e-9
  end

  def test_binary_safe_arguments_and_replies
    k = VKTest.key("bin")
    blob = (0..255).map(&:chr).join.b * 4
    @client.call("SET", k, blob)
    assert_equal blob, @client.call("GET", k)
    big = "x" * 100_000
    @client.call("SET", k, big)
    assert_equal big.size, @client.call("STRLEN", k)
  end

  def test_bad_arguments_raise_before_sending
    assert_raises(TypeError) { @client.call("SET", VKTest.key("t"), nil) }
    assert_raises(TypeError) { @client.call("SET", VKTest.key("t"), [1]) }
    assert_raises(ArgumentError) { @client.call }
    assert_equal "PONG", @client.call("PING")
  end

  def test_error_reply_raises_response_error
    err = assert_raises(VKClient::ResponseError) { @client.call("NOSUCHCOMMAND") }
    assert_match(/\AERR unknown command/, err.message)
    assert_equal 28, err.code
    assert_equal :server, err.code_name
    k = VKTest.key("wrongtype")
    @client.call("SET", k, "x")
    err = assert_raises(VKClient::ResponseError) { @client.call("LPUSH", k, "y") }
    assert_match(/\AWRONGTYPE/, err.message)
  end

  def test_pipelined
    k = VKTest.key("pipe")
    replies = @client.pipelined do |p|
      p.call("SET", k, 1)
      p.call("INCR", k)
      p.call("GET", k)
    end
    assert_equal ["OK", 2, "2"], replies
    assert_equal [], @client.pipelined { |_p| nil }
    replies = @client.pipelined(exception: false) do |p|
      p.call("SET", k, "x")
      p.call("INCR", k)
      p.call("GET", k)
    end
    assert_equal "OK", replies[0]
    assert_instance_of VKClient::ResponseError, replies[1]
    assert_equal "x", replies[2]
    err = assert_raises(VKClient::ResponseError) do
      @client.pipelined { |p| p.call("INCR", k); p.call("SET", k, "after") }
    end
    assert_match(/not an integer/, err.message)
    assert_equal "after", @client.call("GET", k), "commands after the error still ran"
    many = @client.pipelined { |p| 100.times { |i| p.call("SET", "#{k}:#{i}", i) } }
    assert_equal ["OK"] * 100, many
  end

  def test_resp3_maps_become_hashes
    if VKClient.resp3_supported?
      c = VKTest.client(options: { protocol: 3 })
      k = VKTest.key("hash")
      c.call("HSET", k, "a", 1)
      assert_equal({ "a" => "1" }, c.call("HGETALL", k))
      c.close
    else
      err = assert_raises(VKClient::InvalidConfigError) { VKTest.client(options: { protocol: 3 }) }
      assert_match(/hiredis/, err.message)
    end
  end

  def test_from_url_and_open
    c = VKClient::Client.from_url("redis://#{VKTest.addr}/2")
    k = VKTest.key("db")
    c.call("SET", k, "in db 2")
    assert_nil @client.call("GET", k), "db 0 does not see db 2"
    c.close
    result = VKClient::Client.open(standalone: VKTest.addr) do |opened|
      @opened = opened
      opened.call("PING")
    end
    assert_equal "PONG", result
    refute @opened.connected?
  end

  def test_status_close_and_reconnect_on_demand
    status = @client.status
    assert_instance_of VKClient::Status, status
    assert status.connected?
    assert_nil status.last_refresh_error
    assert_nil status.last_refresh_at
    refute status.refresh_loop_running?
    assert_equal "standalone", status.mode
    assert_equal VKTest.addr, status.master_address
    assert_equal 0, status.master_switches
    assert_equal [0, 0, 0], [status.slot_map_refreshes, status.moved_redirects, status.ask_redirects]
    assert_equal({}, status.nodes)
    assert status.frozen?
    assert @client.connected?
    @client.close
    refute @client.connected?
    refute @client.status.connected?
    @client.close # twice is harmless
    assert_equal "PONG", @client.call("PING"), "a closed client reconnects on demand"
    assert @client.connected?
    @client.connect
    assert @client.connected?
  end

  def test_options_are_applied
    c = VKTest.client(options: { db: 3, pool_size: 2, read_timeout: 0.5, dial_timeout: 1,
                                 max_retries: -1, min_retry_backoff: 0.01 })
    assert_equal 3, c.call("CLIENT", "INFO")[/db=(\d+)/, 1].to_i
    assert_match(/PoolSize:2/, c.inspect)
    assert_match(/ReadTimeout:500ms/, c.inspect)
    c.close
    assert_raises(ArgumentError) { VKTest.client(options: { nope: 1 }) }
    assert_raises(TypeError) { VKTest.client(options: { db: "1" }) }
    assert_raises(TypeError) { VKTest.client(options: { read_timeout: "1" }) }
  end

  def test_read_timeout_is_a_timeout_error
    c = VKTest.client(options: { read_timeout: 0.2, max_retries: -1 })
    # Writes wait out a 0.5 s pause of the server.
    assert_equal "OK", c.call("CLIENT", "PAUSE", "500", "WRITE")
    err = assert_raises(VKClient::TimeoutError) { c.call("SET", VKTest.key("paused"), "v") }
    assert_equal 18, err.code
    sleep 0.5 # the pause is over
    # A command that waits on the server has its own timeout instead.
    assert_nil c.call("BLPOP", VKTest.key("never"), "0.4")
    c.close
  end

  def test_connection_refused_is_a_connection_error
    port = TCPServer.open("127.0.0.1", 0) { |s| s.addr[1] }
    err = assert_raises(VKClient::ConnectionError) do
      VKClient::Client.new(standalone: "127.0.0.1:#{port}", options: { dial_timeout: 1 })
    end
    assert_equal 17, err.code
    refute_empty err.message
  end

  def test_acl_auth_and_redaction
    pass = VKTest.env("VK_TEST_ACL_PASS")
    c = VKClient::Client.new(standalone: VKTest.env("VK_TEST_ACL_ADDR"),
                             static_password: { username: VKTest.env("VK_TEST_ACL_USER"), password: pass })
    assert_equal VKTest.env("VK_TEST_ACL_USER"), c.call("ACL", "WHOAMI")
    [c.inspect, c.to_s, c.instance_variables.map { |v| c.instance_variable_get(v).inspect }.join].each do |text|
      refute_includes text, pass
    end
    assert_includes c.inspect, "Password:REDACTED"
    c.close
    err = assert_raises(VKClient::AuthenticationError) do
      VKClient::Client.new(standalone: VKTest.env("VK_TEST_ACL_ADDR"), static_password: { password: "wrong-#{pass}" })
    end
    refute_includes err.message, pass
  end

  def test_tls
    ca = VKTest.env("VK_TEST_CA_B64")
    c = VKClient::Client.new(standalone: VKTest.env("VK_TEST_TLS_ADDR"), tls: { ca_cert_base64: ca, min_version: :tls1_2 })
    assert_equal "PONG", c.call("PING")
    assert_includes c.inspect, "TLS:"
    c.close
    assert_raises(VKClient::TLSError) do
      VKClient::Client.new(standalone: VKTest.env("VK_TEST_TLS_ADDR"),
                           tls: { ca_cert_base64: VKTest.env("VK_TEST_OTHER_CA_B64") })
    end
    assert_raises(ArgumentError) { VKClient::Client.new(standalone: VKTest.addr, tls: { ca_cert_base64: ca, min_version: :ssl3 }) }
  end

  def test_logger_and_metrics
    rec = VKTest::Recorder.new
    c = VKTest.client(logger: rec.logger, metrics: rec.metrics_sink)
    assert_includes rec.messages, "connecting to Redis/Valkey"
    assert_includes rec.messages, "connected to Redis/Valkey in standalone mode"
    assert_includes rec.messages, "redis connection established without TLS; consider configuring TLS for production use"
    assert(rec.logs.all? { |entry| entry[3].is_a?(Thread) && entry[3].alive? || entry[3] == Thread.main })
    level, = rec.logs.find { |entry| entry[1].start_with?("redis connection established without TLS") }
    assert_equal :warn, level
    c.close
  end

  def test_standard_logger_is_accepted
    out = StringIO.new
    c = VKTest.client(logger: Logger.new(out))
    assert_match(/connected to Redis\/Valkey in standalone mode/, out.string)
    c.close
    assert_raises(TypeError) { VKTest.client(logger: Object.new) }
  end

  def test_a_raising_logger_does_not_break_the_client
    calls = 0
    noisy = lambda do |_level, _message, _fields|
      calls += 1
      raise "logger failure"
    end
    _out, err = capture_io do
      c = VKTest.client(logger: noisy)
      assert_equal "PONG", c.call("PING")
      c.close
    end
    assert_operator calls, :>, 0
    assert_match(/logger failure/, err)
  end

  def test_reconnect_metrics_on_failure
    rec = VKTest::Recorder.new
    port = TCPServer.open("127.0.0.1", 0) { |s| s.addr[1] }
    assert_raises(VKClient::ConnectionError) do
      VKClient::Client.new(standalone: "127.0.0.1:#{port}", metrics: rec.metrics_sink, logger: rec.logger)
    end
    names = rec.metrics.map(&:first)
    assert_includes names, "redis_connection_failures_total"
    failure = rec.metrics.find { |m| m[0] == "redis_connection_failures_total" }
    assert_equal :counter, failure[1]
    assert_equal({ "operation" => "connect" }, failure[3])
  end

  def test_package_logger
    rec = VKTest::Recorder.new
    VKClient.package_logger = rec.logger
    assert_equal rec.logger.class, VKClient.package_logger.class
    unopened = VKClient::Client.allocate
    err = assert_raises(VKClient::NilClientError) { unopened.call("PING") }
    assert_equal "redis client is nil", err.message
    refute_empty rec.logs, "misuse is reported to the package logger"
    VKClient.package_logger = nil
    count = rec.logs.size
    assert_raises(VKClient::NilClientError) { unopened.call("PING") }
    assert_equal count, rec.logs.size
  end

  def test_version
    assert_equal "1.1.0", VKClient::VERSION
    assert_match(/\A\d+\.\d+/, VKClient.hiredis_version)
  end
end
