"""vkclient.asyncio: the client and the lock for asyncio, on the core's
event-loop client (one multiplexed connection; the core parses and the
replies are converted in C, as in the blocking client).

    import vkclient
    import vkclient.asyncio

    async def main():
        cfg = vkclient.Config(standalone=vkclient.Standalone("127.0.0.1:6379"))
        async with vkclient.asyncio.Client(cfg) as client:
            await client.set("greeting", "hello")
            await client.get("greeting")                  # b'hello'
            locks = vkclient.asyncio.LockManager(client)
            async with locks.lock("lock:user:1") as handle:
                await client.execute("INCR", "n")

A client is bound to the event loop it is first used on; a call from
another loop (or thread) raises InvalidArgumentError. Every topology is
served on the loop: standalone, Sentinel (the master is found and
followed) and Cluster (the slot map is loaded and followed, one
multiplexed connection per master; MOVED, ASK and TRYAGAIN are handled as
by the blocking client, and a pipeline is split by node).
"""

import asyncio as _asyncio
import sys as _sys
import time as _time
import types as _types

from . import _native
from .client import Status, _status_of
from .config import Config, build_native, to_ms
from .errors import LockLostError, LockNotHeldError
from .lock import LockOptions, _HandleView
from .script import AsyncScript

__all__ = ["Client", "Pipeline", "LockManager", "LockHandle", "AsyncScript"]


def _future_class(pending):
    """The futures of one client: cancelling one (a task cancelled, or
    asyncio.wait_for timing out) cancels its operation in the core."""
    cancel_op = _native.async_cancel

    class _Operation(_asyncio.Future):
        __slots__ = ()

        def cancel(self, msg=None):
            if not super().cancel(msg):
                return False
            cancel_op(pending, self)
            return True

    return _Operation


