"""GCP IAM auth from Python, against a TLS server whose passwords are the
tokens issued by the harness's stand-in for Google's endpoints
(tests/harness/fake_google.py): the JWT signature and claims are checked,
tokens are installed in the server's ACL and removed when they expire."""

import datetime
import os
import secrets
import threading
import time

import pytest

import fake_google
import vkclient

from conftest import Env, plain_config


@pytest.fixture
def iam(harness, tmp_path, monkeypatch):
    # Credentials come from the config unless a test says otherwise: nothing
    # in this process's environment may stand in for them.
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.delenv("GCE_METADATA_HOST", raising=False)
    # Servers started here use this process's test CA (the harness runner's
    # VK_TEST_CA_B64 belongs to its own servers).
    ca = harness.default_ca()
    server = harness.Server(Env.server, tls=True, requirepass="initial-" + secrets.token_hex(8),
                            ca=ca).start()
    google = fake_google.FakeGoogle(str(tmp_path), redis=server).start()
    yield server, google, ca["ca_b64"]
    google.stop()
    server.stop()


FAKE_KEY = object()  # iam_config's default: the fake's own key, as base64


def iam_config(iam, credentials=FAKE_KEY, **kwargs):
    """A config for the iam fixture's server; credentials: base64 of a key
    JSON, or None to take them from the environment."""
    server, google, ca_b64 = iam
    if credentials is FAKE_KEY:
        credentials = google.credentials_b64()
    return plain_config(server.address, tls=vkclient.TLS(ca_b64),
                        gcp_iam=vkclient.GCPIAM(
                            credentials_base64=credentials,
                            service_account=fake_google.SERVICE_ACCOUNT,
                            iam_endpoint=google.url, **kwargs))


def issued(google):
    return [r for r in google.requests("iam") if r["status"] == 200]


