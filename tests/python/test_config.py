"""Config classes: validation texts, durations, URLs and redaction."""

import datetime
import logging

import pytest

import vkclient

from conftest import plain_config

SA = "runner@project.iam.gserviceaccount.com"
PREFIX = "invalid redis config: "


def tls():
    return vkclient.TLS(ca_cert_base64="Y2EtYnVuZGxl")


def iam(**kwargs):
    values = dict(credentials_base64="eyJzZWNyZXQiOiAiazNZIn0=", service_account=SA)
    values.update(kwargs)
    return vkclient.GCPIAM(**values)


@pytest.mark.parametrize("cfg,reason", [
    (lambda: vkclient.Config(standalone=vkclient.Standalone("a:1"),
                             cluster=vkclient.Cluster(["b:1"])),
     "exactly one topology must be configured"),
    (lambda: plain_config(""), "standalone address is required"),
    (lambda: plain_config("   "), "standalone address is required"),
    (lambda: vkclient.Config(sentinel=vkclient.Sentinel([], master_name="m")),
     "sentinel addresses are required"),
    (lambda: vkclient.Config(sentinel=vkclient.Sentinel(["a:1"])),
     "sentinel master name is required"),
    (lambda: vkclient.Config(sentinel=vkclient.Sentinel(["a:1", " "], master_name="m")),
     "sentinel addresses cannot be empty"),
    (lambda: vkclient.Config(cluster=vkclient.Cluster([])), "cluster addresses are required"),
    (lambda: vkclient.Config(cluster=vkclient.Cluster(["a:1", ""])),
     "cluster addresses cannot be empty"),
    (lambda: plain_config("a:1", static_password=vkclient.StaticPassword("x"), tls=tls(),
                          gcp_iam=iam()),
     "only one auth strategy can be configured"),
    (lambda: plain_config("a:1", tls=vkclient.TLS(" ")),
     "TLS CA cert is required when TLS is configured"),
    (lambda: plain_config("a:1", gcp_iam=iam()),
     "TLS must be configured when GCP IAM auth is enabled"),
    (lambda: plain_config("a:1", tls=tls(), gcp_iam=iam(service_account="")),
     "service account is required for GCP IAM auth"),
    (lambda: plain_config("a:1", tls=tls(), gcp_iam=iam(service_account="a/b")),
     "service account cannot contain '/' characters"),
    (lambda: plain_config("a:1", tls=tls(), gcp_iam=iam(credentials_base64="")),
     "credentials are required for GCP IAM auth"),
    (lambda: plain_config("a:1", tls=tls(), gcp_iam=iam(token_lifetime=600, refresh_every=900)),
     "RefreshEvery must be less than TokenLifetime to prevent token expiry before refresh"),
    (lambda: plain_config("a:1", tls=tls(), gcp_iam=iam(token_lifetime=600, refresh_every=600)),
     "RefreshEvery must be less than TokenLifetime to prevent token expiry before refresh"),
])
def test_validation_reasons(cfg, reason):
    config = cfg()
    with pytest.raises(vkclient.InvalidConfigError) as info:
        config.validate()
    assert str(info.value) == PREFIX + reason
    # Client() validates the same way, before touching the network.
    with pytest.raises(vkclient.InvalidConfigError) as info:
        vkclient.Client(config)
    assert str(info.value) == PREFIX + reason


def test_valid_configs_pass():
    plain_config("127.0.0.1:6379").validate()
    plain_config("[::1]:6379").validate()
    plain_config("unix:/tmp/valkey.sock").validate()
    vkclient.Config(sentinel=vkclient.Sentinel("a:1", master_name="m")).validate()
    vkclient.Config(cluster=vkclient.Cluster(["a:1", "b:2"])).validate()
    plain_config("a:1", tls=tls(), gcp_iam=iam(token_lifetime=600, refresh_every=300)).validate()


def test_no_topology():
    with pytest.raises(vkclient.InvalidConfigError) as info:
        vkclient.Config().validate()
    assert str(info.value) == PREFIX + "exactly one topology must be configured"
    # Client() validates first: the same reason, before any connection.
    with pytest.raises(vkclient.InvalidConfigError) as info:
        vkclient.Client(vkclient.Config())
    assert str(info.value) == PREFIX + "exactly one topology must be configured"