class Client(_native.AsyncClientCore):
    """An asyncio Redis/Valkey client over one multiplexed connection.

    ``Client(config)`` validates the config (InvalidConfigError, with the
    blocking client's texts) and does no I/O: the first call (or
    ``await client.connect()``) connects. Commands return awaitables:
    ``await client.execute(*args)``, ``get``, ``set``, ``delete``,
    ``ping``, with the blocking client's replies and exceptions. Many tasks
    may use one client at once; their requests share the connection.
    Cancelling a task cancels its operation, and the client stays usable.
    A blocking command (BLPOP, XREAD BLOCK, ...), or a pipeline holding
    one, runs on a connection of its own, so it delays nobody and
    cancelling it ends the server's wait.
    """

    __slots__ = ("config", "__weakref__")

    def __init__(self, config):
        native = build_native(config)
        # The core owns the native config from here on, also on failure.
        self._init(native, config.gcp_iam is None)
        self._set_future_class(_future_class(self._pending()))
        self.config = config

    @classmethod
    def from_url(cls, url, tls=None, options=None, logger=None, metrics=None, tracer=None,
                 trace_commands=False):
        """As vkclient.Client.from_url (redis://, rediss://, unix://)."""
        return cls(Config.from_url(url, tls=tls, options=options, logger=logger,
                                   metrics=metrics, tracer=tracer,
                                   trace_commands=trace_commands))

    async def connect(self):
        """Opens the connection now (handshake and PING) rather than on the
        first command. Raises the connection error."""
        await self._connect()

    async def close(self):
        """Closes the connection; operations in flight fail with
        CancelledError("operation cancelled: client closed"). Closing twice
        is harmless; a later call opens a new connection on the same loop.
        A pipeline or lock manager made before keeps its connection open
        until it is released."""
        self._close()

    def pipeline(self, transaction=False):
        """A new Pipeline: queue with .execute(...), send with ``await .run()``.

        With transaction=True, run() sends MULTI, the commands and EXEC
        together (nothing else of the connection runs in between) and gives
        EXEC's results; standalone and Sentinel only (a cluster client
        refuses it: use the blocking client)."""
        p = Pipeline(self)
        if transaction:
            p._set_transaction(True)
        return p

    def register_script(self, script):
        """An AsyncScript for the Lua source `script`: ``await
        script(keys=[...], args=[...])`` runs EVALSHA, and EVAL when the
        server does not have it yet, as one operation (cancelling the
        awaiting task cancels it). See vkclient.script."""
        return AsyncScript(self, script)

    async def scan_iter(self, match=None, count=None, _type=None):
        """``async for key in client.scan_iter(...)``: every key (bytes) of the
        key space, SCAN page by page, as Client.scan_iter (in cluster mode
        every master in turn; a slot map that changes meanwhile raises
        ConnectionError on the next page)."""
        scan = _native.AsyncScanCore(self, "SCAN", None, match, count, _type)
        while not scan.done():
            for key in await scan.next_page():
                yield key

    async def hscan_iter(self, name, match=None, count=None):
        """(field, value) pairs of the hash at name (HSCAN)."""
        scan = _native.AsyncScanCore(self, "HSCAN", name, match, count, None)
        while not scan.done():
            page = await scan.next_page()
            for i in range(0, len(page) - 1, 2):
                yield page[i], page[i + 1]

    async def sscan_iter(self, name, match=None, count=None):
        """The members of the set at name (SSCAN)."""
        scan = _native.AsyncScanCore(self, "SSCAN", name, match, count, None)
        while not scan.done():
            for member in await scan.next_page():
                yield member

    async def zscan_iter(self, name, match=None, count=None, score_cast_func=float):
        """(member, score) pairs of the sorted set at name (ZSCAN)."""
        scan = _native.AsyncScanCore(self, "ZSCAN", name, match, count, None)
        while not scan.done():
            page = await scan.next_page()
            for i in range(0, len(page) - 1, 2):
                yield page[i], score_cast_func(page[i + 1])

    def status(self):
        """A Status snapshot (no probe), as vkclient.Client.status(): whether
        connected, the GCP IAM token refresh state, the mode ("standalone",
        "sentinel" or "cluster"), the node (in Sentinel mode the master
        followed now, None until one was found; None in Cluster mode), the
        master switches followed, and in Cluster mode the masters of the
        slot map with their slots and the maps and redirects counted.
        Before the first call, the configured node and nothing else."""
        snapshot = self._snapshot()
        if snapshot is not None:
            return _status_of(snapshot)
        if self.config.sentinel is not None:
            return Status(False, None, None, False, "sentinel", None)
        if self.config.cluster is not None:
            return Status(False, None, None, False, "cluster", None)
        return Status(False, None, None, False, "standalone", _standalone_address(self.config))

    def last_refresh_error(self):
        """The latest GCP IAM token refresh failure (str), or None: none, no
        IAM auth, or the client not used yet."""
        snapshot = self._snapshot()
        return snapshot[1] if snapshot is not None else None

    async def __aenter__(self):
        return self

    async def __aexit__(self, exc_type, exc, tb):
        await self.close()

    def __repr__(self):
        return "<vkclient.asyncio.Client connected=%s>" % (self.is_connected(),)


def _standalone_address(config):
    """The node's address as the blocking Status gives it (host:port, or
    unix:/path), from the Standalone or the URL of the config."""
    if config.standalone is not None:
        return getattr(config.standalone, "address", config.standalone)
    if config.url is None:
        return None
    import urllib.parse
    parts = urllib.parse.urlsplit(config.url)
    if parts.scheme == "unix":
        return "unix:" + parts.path
    host = parts.hostname or ""
    if ":" in host:
        host = "[%s]" % host
    return "%s:%d" % (host, parts.port or 6379)


class Pipeline(_native.AsyncPipelineCore):
    """Many commands, one round trip: ``p.execute(*args)`` queues (and
    returns the pipeline), ``await p.run()`` sends them and gives one reply
    per command, error replies as ResponseError instances in the list.
    ``async with client.pipeline() as p:`` runs what is queued on exit
    (unless the block raised)."""

    __slots__ = ("_results",)

    async def __aenter__(self):
        return self

    async def __aexit__(self, exc_type, exc, tb):
        if exc_type is None and len(self) > 0:
            self._results = await self.run()

    @property
    def transaction(self):
        """Whether run() sends the commands as one MULTI ... EXEC."""
        return self._is_transaction()

    @property
    def results(self):
        """The replies of the run made on leaving ``async with`` (None before)."""
        return getattr(self, "_results", None)

    def __repr__(self):
        return "<vkclient.asyncio.Pipeline queued=%d>" % (len(self),)


