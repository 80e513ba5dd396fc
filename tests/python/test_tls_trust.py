"""TLS trust from a CA file and from the system store (made to hold the
harness CA through SSL_CERT_FILE, which OpenSSL reads when a client is
created), and the TLS 1.2 floor against a server that speaks only TLS 1.1."""

import pathlib

import pytest

import vkclient

from conftest import plain_config

UNTRUSTED = "certificate verify failed: self-signed certificate in certificate chain"


@pytest.fixture
def system_store(monkeypatch):
    """Points the system store at a CA file, or (None) leaves the machine's
    own, which does not hold the harness CA."""
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)

    def use(ca_file):
        if ca_file is None:
            monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        else:
            monkeypatch.setenv("SSL_CERT_FILE", ca_file)
    use(None)
    return use


def test_ca_file(env, system_store):
    for ca_file in (env.ca_file, pathlib.Path(env.ca_file)):
        cfg = plain_config(env.tls_addr, tls=vkclient.TLS(ca_file=ca_file))
        with vkclient.Client(cfg) as c:
            assert c.ping() is True
        assert "CAFile:%s" % env.ca_file in repr(cfg)


def test_missing_ca_file(env):
    cfg = plain_config(env.tls_addr, tls=vkclient.TLS(ca_file="/nonexistent/ca.pem"))
    with pytest.raises(vkclient.InvalidConfigError) as err:
        vkclient.Client(cfg)
    assert str(err.value) == ('invalid redis config: TLS CA file "/nonexistent/ca.pem" cannot be '
                              'read: No such file or directory')


def test_use_system_ca(env, system_store):
    cfg = plain_config(env.tls_addr, tls=vkclient.TLS(use_system_ca=True))
    assert "SystemCA:true" in repr(cfg)
    with pytest.raises(vkclient.TLSError) as err:
        vkclient.Client(cfg)
    assert str(err.value).endswith(UNTRUSTED)
    system_store(env.ca_file)
    with vkclient.Client(cfg) as c:
        assert c.ping() is True


def test_url_without_ca_uses_system_store(env, system_store):
    url = "rediss://%s" % env.tls_addr
    with pytest.raises(vkclient.TLSError):
        vkclient.Client.from_url(url)
    system_store(env.ca_file)
    with vkclient.Client.from_url(url) as c:
        assert c.ping() is True
    # A CA given with the URL replaces the system store.
    with pytest.raises(vkclient.TLSError) as err:
        vkclient.Client.from_url(url, tls=vkclient.TLS(env.other_ca_b64))
    assert str(err.value).endswith(UNTRUSTED)
    with vkclient.Client.from_url(url, tls=vkclient.TLS(env.other_ca_b64,
                                                        use_system_ca=True)) as c:
        assert c.ping() is True


def test_no_trust_source(env):
    with pytest.raises(vkclient.InvalidConfigError) as err:
        vkclient.Client(plain_config(env.tls_addr, tls=vkclient.TLS()))
    assert str(err.value) == "invalid redis config: TLS CA cert is required when TLS is configured"
    with pytest.raises(vkclient.InvalidConfigError):
        vkclient.Client.from_url("rediss://%s" % env.tls_addr,
                                 tls=vkclient.TLS(use_system_ca=False))


@pytest.fixture(scope="module")
def tls11_server(env, harness):
    """A server that speaks TLS 1.1 and nothing else, with a CA of this
    process."""
    server = harness.Server(env.server, tls11_only=True).start()
    yield server
    server.stop()


def test_tls11_server_refused(tls11_server):
    # The control: the harness's own client, limited to TLS 1.1, gets in.
    with tls11_server.connect() as sock:
        assert sock.version() == "TLSv1.1"

    refused = "handshake with 127.0.0.1:%d failed: tlsv1 alert protocol version" % (
        tls11_server.port)
    ca = tls11_server.ca["ca_b64"]
    for settings in ({}, {"min_version": vkclient.TLS1_0},
                     {"min_version": vkclient.TLS1_0, "allow_legacy_min_version": True}):
        records = []
        cfg = plain_config(tls11_server.address, tls=vkclient.TLS(ca, **settings),
                           logger=lambda level, message, fields: records.append(
                               (level, message, fields)))
        with pytest.raises(vkclient.TLSError) as err:
            vkclient.Client(cfg)
        assert str(err.value).endswith(refused)
    # The legacy opt-in is kept in the config and logged as insecure.
    assert ("warn", "TLS min version below 1.2 kept because legacy versions are allowed; "
            "this is insecure", {"requested": "TLS 1.0"}) in records