def test_protocol_3_needs_a_resp3_hiredis(env):
    cfg = plain_config(env.addr, options=vkclient.ConnectionOptions(protocol=3))
    if vkclient.resp3_supported():
        with vkclient.Client(cfg) as c:
            info = c.execute("CLIENT", "INFO")
            assert " resp=3 " in (info.decode() if isinstance(info, bytes) else str(info))
    else:
        with pytest.raises(vkclient.InvalidConfigError) as info:
            vkclient.Client(cfg)
        assert str(info.value) == (PREFIX + "protocol 3 (RESP3) requires hiredis >= 1.0; "
                                   "this build uses hiredis " + vkclient.hiredis_version())


def test_redaction_of_secrets():
    password = vkclient.StaticPassword("hunter2-secret", username="app")
    for text in (repr(password), str(password), f"{password}", "%s" % password,
                 "%r" % (password,), f"{password!r}"):
        assert text == "StaticPasswordAuth{Password:REDACTED}"
    auth = iam(credentials_base64="c2VjcmV0LWNyZWRlbnRpYWxz")
    for text in (repr(auth), str(auth), f"{auth}"):
        assert text == "GCPIAMAuth{ServiceAccount:%s, CredentialsBase64:REDACTED}" % SA

    for cfg in (plain_config("a:1", static_password=password),
                plain_config("a:1", tls=tls(), gcp_iam=auth)):
        for text in (repr(cfg), str(cfg), f"{cfg}", repr([cfg])):
            assert "hunter2-secret" not in text
            assert "c2VjcmV0LWNyZWRlbnRpYWxz" not in text
            assert text.count("REDACTED") == 1
    assert "Auth:StaticPasswordAuth{Password:REDACTED}" in repr(
        plain_config("a:1", static_password=vkclient.StaticPassword("hunter2-secret")))
    assert "Auth:GCPIAMAuth{ServiceAccount:%s, CredentialsBase64:REDACTED}" % SA in repr(
        plain_config("a:1", tls=tls(), gcp_iam=auth))

    secret_tls = vkclient.TLS("Y2E=", client_cert_base64="Y2VydA==",
                              client_key_base64="a2V5LXNlY3JldA==")
    assert "a2V5LXNlY3JldA==" not in repr(secret_tls)
    sentinel = vkclient.Sentinel(["a:1"], master_name="m", password="sentinel-secret")
    assert "sentinel-secret" not in repr(sentinel)
    assert "sentinel-secret" not in repr(vkclient.Config(sentinel=sentinel))


def test_describe_shows_the_config():
    text = repr(plain_config("127.0.0.1:6400"))
    assert text.startswith("Config{Topology:Standalone{Address:127.0.0.1:6400}")
    assert "TLS:<nil>" in text and "Auth:<nil>" in text
    unprintable = repr(vkclient.Config.from_url("http://nowhere"))
    assert unprintable.startswith("Config{<unprintable: invalid redis config: invalid URL")


def test_durations_in_seconds_or_timedelta(env):
    as_float = plain_config(env.addr, options=vkclient.ConnectionOptions(read_timeout=1.5))
    as_delta = plain_config(env.addr, options=vkclient.ConnectionOptions(
        read_timeout=datetime.timedelta(milliseconds=1500)))
    assert "ReadTimeout:1.5s" in repr(as_float)
    assert repr(as_float) == repr(as_delta)
    wrong = plain_config("a:1", options=vkclient.ConnectionOptions(read_timeout="3s"))
    with pytest.raises(TypeError):
        vkclient.Client(wrong)


def test_every_connection_option_reaches_the_core(env):
    options = vkclient.ConnectionOptions(
        db=3, protocol=2, pool_size=4, min_idle_conns=1, read_timeout=1.0, write_timeout=2.0,
        dial_timeout=3.0, pool_timeout=4.0, max_retries=5, min_retry_backoff=0.016,
        max_retry_backoff=0.5)
    text = repr(plain_config(env.addr, options=options))
    for part in ("DB:3", "Protocol:2", "PoolSize:4", "MinIdleConns:1", "ReadTimeout:1s",
                 "WriteTimeout:2s", "DialTimeout:3s", "PoolTimeout:4s", "MaxRetries:5",
                 "MinRetryBackoff:16ms", "MaxRetryBackoff:500ms"):
        assert part in text
    assert "db=3" in repr(options)
    with vkclient.Client(plain_config(env.addr, options=options)) as c:
        c.set("vkpy:db-check", "3")
        assert c.execute("CLIENT", "INFO").decode().count(" db=3 ") == 1


