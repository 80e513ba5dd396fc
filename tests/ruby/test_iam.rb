# frozen_string_literal: true

require_relative "support"
require "tmpdir"
require "json"
require "fileutils"

# GCP IAM auth against a TLS server whose passwords are the tokens minted by
# the harness's stand-in for Google (tests/harness/fake_google.py, started
# by tests/harness/iam_env.py). The refresh loop runs on a core thread:
# its events must reach Ruby on the client's Ruby event thread.
class TestIAM < Minitest::Test
  def setup
    @dir = Dir.mktmpdir("vkrb-iam")
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

  def tokens_minted
    File.readlines(@env["REQUEST_LOG"]).count { |line| (e = JSON.parse(line))["endpoint"] == "iam" && e["status"] == 200 }
  rescue Errno::ENOENT
    0
  end

  def iam_client(**extra)
    VKClient::Client.new(
      standalone: @env["ADDR"], tls: { ca_cert_base64: @env["CA_B64"] },
      gcp_iam: { credentials_base64: @env["CREDENTIALS_B64"], service_account: @env["SERVICE_ACCOUNT"],
                 endpoint: @env["ENDPOINT"], token_lifetime: 3, refresh_every: 1, refresh_check_interval: 0.2 },
      **extra
    )
  end

  def wait_for(seconds)
    deadline = Time.now + seconds
    until yield
      return false if Time.now > deadline

      sleep 0.05
    end
    true
  end

  def test_connects_refreshes_and_logs_on_a_ruby_thread
    rec = VKTest::Recorder.new
    started = Time.now
    client = iam_client(logger: rec.logger, metrics: rec.metrics_sink)
    assert_equal "default", client.call("ACL", "WHOAMI")
    status = client.status
    assert status.refresh_loop_running?
    assert_nil status.last_refresh_error
    assert_instance_of Time, status.last_refresh_at
    assert_operator status.last_refresh_at, :>=, started - 1
    first_at = status.last_refresh_at
    count = rec.logs.size
    before = tokens_minted
    # The background loop refreshes (refresh_every 1 s); its log lines come
    # through the event thread without any call on this thread.
    assert wait_for(10) { tokens_minted > before && rec.logs.size > count }, rec.messages.inspect
    assert wait_for(5) { client.status.last_refresh_at > first_at }
    threads = rec.logs.map { |entry| entry[3] }
    assert(threads.all? { |t| t.is_a?(Thread) }, "every event arrived on a Ruby thread")
    assert(threads.any? { |t| t.name == "vkclient-events" }, "background events came on the event thread")
    # The first token expires (3 s); the client keeps working on new ones.
    sleep 3.2
    assert_equal "PONG", client.call("PING")
    text = [client.inspect, rec.logs.map { |e| [e[1], e[2]].inspect }.join].join
    refute_includes text, @env["CREDENTIALS_B64"]
    assert_includes client.inspect, "CredentialsBase64:REDACTED"
    client.close
    refute client.status.refresh_loop_running?
    refute client.connected?
  end

  def test_failed_refresh_keeps_the_old_token_and_is_reported
    client = iam_client
    File.write(@env["CONTROL_FILE"], '{"status": 500, "message": "backend down", "endpoints": ["iam"]}')
    assert wait_for(10) { client.status.last_refresh_error }
    error = client.last_refresh_error
    assert_match(/GCP IAM token request failed/, error)
    refute_includes error, @env["CREDENTIALS_B64"]
    assert_equal "PONG", client.call("PING"), "the old token stays in service"
    File.delete(@env["CONTROL_FILE"])
    assert wait_for(15) { client.status.last_refresh_error.nil? }, "the next good refresh clears the error"
    client.close
  end

  def test_bad_credentials_fail_without_leaking
    bogus = ["{\"not\": \"a key\"}"].pack("m0")
    err = assert_raises(VKClient::Error) do
      VKClient::Client.new(standalone: @env["ADDR"], tls: { ca_cert_base64: @env["CA_B64"] },
                           gcp_iam: { credentials_base64: bogus, service_account: @env["SERVICE_ACCOUNT"],
                                      endpoint: @env["ENDPOINT"] })
    end
    refute_includes err.message, bogus
    assert_kind_of VKClient::IAMError, err
  end
end