class LockHandle(_HandleView):
    """A held lock (see vkclient.LockHandle); unlock and extend are awaited."""

    __slots__ = ()
    _free = staticmethod(_native.async_lock_free)
    _repr_name = "vkclient.asyncio.LockHandle"

    async def unlock(self):
        """Releases the lock (only if still ours); LockNotHeldError otherwise."""
        await self._manager._core().unlock(self._lock)

    async def extend(self, expiry):
        """Resets the expiry to `expiry` seconds, only while the lock is ours."""
        await self._manager._core().extend(self._lock, to_ms(expiry, "expiry"))


class _HeldLock:
    """The async context manager returned by LockManager.lock()."""

    __slots__ = ("_manager", "_key", "_options", "_timeout", "_auto_renew", "_handle")

    def __init__(self, manager, key, options, timeout, auto_renew):
        self._manager = manager
        self._key = key
        self._options = options
        self._timeout = timeout
        self._auto_renew = auto_renew
        self._handle = None

    async def __aenter__(self):
        options = self._options if self._options is not None else LockOptions.default()
        acquiring = self._manager._acquire(self._key, options._as_native())
        if self._timeout is None:
            handle = await acquiring
        else:
            seconds = to_ms(self._timeout, "timeout") / 1000.0
            try:
                handle = await _asyncio.wait_for(acquiring, seconds)
            except _asyncio.TimeoutError:
                raise _timeout_error() from None
        self._handle = handle
        if self._auto_renew and not options.auto_renew:
            try:
                _native.async_lock_auto_renew(handle._lock)
            except BaseException:
                await handle.unlock()
                raise
        return handle

    async def __aexit__(self, exc_type, exc, tb):
        handle = self._handle
        try:
            await handle.unlock()   # stops the renewal first
        except LockNotHeldError:
            if exc_type is None and not handle.lost:
                raise
        if exc_type is None and handle.lost:
            raise LockLostError(_native.vk_strerror(_native.VK_ERR_LOCK_LOST))
        return None


def _timeout_error():
    from .errors import TimeoutError as VkTimeoutError
    # The blocking lock()'s text for its deadline.
    return VkTimeoutError("%s: context deadline exceeded" % _native.vk_strerror(_native.VK_ERR_TIMEOUT))