def test_from_url(env, key):
    url = "redis://%s:%s@%s/4" % (env.acl_user, env.acl_pass, env.acl_addr)
    cfg = vkclient.Config.from_url(url)
    assert env.acl_pass not in repr(cfg)
    assert "DB:4" in repr(cfg)
    with vkclient.Client.from_url(url) as c:
        assert c.set(key, "v") is True
        assert c.execute("CLIENT", "INFO").decode().count(" db=4 ") == 1
        assert c.execute("ACL", "WHOAMI") == env.acl_user.encode()


def test_tls_from_url(env):
    with vkclient.Client.from_url("rediss://%s" % env.tls_addr,
                                  tls=vkclient.TLS(env.ca_b64)) as c:
        assert c.ping() is True


def test_tls_min_versions(env):
    for version in (vkclient.TLS1_2, vkclient.TLS1_3):
        cfg = plain_config(env.tls_addr, tls=vkclient.TLS(env.ca_b64, min_version=version))
        with vkclient.Client(cfg) as c:
            assert c.ping() is True
    # Below 1.2: raised to 1.2 with a warning, unless legacy is allowed.
    records = []
    cfg = plain_config(env.tls_addr, tls=vkclient.TLS(env.ca_b64, min_version=vkclient.TLS1_0),
                       logger=lambda level, message, fields: records.append((level, message)))
    with vkclient.Client(cfg) as c:
        assert c.ping() is True
    assert any(level == "warn" for level, _ in records)
    legacy = plain_config("a:1", tls=vkclient.TLS("Y2E=", min_version=vkclient.TLS1_1,
                                                  allow_legacy_min_version=True))
    assert "AllowLegacyMinVersion:true" in repr(legacy)


def test_tls_server_name(env):
    cfg = plain_config(env.tls_addr, tls=vkclient.TLS(env.ca_b64, server_name="localhost"))
    with vkclient.Client(cfg) as c:
        assert c.ping() is True
    wrong = plain_config(env.tls_addr, tls=vkclient.TLS(env.ca_b64, server_name="elsewhere"))
    with pytest.raises(vkclient.TLSError):
        vkclient.Client(wrong)


def test_sink_types():
    with pytest.raises(TypeError):
        vkclient.Client(plain_config("a:1", logger=42))
    with pytest.raises(TypeError):
        vkclient.Client(plain_config("a:1", metrics="no"))
    # A Logger is accepted as is.
    plain_config("a:1", logger=logging.getLogger("x")).validate()


def test_repr_of_plain_values():
    assert repr(vkclient.Standalone("a:1")) == "Standalone('a:1')"
    assert repr(vkclient.Cluster("a:1")) == "Cluster(['a:1'])"
    assert repr(vkclient.Sentinel(["a:1"], master_name="m")) == "Sentinel(['a:1'], master_name='m')"


def test_plain_addresses_for_standalone_and_cluster(env, key):
    # A "host:port" str is a Standalone; a list of str (or one str) a Cluster.
    with vkclient.Client(vkclient.Config(standalone=env.addr)) as c:
        c.set(key, b"v")
        assert c.get(key) == b"v"
    assert repr(vkclient.Config(standalone="a:1")) == repr(plain_config("a:1"))
    assert (repr(vkclient.Config(cluster=["a:1", "b:2"]))
            == repr(vkclient.Config(cluster=vkclient.Cluster(["a:1", "b:2"]))))
    assert repr(vkclient.Config(cluster="a:1")) == repr(vkclient.Config(cluster=("a:1",)))
    vkclient.Config(cluster=["a:1", "b:2"]).validate()
    for cfg, reason in ((vkclient.Config(standalone=""), "standalone address is required"),
                        (vkclient.Config(standalone="a:1", cluster=["b:1"]),
                         "exactly one topology must be configured"),
                        (vkclient.Config(cluster=[]), "cluster addresses are required"),
                        (vkclient.Config(cluster=["a:1", " "]), "cluster addresses cannot be empty"),
                        (vkclient.Config(sentinel=vkclient.Sentinel("a:1")),
                         "sentinel master name is required")):
        with pytest.raises(vkclient.InvalidConfigError) as info:
            cfg.validate()
        assert str(info.value) == PREFIX + reason