def wait_for(condition, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in %.0f s" % timeout
        time.sleep(0.05)


def test_connects_with_an_iam_token(iam):
    server, google, _ = iam
    before = datetime.datetime.now(datetime.timezone.utc)
    with vkclient.Client(iam_config(iam, token_lifetime=600.0, refresh_every=300.0)) as c:
        assert c.set("vkpy:iam", "ok") is True
        assert c.execute("ACL", "WHOAMI") == b"default"
        status = c.status()
        assert status.connected is True
        assert status.refresh_loop_running is True
        assert status.last_refresh_error is None
        assert before - datetime.timedelta(seconds=1) <= status.last_refresh_at
        assert status.last_refresh_at <= datetime.datetime.now(datetime.timezone.utc)
        assert c.last_refresh_error() is None
    assert c.status().refresh_loop_running is False
    assert len(issued(google)) == 1
    assert [r["status"] for r in google.requests("token")] == [200]


def test_tokens_are_refreshed_and_rotated(iam):
    server, google, _ = iam
    log_threads, messages = set(), []

    def logger(level, message, fields):
        log_threads.add(threading.get_ident())
        messages.append((message, dict(fields)))

    # Tokens live 3 s and are removed from the server's ACL when they
    # expire; one is fetched every second.
    cfg = iam_config(iam, token_lifetime=3.0, refresh_every=1.0, refresh_check_interval=0.2)
    cfg.logger = logger
    with vkclient.Client(cfg) as c:
        first = c.status().last_refresh_at
        wait_for(lambda: len(issued(google)) >= 5)
        assert c.status().last_refresh_at > first
        for i in range(20):
            assert c.set("vkpy:iam:%d" % i, i) is True
        # The first token has expired and is gone: fresh connections only
        # work with the current one.
        c.close()
        assert c.ping() is True
        assert c.status().last_refresh_error is None
    # Log lines came from the refresh thread too, with the GIL taken safely.
    assert threading.get_ident() in log_threads and len(log_threads) >= 2
    assert "GCP IAM token refreshed" in [m for m, _ in messages]


def test_refresh_failure_keeps_the_old_token(iam):
    server, google, _ = iam
    cfg = iam_config(iam, token_lifetime=60.0, refresh_every=0.5, refresh_check_interval=0.1)
    with vkclient.Client(cfg) as c:
        google.control(status=503, message="unavailable")
        wait_for(lambda: c.last_refresh_error() is not None)
        error = c.status().last_refresh_error
        assert isinstance(error, str) and error
        assert google.key["private_pem"].splitlines()[1] not in error
        assert c.ping() is True  # still in service with the old token
        google.control()
        wait_for(lambda: c.last_refresh_error() is None)
        assert c.status().last_refresh_error is None


def test_no_token_no_client(iam):
    server, google, _ = iam
    google.control(status=503, message="unavailable")
    with pytest.raises(vkclient.IAMError) as info:
        vkclient.Client(iam_config(iam, refresh_operation_timeout=2.0))
    assert str(info.value).startswith("GCP IAM token request failed")


def test_credentials_never_printed(iam):
    server, google, _ = iam
    cfg = iam_config(iam)
    credentials = google.credentials_b64()
    text = repr(cfg) + str(cfg.gcp_iam) + repr(cfg.gcp_iam) + f"{cfg}"
    assert credentials not in text
    assert "CredentialsBase64:REDACTED" in text
    broken = iam_config(iam, credentials="bm90IGpzb24=")  # base64 of "not json"
    with pytest.raises(vkclient.IAMError) as info:
        vkclient.Client(broken)
    assert "not json" not in str(info.value)
    assert "content redacted" in str(info.value)


def test_credentials_from_the_environment(iam, tmp_path, monkeypatch):
    # No credentials in the config: the core reads GOOGLE_APPLICATION_CREDENTIALS
    # (a key file) when the client is created, as Google's libraries do.
    server, google, _ = iam
    key_file = tmp_path / "service-account.json"
    key_file.write_text(fake_google.key_json(google.key, google.url + "/token"))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:1")  # must not be asked
    cfg = iam_config(iam, credentials=None, token_lifetime=600.0, refresh_every=300.0)
    assert cfg.gcp_iam.credentials_base64 is None
    tokens_before, iam_before = len(google.requests("token")), len(issued(google))
    with vkclient.Client(cfg) as c:
        assert c.execute("ACL", "WHOAMI") == b"default"
        assert c.set("vkpy:iam:env", "from the key file") is True
        assert c.get("vkpy:iam:env") == b"from the key file"
        assert c.status().last_refresh_error is None
    # The key file's JWT was exchanged at the fake's token endpoint.
    assert [r["status"] for r in google.requests("token")[tokens_before:]] == [200]
    assert len(issued(google)) == iam_before + 1
    assert google.requests("metadata") == []
    # Without the file the client cannot be created, and says why.
    os.unlink(key_file)
    with pytest.raises(vkclient.IAMError) as info:
        vkclient.Client(cfg)
    assert str(info.value) == ("GCP IAM token request failed: reading credentials failed: "
                               "cannot open the file named by GOOGLE_APPLICATION_CREDENTIALS")


def test_no_secret_in_any_log_or_error(iam, capfd):
    """Everything an IAM session writes (log lines with their fields, metrics,
    spans with their attributes and errors, error texts, reprs, the
    process's stdout and stderr) over a connect,
    refreshes, failing refreshes and failing connects holds none of the key,
    the credentials, the issued tokens or the passwords."""
    server, google, ca_b64 = iam
    captured, messages = [], []

    def logger(level, message, fields):
        messages.append(message)
        captured.append("%s %s" % (level, message))
        captured.extend("%s=%s" % (k, v) for k, v in fields.items())

    def metrics(name, kind, value, labels):
        captured.append("%s %s %r" % (name, kind, value))
        captured.extend("%s=%s" % (k, v) for k, v in labels.items())

    class Tracer:
        spans = []

        def start_span(self, name, parent, attributes, start_ns):
            self.spans.append(name)
            captured.append(name)
            captured.extend("%s=%s" % (k, v) for k, v in attributes.items())
            return name

        def end_span(self, span, error, attributes, end_ns):
            captured.append("%s ended: %s" % (span, error))
            captured.extend("%s=%s" % (k, v) for k, v in attributes.items())

    tracer = Tracer()

    def errors(exc_info):
        captured.extend([str(exc_info.value), repr(exc_info.value)])
        captured.extend(str(a) for a in exc_info.value.args)

    wrong_password = "wrong-" + secrets.token_hex(16)
    vkclient.set_package_logger(logger)
    try:
        cfg = iam_config(iam, token_lifetime=60.0, refresh_every=0.5,
                         refresh_check_interval=0.1, refresh_operation_timeout=2.0)
        cfg.logger, cfg.metrics = logger, metrics
        cfg.tracer, cfg.trace_commands = tracer, True
        captured.extend([repr(cfg), str(cfg.gcp_iam)])
        with vkclient.Client(cfg) as c:
            # Connect and refresh.
            assert c.ping() is True
            wait_for(lambda: len(issued(google)) >= 3)
            captured.extend([repr(c), repr(c.status())])
            # A refresh that Google refuses...
            google.control(status=500, message="backend down for maintenance")
            wait_for(lambda: c.last_refresh_error() is not None)
            refused = c.last_refresh_error()
            captured.extend([refused, repr(c.status())])
            # ...and one whose connection is dropped.
            google.control(drop=True)
            wait_for(lambda: c.last_refresh_error() not in (None, refused))
            captured.extend([c.last_refresh_error(), repr(c.status())])
            # Recovery; the client served all along.
            google.control()
            wait_for(lambda: c.last_refresh_error() is None)
            assert c.ping() is True
        # A first connect whose token request fails.
        google.control(status=503, message="unavailable")
        with pytest.raises(vkclient.IAMError) as info:
            vkclient.Client(cfg)
        errors(info)
        google.control()
        # A wrong password on the same server.
        bad = plain_config(server.address, tls=vkclient.TLS(ca_b64),
                           static_password=vkclient.StaticPassword(wrong_password),
                           logger=logger, metrics=metrics, tracer=tracer)
        captured.append(repr(bad))
        with pytest.raises(vkclient.AuthenticationError) as info:
            vkclient.Client(bad)
        errors(info)
    finally:
        vkclient.set_package_logger(None)
    out, err = capfd.readouterr()
    captured.extend([out, err])
    text = "\n".join(captured)

    # The capture holds what the session went through.
    assert "GCP IAM token refreshed" in messages
    assert "GCP IAM token refresh failed; keeping the current token" in messages
    assert "backend down for maintenance" in refused
    assert "GCP IAM token request failed" in text
    assert {"redis.connect", "redis.iam_refresh", "redis.command",
            "redis.close"} <= set(tracer.spans)

    key_lines = [line for line in google.key["private_pem"].splitlines()
                 if line and not line.startswith("-----")]
    credentials = google.credentials_b64()
    access, oauth = google.issued_tokens("access"), google.issued_tokens("oauth")
    assert len(access) >= 3 and len(oauth) >= 1
    assert len(key_lines) > 10 and server.requirepass
    secrets_by_kind = {
        "a line of the private key": key_lines,
        "part of the credentials base64": [credentials[i:i + 32]
                                           for i in range(0, len(credentials) - 32, 16)],
        "an issued access token": access,
        "an issued OAuth token": oauth,
        "a password": [server.requirepass, wrong_password],
        # Any token or JWT/JSON in base64, not only the ones seen above.
        "a token prefix": ["vkiam-", "ya29."],
        "base64 of JSON (a JWT or the credentials)": ["eyJ"],
    }
    for kind, values in secrets_by_kind.items():
        for value in values:
            assert value not in text, "%s appears in a log line or error" % kind
