# frozen_string_literal: true

require_relative "support"
require "pp"
require "stringio"
require "yaml"

# Arguments of the wrong type are Ruby's ArgumentError/TypeError naming the
# field, never an error from deeper down (NoMethodError, SWIG's TypeError,
# FloatDomainError); auth values never print their secrets.
class TestArguments < Minitest::Test
  def type_error(pattern, &block)
    err = assert_raises(TypeError, &block)
    assert_match pattern, err.message
    err
  end

  def test_topology_types
    type_error(/\Astandalone must be a String, not Integer\z/) { VKClient::Client.new(standalone: 6379) }
    type_error(/\Astandalone must be a String, not Hash\z/) { VKClient::Client.new(standalone: { address: "x" }) }
    type_error(/\Aurl must be a String, not Symbol\z/) { VKClient::Client.from_url(:redis) }
    type_error(/\Asentinel must be a Hash\z/) { VKClient::Client.new(sentinel: ["127.0.0.1:1"]) }
    type_error(/\Asentinel master_name must be a String or nil, not Symbol\z/) do
      VKClient::Client.new(sentinel: { addresses: ["127.0.0.1:1"], master_name: :m })
    end
    type_error(/\Asentinel addresses\[1\] must be a String, not NilClass\z/) do
      VKClient::Client.new(sentinel: { addresses: ["127.0.0.1:1", nil], master_name: "m" })
    end
    type_error(/\Asentinel password must be a String or nil, not Integer\z/) do
      VKClient::Client.new(sentinel: { addresses: ["127.0.0.1:1"], master_name: "m", password: 1 })
    end
    type_error(/\Acluster must be a String or an Array of Strings, not Integer\z/) { VKClient::Client.new(cluster: 7000) }
    type_error(/\Acluster addresses\[0\] must be a String, not Integer\z/) do
      VKClient::Client.new(cluster: { addresses: [7000] })
    end
  end

  def test_cluster_takes_the_addresses_alone
    # The same validation as the Hash form: the addresses were applied.
    err = assert_raises(VKClient::InvalidConfigError) { VKClient::Client.new(cluster: ["127.0.0.1:7000", " "]) }
    assert_equal "invalid redis config: cluster addresses cannot be empty", err.message
    err = assert_raises(VKClient::InvalidConfigError) { VKClient::Client.new(cluster: []) }
    assert_equal "invalid redis config: cluster addresses are required", err.message
    # One String is a list of one: nothing listens there.
    assert_raises(VKClient::ConnectionError) { VKClient::Client.new(cluster: "127.0.0.1:1") }
    assert_raises(VKClient::ConnectionError) { VKClient::Client.new(sentinel: { addresses: "127.0.0.1:1", master_name: "m" }) }
  end

  def test_auth_and_option_types
    type_error(/\Astatic_password must be a VKClient::StaticPasswordAuth or a Hash, not String\z/) do
      VKTest.client(static_password: "pw")
    end
    type_error(/\Astatic_password password must be a String or nil, not Integer\z/) do
      VKTest.client(static_password: { password: 1234 })
    end
    type_error(/\Agcp_iam must be a VKClient::GCPIAMAuth or a Hash, not VKClient::StaticPasswordAuth\z/) do
      VKTest.client(gcp_iam: VKClient::StaticPasswordAuth.new(password: "pw"))
    end
    type_error(/\Atoken_lifetime must be a number of seconds, not String\z/) do
      VKTest.client(gcp_iam: { service_account: "sa", token_lifetime: "3600" })
    end
    type_error(/\Aoptions must be a Hash\z/) { VKTest.client(options: [1]) }
    type_error(/\Aread_timeout must be a number of seconds, not String\z/) { VKTest.client(options: { read_timeout: "3" }) }
    type_error(/\Apool_size must be an Integer, not Float\z/) { VKTest.client(options: { pool_size: 1.5 }) }
    err = assert_raises(ArgumentError) { VKTest.client(options: { dial_timeout: Float::NAN }) }
    assert_equal "dial_timeout must be a finite number of seconds", err.message
    assert_raises(ArgumentError) { VKTest.client(options: { dial_timeout: Float::INFINITY }) }
    type_error(/\Apassword must be a String, not NilClass\z/) { VKClient::StaticPasswordAuth.new(password: nil) }
    type_error(/\Aservice_account must be a String, not Integer\z/) { VKClient::GCPIAMAuth.new(service_account: 1) }
  end

  def test_lock_argument_types
    client = VKTest.client
    locks = VKClient::LockManager.new(client)
    type_error(/\Alock key must be a String, not Integer\z/) { locks.try_lock(42) }
    type_error(/\Alock key must be a String, not NilClass\z/) { locks.with_lock(nil) { flunk "must not run" } }
    type_error(/\Alock options must be a VKClient::LockOptions \(or keywords\), not Hash\z/) do
      locks.with_lock(VKTest.key("opts"), { expiry: 1 }) { flunk "must not run" }
    end
    type_error(/\Alock options must be a VKClient::LockOptions \(or keywords\), not Integer\z/) do
      locks.lock(VKTest.key("opts"), 5)
    end
    type_error(/\Aexpiry must be a number of seconds, not String\z/) { VKClient::LockOptions.new(expiry: "10") }
    type_error(/\Adrift_factor must be a Numeric, not String\z/) { VKClient::LockOptions.new(drift_factor: "0.1") }
    type_error(/\Adrift_factor must be a Numeric, not NilClass\z/) { VKClient::LockOptions.new(drift_factor: nil) }
    type_error(/\Atries must be an Integer, not String\z/) { locks.lock(VKTest.key("opts"), tries: "3") }
    type_error(/\Aa LockManager takes a VKClient::Client or an Array of them, not String\z/) do
      VKClient::LockManager.new("127.0.0.1:6379")
    end
    type_error(/\Aa LockManager takes a VKClient::Client or an Array of them, not Hash\z/) do
      VKClient::LockManager.new([client, {}])
    end
    handle = locks.try_lock(VKTest.key("extend"))
    type_error(/\Aexpiry must be a number of seconds, not String\z/) { handle.extend("5") }
    handle.unlock
    type_error(/\Acommand arguments must be String, Symbol, Integer or Float, not Hash\z/) { client.call("GET", {}) }
    type_error(/\Acommand arguments must be String, Symbol, Integer or Float, not NilClass\z/) { client.call("GET", nil) }
  ensure
    client&.close
  end

  SECRET = "hunter2-not-to-be-seen"
  CREDENTIALS = "eyJwcml2YXRlX2tleSI6ICJzZWNyZXQifQ=="

  # Every way Ruby prints a value.
  def printed(value)
    out = StringIO.new
    PP.pp(value, out)
    [value.inspect, value.to_s, "#{value}", out.string, [value].inspect, { auth: value }.inspect,
     { auth: value }.to_s, value.to_yaml, format("%s %p", value, value)]
  end

  def test_auth_objects_print_redacted
    auth = VKClient::StaticPasswordAuth.new(password: SECRET, username: "app")
    printed(auth).each do |text|
      refute_includes text, SECRET
      assert_includes text, "StaticPasswordAuth{Password:REDACTED}"
    end
    assert_equal "StaticPasswordAuth{Password:REDACTED}", auth.inspect
    assert_equal "app", auth.username
    assert auth.frozen?

    iam = VKClient::GCPIAMAuth.new(credentials_base64: CREDENTIALS, service_account: "sa@p.iam.gserviceaccount.com",
                                   token_lifetime: 600, refresh_every: 300)
    printed(iam).each do |text|
      refute_includes text, CREDENTIALS
      assert_includes text, "CredentialsBase64:REDACTED"
    end
    assert_equal "GCPIAMAuth{ServiceAccount:sa@p.iam.gserviceaccount.com, CredentialsBase64:REDACTED}", iam.to_s
    # A config made of them prints without the secrets too.
    config = { standalone: VKTest.addr, static_password: auth, gcp_iam: iam }
    printed(config).each do |text|
      refute_includes text, SECRET
      refute_includes text, CREDENTIALS
    end
  end

  def test_auth_objects_are_taken_where_the_hash_form_is
    pass = VKTest.env("VK_TEST_ACL_PASS")
    auth = VKClient::StaticPasswordAuth.new(username: VKTest.env("VK_TEST_ACL_USER"), password: pass)
    c = VKClient::Client.new(standalone: VKTest.env("VK_TEST_ACL_ADDR"), static_password: auth)
    assert_equal VKTest.env("VK_TEST_ACL_USER"), c.call("ACL", "WHOAMI")
    refute_includes c.inspect, pass
    c.close
    # The IAM object is applied: validation asks for the TLS it needs.
    iam = VKClient::GCPIAMAuth.new(credentials_base64: CREDENTIALS, service_account: "sa@p.iam.gserviceaccount.com")
    err = assert_raises(VKClient::InvalidConfigError) { VKClient::Client.new(standalone: VKTest.addr, gcp_iam: iam) }
    assert_equal "invalid redis config: TLS must be configured when GCP IAM auth is enabled", err.message
    err = assert_raises(VKClient::InvalidConfigError) do
      VKClient::Client.new(standalone: VKTest.addr, static_password: auth, gcp_iam: iam)
    end
    assert_equal "invalid redis config: only one auth strategy can be configured", err.message
    refute_includes err.message, CREDENTIALS
  end
end
