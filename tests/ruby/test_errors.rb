# frozen_string_literal: true

require_relative "support"
require "socket"

# Every error class and its exact SEMANTICS text.
class TestErrors < Minitest::Test
  def config_error(reason, **kwargs)
    err = assert_raises(VKClient::InvalidConfigError) { VKClient::Client.new(**kwargs) }
    assert_equal "invalid redis config: #{reason}", err.message
    assert_equal 2, err.code
    assert_kind_of VKClient::Error, err
    assert_kind_of StandardError, err
  end

  def test_config_validation_texts
    config_error("exactly one topology must be configured")
    config_error("exactly one topology must be configured", standalone: VKTest.addr, cluster: { addresses: [VKTest.addr] })
    config_error("standalone address is required", standalone: "  ")
    config_error("sentinel addresses are required", sentinel: { addresses: [], master_name: "m" })
    config_error("sentinel master name is required", sentinel: { addresses: ["127.0.0.1:1"], master_name: "" })
    config_error("sentinel addresses cannot be empty", sentinel: { addresses: [""], master_name: "m" })
    config_error("cluster addresses are required", cluster: { addresses: [] })
    config_error("cluster addresses cannot be empty", cluster: { addresses: [" "] })
    config_error("TLS CA cert is required when TLS is configured", standalone: VKTest.addr, tls: { ca_cert_base64: " " })
  end

  def test_auth_and_iam_validation_texts
    ca = VKTest.env("VK_TEST_CA_B64")
    iam = { credentials_base64: "e30=", service_account: "sa@p.iam.gserviceaccount.com" }
    config_error("only one auth strategy can be configured",
                 standalone: VKTest.addr, tls: { ca_cert_base64: ca },
                 static_password: { password: "pw" }, gcp_iam: iam)
    config_error("TLS must be configured when GCP IAM auth is enabled", standalone: VKTest.addr, gcp_iam: iam)
    config_error("service account is required for GCP IAM auth",
                 standalone: VKTest.addr, tls: { ca_cert_base64: ca }, gcp_iam: iam.merge(service_account: ""))
    config_error("service account cannot contain '/' characters",
                 standalone: VKTest.addr, tls: { ca_cert_base64: ca }, gcp_iam: iam.merge(service_account: "a/b"))
    config_error("credentials are required for GCP IAM auth",
                 standalone: VKTest.addr, tls: { ca_cert_base64: ca }, gcp_iam: iam.merge(credentials_base64: ""))
    config_error("RefreshEvery must be less than TokenLifetime to prevent token expiry before refresh",
                 standalone: VKTest.addr, tls: { ca_cert_base64: ca },
                 gcp_iam: iam.merge(token_lifetime: 600, refresh_every: 600))
  end

  def test_secrets_never_in_messages
    ca = VKTest.env("VK_TEST_CA_B64")
    secret = "c2VjcmV0LWNyZWRlbnRpYWxz"
    err = assert_raises(VKClient::InvalidConfigError) do
      VKClient::Client.new(standalone: VKTest.addr, static_password: { password: "hunter2-secret" },
                           gcp_iam: { credentials_base64: secret, service_account: "sa" }, tls: { ca_cert_base64: ca })
    end
    refute_includes err.message, "hunter2-secret"
    refute_includes err.message, secret
    refute_includes err.inspect, secret
  end

  def test_bad_url_is_an_invalid_config_error
    assert_raises(VKClient::InvalidConfigError) { VKClient::Client.from_url("http://nope") }
  end

  def lock_option_error(klass, code, text, **fields)
    err = assert_raises(klass) { VKClient::LockOptions.new(**fields) }
    assert_equal text, err.message
    assert_equal code, err.code
  end

  def test_lock_option_texts
    lock_option_error(VKClient::LockExpiryInvalidError, 9, "lock expiry must be greater than 0", expiry: 0)
    lock_option_error(VKClient::LockTriesInvalidError, 10, "lock tries must be at least 1", tries: 0)
    lock_option_error(VKClient::LockTriesExceededError, 11, "lock tries exceeds maximum", tries: 1001)
    lock_option_error(VKClient::LockRetryDelayNegativeError, 12, "lock retry delay cannot be negative", retry_delay: -0.1)
    lock_option_error(VKClient::LockDriftFactorInvalidError, 13,
                      "lock drift factor must be between 0 (inclusive) and 1 (exclusive)", drift_factor: 1.0)
    lock_option_error(VKClient::LockDriftFactorInvalidError, 13,
                      "lock drift factor must be between 0 (inclusive) and 1 (exclusive)", drift_factor: -0.01)
  end

  def test_lock_errors
    client = VKTest.client
    locks = VKClient::LockManager.new(client)
    err = assert_raises(VKClient::EmptyLockKeyError) { locks.try_lock(" \t") }
    assert_equal "lock key cannot be empty", err.message
    assert_equal 8, err.code
    err = assert_raises(VKClient::EmptyLockKeyError) { locks.with_lock("") { flunk "must not run" } }
    assert_equal "lock key cannot be empty", err.message
    err = assert_raises(VKClient::NilLockFunctionError) { locks.with_lock(VKTest.key("nofn")) }
    assert_equal "lock function is nil", err.message
    assert_equal 7, err.code

    key = VKTest.key("busy")
    held = locks.try_lock(key)
    err = assert_raises(VKClient::LockAcquireError) do
      locks.with_lock(key, tries: 2, retry_delay: 0.01) { flunk "must not run" }
    end
    assert_equal "failed to acquire lock \"#{key}\": lock already taken", err.message
    assert_equal 15, err.code
    err = assert_raises(VKClient::LockAcquireError) { locks.lock("a\tb", VKClient::LockOptions.new(tries: 1)) if locks.try_lock("a\tb") }
    assert_equal "failed to acquire lock \"a\\tb\": lock already taken", err.message
    held.unlock
    err = assert_raises(VKClient::LockNotHeldError) { held.unlock }
    assert_equal "lock was not held or already expired", err.message
    assert_equal 4, err.code

    err = assert_raises(VKClient::NilLockHandleOnUnlockError) { locks.unlock(nil) }
    assert_equal "lock handle is nil", err.message
    assert_equal 14, err.code
    handle = locks.try_lock(VKTest.key("deprecated"))
    locks.unlock(handle)
    assert_raises(VKClient::LockNotHeldError) { handle.unlock }

    borrowed = locks.with_lock(VKTest.key("borrowed")) { |h| h }
    err = assert_raises(VKClient::NilLockHandleError) { borrowed.unlock }
    assert_equal "lock handle is nil or not initialized", err.message
    assert_equal 3, err.code
    client.close
  end

  def test_long_keys_are_cut_in_messages
    client = VKTest.client
    locks = VKClient::LockManager.new(client)
    key = "k" * 300
    held = locks.try_lock(key)
    err = assert_raises(VKClient::LockAcquireError) { locks.lock(key, tries: 1) }
    quoted = "\"#{'k' * 127}...(truncated)"
    assert_equal "failed to acquire lock #{quoted}: lock already taken", err.message
    held.unlock
    client.close
  end

  def test_nil_client_and_manager
    unopened = VKClient::Client.allocate
    err = assert_raises(VKClient::NilClientError) { unopened.call("PING") }
    assert_equal "redis client is nil", err.message
    assert_equal 1, err.code
    err = assert_raises(VKClient::NilClientError) { unopened.status }
    assert_equal "redis client is nil", err.message
    err = assert_raises(VKClient::Error) { VKClient::LockManager.new([]) }
    assert_includes ["redis client is nil", "lock manager is nil"], err.message
    unused = VKClient::LockManager.allocate
    err = assert_raises(VKClient::NilLockManagerError) { unused.try_lock("k") }
    assert_equal "lock manager is nil", err.message
    assert_equal 5, err.code
  end

  def test_every_code_has_a_class
    (1..31).each do |code|
      klass = VKClient.error_class_for(code)
      assert_operator klass, :<, VKClient::Error
      assert_equal code, klass::CODE
    end
    assert_equal VKClient::ConnectionError, VKClient.error_class_for(17)
    assert_equal VKClient::TimeoutError, VKClient.error_class_for(18)
    assert_equal VKClient::ResponseError, VKClient.error_class_for(28)
    assert_equal VKClient::CancelledError, VKClient.error_class_for(27)
    assert_equal VKClient::ReconnectRateLimitedError, VKClient.error_class_for(20)
    assert_equal VKClient::CommandNotAllowedError, VKClient.error_class_for(30)
    assert_equal VKClient::WatchError, VKClient.error_class_for(31)
  end

  def test_reconnect_rate_limit_text
    port = TCPServer.open("127.0.0.1", 0) { |s| s.addr[1] }
    server = TCPServer.new("127.0.0.1", port)
    client = nil
    accepter = Thread.new do
      s = server.accept
      # Answer the PING like a server would.
      s.readpartial(1024)
      s.write("+PONG\r\n")
      sleep 0.2
      s.close
    end
    client = VKClient::Client.new(standalone: "127.0.0.1:#{port}", options: { max_retries: -1, pool_size: 1 })
    accepter.join
    server.close
    errors = 5.times.map do
      client.call("PING")
    rescue VKClient::Error => e
      e
    end
    limited = errors.grep(VKClient::ReconnectRateLimitedError)
    refute_empty limited, errors.map(&:message).inspect
    assert_match(/\Aredis reconnect: rate-limited \(next attempt in .+\)\z/, limited.first.message)
    assert_equal 20, limited.first.code
  ensure
    client&.close
  end
end
