"""GCP IAM auth from Python, against a TLS server whose passwords are the
tokens issued by the harness's stand-in for Google's endpoints
(tests/harness/fake_google.py): the JWT signature and claims are checked,
tokens are installed in the server's ACL and removed when they expire."""

import datetime
import secrets
import threading
import time

import pytest

import fake_google
import vkclient

from conftest import Env, plain_config


@pytest.fixture
def iam(harness, tmp_path):
    # Servers started here use this process's test CA (the harness runner's
    # VK_TEST_CA_B64 belongs to its own servers).
    ca = harness.default_ca()
    server = harness.Server(Env.server, tls=True, requirepass="initial-" + secrets.token_hex(8),
                            ca=ca).start()
    google = fake_google.FakeGoogle(str(tmp_path), redis=server).start()
    yield server, google, ca["ca_b64"]
    google.stop()
    server.stop()


def iam_config(iam, credentials=None, **kwargs):
    server, google, ca_b64 = iam
    return plain_config(server.address, tls=vkclient.TLS(ca_b64),
                        gcp_iam=vkclient.GCPIAM(
                            credentials_base64=credentials or google.credentials_b64(),
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
    assert all("REDACTED" not in m for m, _ in messages)


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
