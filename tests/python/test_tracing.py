"""Tracing from Python: Config(tracer=..., trace_commands=...) against real
servers. A recording tracer sees the core's spans (connect, reconnect,
close, IAM refresh, locks, commands) with their parents, attributes and
errors, from the blocking and the asyncio clients, and never a secret."""

import asyncio
import socket
import threading
import time

import pytest

import fake_google
import vkclient
import vkclient.asyncio

from conftest import Env, plain_config
from test_iam import iam, iam_config, wait_for  # noqa: F401  (iam is a fixture)


class Span:
    def __init__(self, name, parent, attributes, start_ns):
        self.name = name
        self.parent = parent
        self.attributes = dict(attributes)
        self.start_ns = start_ns
        self.end_ns = None
        self.error = None
        self.ended = False
        self.thread = threading.get_ident()

    def __repr__(self):
        return "<Span %s error=%r %r>" % (self.name, self.error, self.attributes)


class Recorder:
    """A tracer that keeps every span, in start order."""

    def __init__(self):
        self.lock = threading.Lock()
        self.spans = []

    def start_span(self, name, parent, attributes, start_ns):
        span = Span(name, parent, attributes, start_ns)
        with self.lock:
            self.spans.append(span)
        return span

    def end_span(self, span, error, attributes, end_ns):
        span.attributes.update(attributes)
        span.error = error
        span.end_ns = end_ns
        span.ended = True

    def named(self, name):
        with self.lock:
            return [s for s in self.spans if s.name == name]

    def all_text(self):
        """Every attribute value and error, for the secret scan."""
        with self.lock:
            return [v for s in self.spans for v in list(s.attributes.values()) + [s.error or ""]]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def acl_config(tracer, **kwargs):
    return plain_config(Env.acl_addr, static_password=vkclient.StaticPassword(
        Env.acl_pass, username=Env.acl_user), tracer=tracer, **kwargs)


def test_a_tracer_needs_both_methods():
    with pytest.raises(TypeError, match="start_span"):
        vkclient.Client(plain_config(tracer=object()))
    with pytest.raises(TypeError, match="trace_commands must be a bool"):
        vkclient.Client(plain_config(tracer=Recorder(), trace_commands=1))


def test_a_failing_connect():
    rec = Recorder()
    address = "127.0.0.1:%d" % free_port()
    options = vkclient.ConnectionOptions(dial_timeout=0.5)
    with pytest.raises(vkclient.ConnectionError) as caught:
        vkclient.Client(plain_config(address, tracer=rec, options=options))
    [connect] = rec.spans
    assert connect.name == "redis.connect" and connect.ended
    assert connect.parent is None
    assert connect.error == str(caught.value)
    assert "dial" in connect.error
    assert connect.attributes == {"db.system": "redis", "redis.mode": "standalone",
                                  "server.address": address}
    assert 0 < connect.start_ns <= connect.end_ns <= time.time_ns()


def test_connect_commands_pipeline_close():
    rec = Recorder()
    with vkclient.Client(acl_config(rec, trace_commands=True)) as c:
        c.set("vkpy:trace", "value-not-traced")
        assert c.get("vkpy:trace") == b"value-not-traced"
        with pytest.raises(vkclient.ResponseError):
            c.execute("INCR", "vkpy:trace")
        p = c.pipeline()
        p.execute("GET", "vkpy:trace").execute("PING")
        p.run()
    [connect] = rec.named("redis.connect")
    assert connect.error is None and connect.attributes["server.address"] == Env.acl_addr
    commands = rec.named("redis.command")
    assert [s.attributes["db.operation"] for s in commands] == ["set", "get", "incr",
                                                                "pipeline"]
    assert commands[2].error is None   # an error reply is an answer, not a failure
    assert commands[3].attributes["redis.pipeline.length"] == "2"
    assert all(s.ended and s.parent is None for s in commands)
    [close] = rec.named("redis.close")
    assert close.ended and close.error is None
    for text in rec.all_text():
        assert Env.acl_pass not in text
        assert "value-not-traced" not in text


def test_commands_are_not_traced_by_default():
    rec = Recorder()
    with vkclient.Client(acl_config(rec)) as c:
        c.ping()
    assert [s.name for s in rec.spans] == ["redis.connect", "redis.close"]


def test_a_tracer_that_raises_breaks_nothing():
    class Broken(Recorder):
        def start_span(self, name, parent, attributes, start_ns):
            raise RuntimeError("tracer down")

    seen = []
    old_hook = __import__("sys").unraisablehook
    __import__("sys").unraisablehook = seen.append
    try:
        with vkclient.Client(plain_config(tracer=Broken(), trace_commands=True)) as c:
            assert c.ping() is True
    finally:
        __import__("sys").unraisablehook = old_hook
    assert seen and "tracer down" in str(seen[0].exc_value)


