"""Client: commands, reply types, arguments, lifecycle, status, sinks."""

import datetime
import logging
import os
import signal
import threading
import time

import pytest

import vkclient
from vkclient import _native

from conftest import plain_config


def test_reply_types(client, key):
    assert client.execute("SET", key, b"v") == "OK"            # simple string -> str
    assert client.execute("GET", key) == b"v"                   # bulk string -> bytes
    assert client.execute("STRLEN", key) == 1                   # integer -> int
    assert client.execute("GET", key + ":missing") is None      # nil -> None
    assert client.execute("MGET", key, key + ":x") == [b"v", None]  # array -> list
    assert client.execute("PING") == "PONG"
    client.execute("RPUSH", key + ":l", "a", "b")
    client.execute("HSET", key + ":h", "f", "1")
    assert client.execute("EVAL", "return {1, 'two', {3}}", 0) == [1, b"two", [3]]
    assert client.execute("EXISTS", key, key + ":l", key + ":h") == 3


def test_nested_error_reply_is_an_exception_object(client):
    reply = client.execute("EVAL", "return {1, redis.error_reply('MYERR nested')}", 0)
    assert reply[0] == 1
    assert isinstance(reply[1], vkclient.ResponseError)
    assert str(reply[1]) == "MYERR nested"


def test_argument_types(client, key):
    client.execute("SET", key, "ünïcode")
    assert client.get(key) == "ünïcode".encode()
    client.execute("SET", key, b"\x00\xffbinary\r\n")
    assert client.get(key) == b"\x00\xffbinary\r\n"
    client.execute("SET", key, 42)
    assert client.get(key) == b"42"
    client.execute("SET", key, -2**63)
    assert client.get(key) == str(-2**63).encode()
    client.execute("SET", key, 2**100)
    assert client.get(key) == str(2**100).encode()
    client.execute("SET", key, 1.5)
    assert client.get(key) == b"1.5"
    client.execute("SET", key, 1e300)
    assert client.get(key) == repr(1e300).encode()
    client.execute("SET", key, bytearray(b"ba"))
    assert client.get(key) == b"ba"
    client.execute("SET", key, memoryview(b"mv"))
    assert client.get(key) == b"mv"
    client.execute(b"SET", key.encode(), True)
    assert client.get(key) == b"1"
    with pytest.raises(TypeError):
        client.execute("SET", key, None)
    with pytest.raises(TypeError):
        client.execute("SET", key, object())
    with pytest.raises(TypeError):
        client.execute()


def test_many_arguments(client, key):
    values = [str(i) for i in range(500)]
    assert client.execute("RPUSH", key, *values) == 500
    assert client.execute("LRANGE", key, 0, -1) == [v.encode() for v in values]
    big = b"x" * (4 * 1024 * 1024)
    client.set(key + ":big", big)
    assert client.get(key + ":big") == big


def test_shortcuts(client, key):
    assert client.ping() is True
    assert client.get(key) is None
    assert client.set(key, "v") is True
    assert client.get(key) == b"v"
    assert client.set(key, "w", nx=True) is None
    assert client.get(key) == b"v"
    assert client.set(key + ":px", "v", px=5000) is True
    assert 0 < client.execute("PTTL", key + ":px") <= 5000
    assert client.set(key + ":td", "v", px=datetime.timedelta(seconds=3), nx=True) is True
    assert 2000 < client.execute("PTTL", key + ":td") <= 3000
    assert client.set(key + ":fl", "v", px=1500.4) is True
    assert 1000 < client.execute("PTTL", key + ":fl") <= 1500
    with pytest.raises(TypeError):
        client.set(key, "v", px="soon")
    assert client.set(key=key + ":kw", value=b"kw") is True
    assert client.delete(key, key + ":px", key + ":td", key + ":fl", key + ":kw",
                         key + ":none") == 5
    with pytest.raises(TypeError):
        client.delete()
    with pytest.raises(TypeError):
        client.set(key)
    with pytest.raises(TypeError):
        client.set(key, "v", colour="red")
    client.execute("RPUSH", key + ":list", "x")
    with pytest.raises(vkclient.ResponseError) as info:
        client.get(key + ":list")
    assert str(info.value).startswith("WRONGTYPE")


def test_lifecycle(env, key):
    c = vkclient.Client(plain_config())
    assert c.is_connected() is True
    assert c.last_refresh_error() is None
    c.close()
    c.close()  # harmless
    assert c.is_connected() is False
    # A command on a closed client reconnects on demand.
    assert c.set(key, "again") is True
    assert c.is_connected() is True
    c.connect()
    assert c.is_connected() is True
    assert c.get(key) == b"again"
    c.close()
    del c


def test_context_manager_closes(env):
    with vkclient.Client(plain_config()) as c:
        assert c.ping()
    assert c.is_connected() is False
    assert "connected=False" in repr(c)


def test_connect_keeps_the_old_connections_when_it_fails(own_server, key):
    with vkclient.Client(plain_config(own_server.address)) as c:
        c.set(key, "v")
        own_server.stop()
        with pytest.raises(vkclient.ConnectionError):
            c.connect()
        own_server.restart()
        c.connect()
        assert c.is_connected() is True
        assert c.ping() is True