def type_error(text, fn):
    """fn() raises a TypeError with exactly this text (never an internal error)."""
    with pytest.raises(TypeError) as info:
        fn()
    assert type(info.value) is TypeError
    assert str(info.value) == text


def test_wrong_types_name_the_field():
    def check(text, **fields):
        type_error(text, lambda: vkclient.Config(**fields).validate())
        type_error(text, lambda: vkclient.Client(vkclient.Config(**fields)))

    check('standalone must be a str ("host:port") or a vkclient.Standalone, not int',
          standalone=6379)
    changed = vkclient.Standalone("a:1")
    changed.address = 6379   # set after construction: checked when used
    check("Standalone.address must be a str or None, not int", standalone=changed)
    check("cluster must be a vkclient.Cluster, a list of str or a str, not dict",
          cluster={"addresses": ["a:1"]})
    check("cluster[1] must be a str, not int", cluster=["a:1", 7000])
    check("sentinel must be a vkclient.Sentinel, not dict",
          sentinel={"addresses": ["a:1"], "master_name": "m"})
    check("Sentinel.master_name must be a str or None, not int",
          sentinel=vkclient.Sentinel("a:1", master_name=1))
    check("Sentinel.password must be a str or None, not bytes",
          sentinel=vkclient.Sentinel("a:1", master_name="m", password=b"pw"))
    check("tls must be a vkclient.TLS, not str", standalone="a:1", tls="Y2E=")
    check("TLS.ca_cert_base64 must be a str or None, not bytes", standalone="a:1",
          tls=vkclient.TLS(ca_cert_base64=b"Y2E="))
    check("TLS.min_version must be an int, not str", standalone="a:1",
          tls=vkclient.TLS(ca_cert_base64="Y2E=", min_version="1.2"))
    check("static_password must be a vkclient.StaticPassword, not str", standalone="a:1",
          static_password="pw")
    check("StaticPassword.password must be a str or None, not int", standalone="a:1",
          static_password=vkclient.StaticPassword(1234))
    check("gcp_iam must be a vkclient.GCPIAM, not dict", standalone="a:1", tls=tls(),
          gcp_iam={"service_account": SA})
    check("GCPIAM.service_account must be a str or None, not int", standalone="a:1", tls=tls(),
          gcp_iam=iam(service_account=7))
    check("token_lifetime must be seconds (int or float) or a datetime.timedelta, not str",
          standalone="a:1", tls=tls(), gcp_iam=iam(token_lifetime="3600"))
    check("options must be a vkclient.ConnectionOptions, not dict", standalone="a:1",
          options={"db": 1})
    check("db must be an int, not str", standalone="a:1",
          options=vkclient.ConnectionOptions(db="1"))
    check("pool_size must be an int, not float", standalone="a:1",
          options=vkclient.ConnectionOptions(pool_size=2.5))
    check("read_timeout must be seconds (int or float) or a datetime.timedelta, not str",
          standalone="a:1", options=vkclient.ConnectionOptions(read_timeout="3s"))
    type_error("url must be a str or None, not bytes",
               lambda: vkclient.Client.from_url(b"redis://a:1"))
    # Caught when the value is given, where a class takes it.
    type_error("Cluster addresses must be a str or a list of str, not int",
               lambda: vkclient.Cluster(7000))
    type_error("Sentinel addresses[0] must be a str, not NoneType",
               lambda: vkclient.Sentinel([None], master_name="m"))
    type_error("address must be a str or None, not int", lambda: vkclient.Standalone(6379))
    # Right type, wrong value: ValueError, still naming the field.
    for cfg, text in ((vkclient.ConnectionOptions(dial_timeout=float("nan")),
                       "dial_timeout must be a finite number of seconds"),
                      (vkclient.ConnectionOptions(db=2**40),
                       "db must fit in a 32-bit int, got %d" % 2**40)):
        with pytest.raises(ValueError) as info:
            vkclient.Config(standalone="a:1", options=cfg).validate()
        assert str(info.value) == text
