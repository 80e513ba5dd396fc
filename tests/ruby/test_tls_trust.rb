# frozen_string_literal: true

require "pathname"
require_relative "support"

# TLS trust from a CA file and from the system store (made to hold the
# harness CA through SSL_CERT_FILE, which OpenSSL reads when a client is
# created).
class TestTLSTrust < Minitest::Test
  UNTRUSTED = "certificate verify failed: self-signed certificate in certificate chain"

  def setup
    @saved = ENV.to_h.slice("SSL_CERT_FILE", "SSL_CERT_DIR")
    ENV.delete("SSL_CERT_FILE")
    ENV.delete("SSL_CERT_DIR")
  end

  def teardown
    ENV.delete("SSL_CERT_FILE")
    ENV.delete("SSL_CERT_DIR")
    ENV.update(@saved)
  end

  def tls_addr
    VKTest.env("VK_TEST_TLS_ADDR")
  end

  def ca_file
    VKTest.env("VK_TEST_CA_FILE")
  end

  def test_ca_file
    [ca_file, Pathname.new(ca_file)].each do |file|
      c = VKClient::Client.new(standalone: tls_addr, tls: { ca_file: file })
      assert_equal "PONG", c.call("PING")
      assert_includes c.inspect, "CAFile:#{ca_file}"
      c.close
    end
    err = assert_raises(VKClient::InvalidConfigError) do
      VKClient::Client.new(standalone: tls_addr, tls: { ca_file: "/nonexistent/ca.pem" })
    end
    assert_equal 'invalid redis config: TLS CA file "/nonexistent/ca.pem" cannot be read: ' \
                 "No such file or directory", err.message
    assert_raises(TypeError) { VKClient::Client.new(standalone: tls_addr, tls: { ca_file: 42 }) }
  end

  def test_use_system_ca
    err = assert_raises(VKClient::TLSError) do
      VKClient::Client.new(standalone: tls_addr, tls: { use_system_ca: true })
    end
    assert err.message.end_with?(UNTRUSTED), err.message
    ENV["SSL_CERT_FILE"] = ca_file
    c = VKClient::Client.new(standalone: tls_addr, tls: { use_system_ca: true })
    assert_equal "PONG", c.call("PING")
    assert_includes c.inspect, "SystemCA:true"
    c.close
  end

  def test_url_without_ca_uses_system_store
    url = "rediss://#{tls_addr}"
    assert_raises(VKClient::TLSError) { VKClient::Client.from_url(url) }
    ENV["SSL_CERT_FILE"] = ca_file
    c = VKClient::Client.from_url(url)
    assert_equal "PONG", c.call("PING")
    c.close
    # A CA given with the URL replaces the system store.
    assert_raises(VKClient::TLSError) do
      VKClient::Client.from_url(url, tls: { ca_cert_base64: VKTest.env("VK_TEST_OTHER_CA_B64") })
    end
    err = assert_raises(VKClient::InvalidConfigError) do
      VKClient::Client.from_url(url, tls: { use_system_ca: false })
    end
    assert_equal "invalid redis config: TLS CA cert is required when TLS is configured", err.message
  end
end