def test_status(client, env):
    status = client.status()
    assert isinstance(status, vkclient.Status)
    assert status == vkclient.Status(connected=True, last_refresh_error=None,
                                     last_refresh_at=None, refresh_loop_running=False,
                                     mode="standalone", master_address=env.addr,
                                     master_switches=0, slot_map_refreshes=0,
                                     moved_redirects=0, ask_redirects=0, nodes={})
    client.close()
    assert client.status().connected is False


def test_acl_users_and_passwords(env, key):
    as_default = plain_config(env.acl_addr, static_password=vkclient.StaticPassword(env.default_pass))
    with vkclient.Client(as_default) as c:
        assert c.execute("ACL", "WHOAMI") == b"default"
    as_user = plain_config(env.acl_addr, static_password=vkclient.StaticPassword(
        env.acl_pass, username=env.acl_user))
    with vkclient.Client(as_user) as c:
        assert c.execute("ACL", "WHOAMI") == env.acl_user.encode()
        assert c.set(key, "v") is True


def test_tls(env, key):
    with vkclient.Client(plain_config(env.tls_addr, tls=vkclient.TLS(env.ca_b64))) as c:
        assert c.set(key, "over tls") is True
        assert c.get(key) == b"over tls"


def test_logger_callable_and_metrics(env):
    records, metrics = [], []
    cfg = plain_config(logger=lambda level, message, fields: records.append((level, message, fields)),
                       metrics=lambda name, kind, value, labels: metrics.append(
                           (name, kind, value, labels)))
    with vkclient.Client(cfg) as c:
        c.ping()
    messages = [m for _, m, _ in records]
    assert ("info", "connecting to Redis/Valkey") in [(lvl, m) for lvl, m, _ in records]
    assert "connected to Redis/Valkey in standalone mode" in messages
    assert ("warn", "redis connection established without TLS; consider configuring TLS for "
            "production use") in [(lvl, m) for lvl, m, _ in records]
    assert all(isinstance(f, dict) for _, _, f in records)
    for name, kind, value, labels in metrics:
        assert kind in ("counter", "gauge", "histogram")
        assert isinstance(value, float) and isinstance(labels, dict)


def test_metrics_on_failed_connect(harness):
    metrics = []
    cfg = plain_config("127.0.0.1:%d" % harness.free_port(),
                       metrics=lambda *m: metrics.append(m))
    with pytest.raises(vkclient.ConnectionError):
        vkclient.Client(cfg)
    assert ("redis_connection_failures_total", "counter", 1.0, {"operation": "connect"}) in metrics


def test_logging_logger(env, caplog):
    logger = logging.getLogger("vkclient.test")
    with caplog.at_level(logging.DEBUG, logger="vkclient.test"):
        with vkclient.Client(plain_config(logger=logger)) as c:
            c.ping()
    by_message = {r.getMessage(): r for r in caplog.records}
    # The core logs this line at "info", which maps to logging.INFO.
    connecting = by_message["connecting to Redis/Valkey"]
    assert connecting.levelno == logging.INFO and connecting.levelname == "INFO"
    warning = by_message["redis connection established without TLS; consider configuring TLS "
                         "for production use"]
    assert warning.levelno == logging.WARNING
    assert warning.name == "vkclient.test"
    assert all(isinstance(r.vk_fields, dict) for r in caplog.records)


def test_logging_fields_go_to_extra():
    from vkclient._sinks import LoggingSink
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = logging.getLogger("vkclient.fields")
    logger.addHandler(Collect())
    logger.setLevel(logging.DEBUG)
    sink = LoggingSink(logger)
    sink("error", "boom", {"address": "a:1", "message": "clash", "name": "clash too"})
    sink("debug", "quiet", {})
    record = records[0]
    assert record.levelno == logging.ERROR and record.getMessage() == "boom"
    assert record.address == "a:1"
    assert record.vk_message == "clash" and record.vk_name == "clash too"
    assert record.vk_fields == {"address": "a:1", "message": "clash", "name": "clash too"}
    assert records[1].levelno == logging.DEBUG
    logger.setLevel(logging.INFO)
    sink("debug", "filtered", {})
    assert len(records) == 2


def test_log_levels_map_exactly():
    from vkclient._sinks import LOG_LEVELS, LoggingSink
    # The core's four level names (vk_log_level_name), and nothing else.
    assert {_native.vk_log_level_name(getattr(_native, "VK_LOG_" + n))
            for n in ("DEBUG", "INFO", "WARN", "ERROR")} == set(LOG_LEVELS)
    assert LOG_LEVELS == {"debug": logging.DEBUG, "info": logging.INFO,
                          "warn": logging.WARNING, "error": logging.ERROR}
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = logging.getLogger("vkclient.levels")
    logger.addHandler(Collect())
    logger.setLevel(logging.DEBUG)
    sink = LoggingSink(logger)
    for level in ("debug", "info", "warn", "error", "unknown"):
        sink(level, level, {})
    assert [(r.getMessage(), r.levelno) for r in records] == [
        ("debug", logging.DEBUG), ("info", logging.INFO), ("warn", logging.WARNING),
        ("error", logging.ERROR), ("unknown", logging.INFO)]