class LockManager:
    """Distributed locks over one asyncio client, or over several for a
    Redlock quorum (``LockManager([c1, c2, c3])``). The same keys, values
    and rules as vkclient.LockManager: an async holder excludes blocking
    holders in every language. Waiting between tries yields to the loop.
    The native manager is made on the first call, on the clients' loop."""

    __slots__ = ("_clients", "_native_core", "__weakref__")

    def __init__(self, client):
        clients = tuple(client) if isinstance(client, (list, tuple)) else (client,)
        for c in clients:
            if c is not None and not isinstance(c, _native.AsyncClientCore):
                raise TypeError("LockManager takes a vkclient.asyncio.Client or a list of them, "
                                "not %s" % type(c).__name__)
        self._clients = clients
        self._native_core = None

    def _core(self):
        core = self._native_core
        if core is None:
            core = self._native_core = _native.AsyncLockManagerCore(self._clients)
        return core

    async def _acquire(self, key, native_options):
        return LockHandle(await self._core().acquire(key, native_options), self)

    async def try_lock(self, key):
        """One attempt with the default expiry: a LockHandle, or None when the
        lock is busy. Network problems raise."""
        native = await self._core().try_lock(key)
        return LockHandle(native, self) if native is not None else None

    async def with_lock(self, key, fn):
        """Acquires `key` (default options), awaits fn() and releases the lock,
        also when fn raises. Returns fn()'s result. An Exception from fn
        becomes LockFunctionError("distributed lock: function execution:
        <str(exc)>") raised from it; cancellation passes unchanged."""
        return await self._with_lock(key, None, fn)

    async def with_lock_options(self, key, options, fn):
        """with_lock with explicit LockOptions."""
        if not isinstance(options, LockOptions):
            raise TypeError("options must be a vkclient.LockOptions, not %s"
                            % type(options).__name__)
        return await self._with_lock(key, options, fn)

    async def _with_lock(self, key, options, fn):
        if fn is None:
            raise _nil_lock_fn()
        if not callable(fn):
            raise TypeError("lock function must be callable, not %s" % type(fn).__name__)
        span = _LockSpan(self._clients, key)
        try:
            result = await self._with_lock_traced(key, options, fn, span)
        except BaseException as exc:
            span.end(exc)
            raise
        span.end(None)
        return result

    async def _with_lock_traced(self, key, options, fn, span):
        native = options._as_native() if options is not None else None
        try:
            handle = await self._acquire(key, native)
        except Exception as exc:
            span.outcome = "contended" if _is_contended(exc) else "error"
            raise
        span.outcome = "released"
        renew = options is not None and options.auto_renew
        try:
            result = fn()
            if hasattr(result, "__await__"):
                result = await result
        except Exception as exc:
            await _release_quietly(handle)
            raise _native.async_lock_function_error(exc) from exc
        except BaseException:
            await _release_quietly(handle)
            raise
        lost = renew and handle.lost
        try:
            await handle.unlock()
        except LockNotHeldError:
            if not lost:
                raise
        if lost:
            span.outcome = "lost"
            raise LockLostError(_native.vk_strerror(_native.VK_ERR_LOCK_LOST))
        return result

    def lock(self, key, options=None, timeout=None, auto_renew=False):
        """An async context manager: ``async with locks.lock("k") as handle:``.

        Acquires with retries per `options` (default LockOptions()), waiting
        at most `timeout` seconds overall (TimeoutError); auto_renew=True
        (or options.auto_renew) extends the lock every expiry/3 while the
        block runs. Released on exit; if renewal failed meanwhile
        (``handle.lost``), a block that ended normally raises LockLostError."""
        if options is not None and not isinstance(options, LockOptions):
            raise TypeError("options must be a vkclient.LockOptions, not %s"
                            % type(options).__name__)
        return _HeldLock(self, key, options, timeout, auto_renew)

    def __repr__(self):
        return "<vkclient.asyncio.LockManager nodes=%d>" % (len(self._clients),)


def _is_contended(exc):
    return str(exc).endswith(": lock already taken")


class _LockSpan:
    """The "redis.lock.with_lock" span of an async with_lock, which runs
    here rather than in the core: the same name and attributes as the
    blocking one's, less the attempts, which the core does not report to
    an async caller. The tracer of the first client's config; none: no-op.
    A tracer that raises is reported as an unraisable exception."""

    __slots__ = ("tracer", "span", "outcome")

    def __init__(self, clients, key):
        self.tracer = None
        self.span = None
        self.outcome = "error"
        config = getattr(clients[0], "config", None) if clients else None
        tracer = getattr(config, "tracer", None)
        if tracer is None:
            return
        text = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        try:
            self.span = tracer.start_span("redis.lock.with_lock", None,
                                          {"db.system": "redis", "redis.lock.key": text},
                                          _time.time_ns())
            self.tracer = tracer
        except Exception:
            _report_unraisable(tracer)

    def end(self, exc):
        """Ends the span: exc None, or what with_lock raises. The outcome
        stays "released" when the function raised after the lock was
        taken, as in the core."""
        if self.tracer is None:
            return
        error = None if exc is None else (str(exc) or type(exc).__name__)
        try:
            self.tracer.end_span(self.span, error, {"redis.lock.outcome": self.outcome},
                                 _time.time_ns())
        except Exception:
            _report_unraisable(self.tracer)


def _report_unraisable(obj):
    """The tracer's exception, as the C trampolines report theirs."""
    exc_type, exc, tb = _sys.exc_info()
    _sys.unraisablehook(_types.SimpleNamespace(
        exc_type=exc_type, exc_value=exc, exc_traceback=tb,
        err_msg="Exception ignored in the vkclient tracer", object=obj))


async def _release_quietly(handle):
    """The release after fn raised: fn's exception is the one to report."""
    try:
        await _asyncio.shield(handle.unlock())
    except Exception:
        pass


def _nil_lock_fn():
    from .errors import NilLockFnError
    return NilLockFnError(_native.vk_strerror(_native.VK_ERR_NIL_LOCK_FN))