def test_reconnect_spans(harness):
    server = harness.Server(Env.server).start()
    try:
        rec = Recorder()
        options = vkclient.ConnectionOptions(dial_timeout=0.5, max_retries=-1)
        c = vkclient.Client(plain_config(server.address, tracer=rec, options=options))
        server.kill()
        for _ in range(2):
            with pytest.raises(vkclient.ConnectionError):
                c.ping()
        failed = rec.named("redis.reconnect")[0]
        assert failed.ended and "dial" in failed.error
        server.restart()
        wait_for(lambda: _pings(c))
        ok = rec.named("redis.reconnect")[-1]
        assert ok.ended and ok.error is None
        assert ok.attributes["server.address"] == server.address
        c.close()
    finally:
        server.stop()


def _pings(c):
    try:
        return c.ping()
    except vkclient.ConnectionError:
        return False


def test_locks(key):
    rec = Recorder()
    with vkclient.Client(plain_config(tracer=rec, trace_commands=True)) as c, \
            vkclient.Client(plain_config()) as other:
        locks = vkclient.LockManager(c)
        assert locks.with_lock(key, lambda: c.execute("INCR", key + ":n")) == 1
        [with_lock] = rec.named("redis.lock.with_lock")
        assert with_lock.error is None
        assert with_lock.attributes == {"db.system": "redis", "redis.lock.key": key,
                                        "redis.lock.attempts": "1",
                                        "redis.lock.outcome": "released"}
        [incr] = [s for s in rec.named("redis.command")
                  if s.attributes["db.operation"] == "incr"]
        assert incr.parent is with_lock

        held = vkclient.LockManager(other).try_lock(key)
        assert held is not None
        assert locks.try_lock(key) is None
        [busy] = rec.named("redis.lock.try_lock")
        assert busy.error is None
        assert busy.attributes["redis.lock.outcome"] == "contended"

        options = vkclient.LockOptions(tries=3, retry_delay=0.01)
        with pytest.raises(vkclient.LockAcquireError) as caught:
            locks.with_lock_options(key, options, lambda: None)
        timed_out = rec.named("redis.lock.with_lock")[1]
        assert timed_out.error == str(caught.value)
        assert timed_out.attributes["redis.lock.outcome"] == "contended"
        assert timed_out.attributes["redis.lock.attempts"] == "3"
        held.unlock()


def test_iam_refresh_fails_then_works(iam):  # noqa: F811
    server, google, _ = iam
    rec = Recorder()
    google.control(status=503, message="unavailable")
    config = iam_config(iam, token_lifetime=3.0, refresh_every=0.5)
    config.tracer = rec
    with pytest.raises(vkclient.Error):
        vkclient.Client(config)
    [connect] = rec.named("redis.connect")
    [failed] = rec.named("redis.iam_refresh")
    assert failed.parent is connect and "503" in failed.error
    assert failed.attributes["gcp.service_account"] == fake_google.SERVICE_ACCOUNT

    google.control()
    rec.spans.clear()
    with vkclient.Client(config) as c:
        connect = rec.named("redis.connect")[0]
        first = rec.named("redis.iam_refresh")[0]
        assert first.parent is connect and first.error is None
        # The refresh thread's own spans: no parent, on that thread.
        wait_for(lambda: len(rec.named("redis.iam_refresh")) >= 2)
        background = rec.named("redis.iam_refresh")[1]
        assert background.parent is None
        assert background.thread != threading.get_ident()
        c.ping()
    tokens = google.issued_tokens()
    assert tokens
    for text in rec.all_text():
        for token in tokens:
            assert token not in text


def test_asyncio_spans(key):
    rec = Recorder()

    async def main():
        async with vkclient.asyncio.Client(plain_config(tracer=rec, trace_commands=True)) as c:
            await c.set(key, "v")
            assert await c.get(key) == b"v"
            p = c.pipeline()
            p.execute("PING")
            await p.run()
            task = asyncio.ensure_future(c.execute("BLPOP", key + ":list", "5"))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            locks = vkclient.asyncio.LockManager(c)

            async def body():
                return await c.execute("INCR", key + ":n")

            assert await locks.with_lock(key + ":lock", body) == 1
            held = await locks.try_lock(key + ":lock")
            assert await locks.try_lock(key + ":lock") is None
            with pytest.raises(vkclient.LockAcquireError):
                await locks.with_lock_options(key + ":lock", vkclient.LockOptions(
                    tries=2, retry_delay=0.01), body)
            await held.unlock()

    asyncio.run(main())
    commands = rec.named("redis.command")
    operations = [s.attributes["db.operation"] for s in commands]
    assert operations[:4] == ["set", "get", "pipeline", "blpop"]
    blpop = commands[3]
    assert blpop.ended and blpop.error is not None and "cancel" in blpop.error
    with_locks = rec.named("redis.lock.with_lock")
    assert [s.attributes["redis.lock.outcome"] for s in with_locks] == ["released",
                                                                       "contended"]
    assert with_locks[0].error is None and "lock already taken" in with_locks[1].error
    tries = rec.named("redis.lock.try_lock")
    assert [s.attributes["redis.lock.outcome"] for s in tries] == ["acquired", "contended"]
    assert all(s.ended for s in rec.spans)