def test_a_failing_sink_does_not_break_the_client(env, monkeypatch):
    # The exception cannot travel through C: it is reported as unraisable.
    unraisable = []
    monkeypatch.setattr("sys.unraisablehook", unraisable.append)

    def bad_logger(level, message, fields):
        raise RuntimeError("sink failure")

    with vkclient.Client(plain_config(logger=bad_logger)) as c:
        assert c.ping() is True
    assert unraisable
    assert all(str(u.exc_value) == "sink failure" for u in unraisable)


def test_package_logger(env):
    records = []
    vkclient.set_package_logger(lambda level, message, fields: records.append((level, message)))
    try:
        with pytest.raises(vkclient.NilClientError):
            vkclient.LockManager(None)
        assert records and all(isinstance(m, str) for _, m in records)
        assert any("redis client is nil" in m for _, m in records)
    finally:
        vkclient.set_package_logger(None)
    records.clear()
    with pytest.raises(vkclient.NilClientError):
        vkclient.LockManager(None)
    assert records == []
    vkclient.set_package_logger(logging.getLogger("vkclient.package"))
    vkclient.set_package_logger(None)
    with pytest.raises(TypeError):
        vkclient.set_package_logger(12)


def test_swig_level_command(client, key):
    # The SWIG-level call: an argv sequence, the reply converted at once.
    assert _native.vk_client_command(client._pointer(), None, ["SET", key, 7]) == "OK"
    assert _native.vk_client_command(client._pointer(), None, ("GET", key)) == b"7"
    assert _native.vk_client_command(client._pointer(), None, (x for x in ["GET", key])) == b"7"
    with pytest.raises(vkclient.ResponseError):
        _native.vk_client_command(client._pointer(), None, ["NO-SUCH"])
    with pytest.raises(TypeError):
        _native.vk_client_command(client._pointer(), None, 5)


def test_versions():
    assert vkclient.__version__ == _native.vk_version()
    assert vkclient.hiredis_version().count(".") == 2
    assert vkclient.resp3_supported() in (True, False)


def test_help_shows_docstrings(monkeypatch):
    import contextlib
    import io
    import pydoc
    import re
    # help() itself, its pager writing plain text to our stdout.
    monkeypatch.setattr(pydoc, "pager", pydoc.plainpager)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        help(vkclient.Client)
    text = out.getvalue()
    # Drop the " |  " margins and line breaks: whole sentences can be matched.
    flat = " ".join(re.sub(r"^\s*\|\s?", "", line).strip() for line in text.splitlines())
    flat = re.sub(r"\s+", " ", flat)
    assert "class Client(vkclient._native.ClientCore)" in text
    # Client's own docstring...
    assert ("A Redis/Valkey client: connection handling, pooling, retries, TLS and auth are "
            "done by the vkclient core.") in flat
    assert "every blocking call releases the GIL" in flat
    # ...and those of the methods, native ones (execute, set, ...) included,
    # each under its signature.
    assert ('execute(*args) Runs any command, e.g. execute("SET", "k", b"v"), and returns '
            "its reply") in flat
    assert "An error reply raises vkclient.ResponseError" in flat
    assert "set(key, value, px=None, nx=False) SET key value [PX px] [NX]." in flat
    assert "get(key) GET key: the value as bytes, or None when the key does not exist." in flat
    assert "close() Stops the refresh loop and closes every connection." in flat
    assert ("pipeline(self, transaction=False) A new Pipeline: queue commands with "
            ".execute(...)") in flat
    assert ("from_url(url, tls=None, options=None, logger=None, metrics=None, tracer=None, "
            "trace_commands=False)") in flat
    for name in ("delete", "ping", "connect", "is_connected", "last_refresh_error", "status"):
        doc = getattr(vkclient.Client, name).__doc__
        assert doc and doc.split("\n")[0].strip() in text, name
    assert vkclient.LockManager.with_lock.__doc__


def test_blocking_commands_wait_their_own_timeout_and_ctrl_c_ends_them(key):
    cfg = plain_config(options=vkclient.ConnectionOptions(read_timeout=0.2, max_retries=-1))
    with vkclient.Client(cfg) as c:
        # BLPOP's own timeout, not the read timeout, bounds its wait.
        started = time.monotonic()
        assert c.execute("BLPOP", key, 0.5) is None
        assert time.monotonic() - started >= 0.45
        # A command that is merely slow still meets the read timeout: writes
        # wait out a 0.5 s pause of the server.
        c.execute("CLIENT", "PAUSE", 500, "WRITE")
        with pytest.raises(vkclient.TimeoutError):
            c.execute("SET", key + ":paused", "v")
        time.sleep(0.5)  # the pause is over
        # BLPOP 0 waits without limit; Ctrl-C ends it, and the client goes on.
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            c.execute("BLPOP", key, 0)
        assert time.monotonic() - started < 2.0
        timer.join()
        assert c.ping() is True
