"""The client, its pipelines and its sessions.

``Client`` and ``Pipeline`` are thin subclasses of native types: their
command methods (execute, get, set, delete, ping, Pipeline.execute/run) are
C functions called directly, with no Python frame in between.
"""

import datetime
import types
from typing import Mapping, NamedTuple, Optional

from . import _native
from .config import Config, build_native
from .script import Script
from .errors import CommandNotAllowedError, WatchError

__all__ = ["Client", "Pipeline", "Session", "Status"]


class Status(NamedTuple):
    """A snapshot of the client's state (not a probe).

    ``mode`` is "standalone", "sentinel" or "cluster". ``master_address`` is
    the node the client talks to (in sentinel mode the master it follows
    now; None in cluster mode), ``master_switches`` the new masters it
    followed. In cluster mode ``nodes`` maps each master of the slot map in
    service to the number of slots it serves; ``slot_map_refreshes``,
    ``moved_redirects`` and ``ask_redirects`` count maps loaded and
    redirects followed.
    """

    connected: bool
    last_refresh_error: Optional[str]
    last_refresh_at: Optional[datetime.datetime]
    refresh_loop_running: bool
    mode: str = "standalone"
    master_address: Optional[str] = None
    master_switches: int = 0
    slot_map_refreshes: int = 0
    moved_redirects: int = 0
    ask_redirects: int = 0
    nodes: Mapping[str, int] = types.MappingProxyType({})



def _status_of(snapshot):
    """A Status from the native snapshot tuple (see Client._snapshot)."""
    (connected, error, at_ms, running, mode, master, switches, refreshes, moved, ask,
     nodes) = snapshot
    at = (datetime.datetime.fromtimestamp(at_ms / 1000.0, tz=datetime.timezone.utc)
          if at_ms else None)
    return Status(connected, error, at, running, mode, master, switches, refreshes, moved,
                  ask, types.MappingProxyType(dict(nodes)))

def _pages(scan):
    """The items of every page of a ScanCore, lazily."""
    while not scan.done():
        yield from scan.next_page()


def _pairs(scan, cast):
    """The (name, value) pairs of HSCAN / ZSCAN pages; cast applied to values."""
    while not scan.done():
        page = scan.next_page()
        for i in range(0, len(page) - 1, 2):
            yield (page[i], page[i + 1] if cast is None else cast(page[i + 1]))


class Client(_native.ClientCore):
    """A Redis/Valkey client: connection handling, pooling, retries, TLS and
    auth are done by the vkclient core.

    ``Client(config)`` normalises and validates the config, connects and
    pings (raising InvalidConfigError or the connection error on failure).
    A client is safe to share between threads; every blocking call releases
    the GIL. After ``fork()`` the child gets its own connections.

    Commands: ``execute(*args)`` runs any command; ``get``, ``set``,
    ``delete`` and ``ping`` are shortcuts; ``scan_iter``, ``hscan_iter``,
    ``sscan_iter`` and ``zscan_iter`` iterate with SCAN and its siblings. Replies: simple strings are str,
    bulk strings bytes, integers int, nil None, arrays list (RESP3: maps
    dict, doubles float, booleans bool); an error reply raises
    ResponseError. ``with Client(cfg) as c:`` closes the client on exit.
    """

    __slots__ = ("config", "__weakref__")

    def __init__(self, config):
        """Normalises and validates `config` (a vkclient.Config), connects and
        pings. Raises InvalidConfigError, or the connection error."""
        native = build_native(config)
        try:
            self._open(native)
        finally:
            _native.vk_config_free(native)
        self.config = config
        attach = getattr(config.metrics, "attach_client", None)
        if attach is not None and getattr(config.metrics, "scrapes_pool_gauges", False):
            attach(self)

    def _report_pool_gauges(self):
        """Reports the pool gauges to the metrics sink now (a sink that
        scrapes them asks for this)."""
        pointer = self._pointer()
        if pointer is not None:   # None once closed
            _native.vk_client_report_pool_gauges(pointer)

    @classmethod
    def from_url(cls, url, tls=None, options=None, logger=None, metrics=None, tracer=None,
                 trace_commands=False):
        """A client for redis://[[user]:password@]host[:port][/db],
        rediss://... (TLS, trusting the system store unless
        tls=TLS(ca_cert_base64=...) or TLS(ca_file=...) gives a CA) or
        unix://[[user]:password@]/path.sock[?db=N]."""
        return cls(Config.from_url(url, tls=tls, options=options, logger=logger,
                                   metrics=metrics, tracer=tracer,
                                   trace_commands=trace_commands))

    def pipeline(self, transaction=False):
        """A new Pipeline: queue commands with .execute(...), send them with .run().

        With transaction=True, run() sends MULTI, the commands and EXEC in
        one write on one connection and returns EXEC's results (in Cluster
        mode every key must hash to one slot)."""
        p = Pipeline(self)
        if transaction:
            p._set_transaction(True)
        return p

    def session(self, key=None):
        """A Session: one pooled connection for the caller alone, for WATCH,
        MULTI/EXEC/DISCARD, SELECT, CLIENT ... (``with client.session() as
        s: s.execute(...)``). In Cluster mode `key` is required: the session
        runs on the master of its hash slot."""
        return Session(self, key)

    def transaction(self, fn, *watch_keys, retries=None, key=None,
                    value_from_callable=False):
        """Optimistic locking, as redis-py's ``Redis.transaction``: opens a
        session, WATCHes `watch_keys`, and calls ``fn(session)``. The session
        runs commands at once (read what the transaction depends on) until
        ``session.multi()``; commands after it are queued, and sent as one
        MULTI ... EXEC when fn returns. When a watched key changed meanwhile
        (WatchError) everything is tried again, up to `retries` more times
        (None: until it succeeds); the last WatchError is raised. Returns
        EXEC's results, or fn's return value with value_from_callable=True.
        In Cluster mode the session goes to the master of `key` (default:
        the first watched key)."""
        if not callable(fn):
            raise TypeError("transaction() needs a callable")
        if retries is not None and retries < 0:
            raise ValueError("retries cannot be negative")
        if key is None and watch_keys:
            key = watch_keys[0]
        attempt = 0
        while True:
            with self.session(key) as s:
                try:
                    if watch_keys:
                        s.watch(*watch_keys)
                    value = fn(s)
                    results = s.run() if s.queued is not None else []
                    return value if value_from_callable else results
                except WatchError:
                    if retries is not None and attempt >= retries:
                        raise
                    attempt += 1

    def register_script(self, script):
        """A Script for the Lua source `script` (str or bytes), run with
        ``script(keys=[...], args=[...])``: EVALSHA, and EVAL when the server
        does not have it yet (see vkclient.script)."""
        return Script(self, script)

    def scan_iter(self, match=None, count=None, _type=None):
        """Yields every key (bytes) of the key space, SCAN page by page;
        match (a glob pattern), count (a page size hint) and _type ("string",
        "hash", ...) are SCAN's MATCH, COUNT and TYPE. A key present for the
        whole iteration is yielded at least once (maybe more than once). In
        cluster mode it walks every master in turn; when the slot map
        changes meanwhile the next page raises ConnectionError (start
        again) rather than skip keys."""
        return _pages(_native.ScanCore(self, "SCAN", None, match, count, _type))

    def hscan_iter(self, name, match=None, count=None):
        """Yields (field, value) pairs of the hash at name (HSCAN)."""
        return _pairs(_native.ScanCore(self, "HSCAN", name, match, count, None), None)

    def sscan_iter(self, name, match=None, count=None):
        """Yields the members of the set at name (SSCAN)."""
        return _pages(_native.ScanCore(self, "SSCAN", name, match, count, None))

    def zscan_iter(self, name, match=None, count=None, score_cast_func=float):
        """Yields (member, score) pairs of the sorted set at name (ZSCAN);
        scores go through score_cast_func (float)."""
        return _pairs(_native.ScanCore(self, "ZSCAN", name, match, count, None),
                      score_cast_func)

    def status(self):
        """A Status snapshot: connection, token refresh and topology state."""
        return _status_of(self._snapshot())

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        """Closes the client (see close())."""
        self.close()

    def __repr__(self):
        return "<vkclient.Client connected=%s>" % (self.is_connected(),)


class Pipeline(_native.PipelineCore):
    """Many commands, one round trip.

    ``p.execute(*args)`` queues a command (and returns the pipeline, so calls
    chain); ``p.run()`` sends them and returns one reply per command, in
    order, with error replies as ResponseError instances in the list.
    ``len(p)`` is the number of queued commands. A pipeline is never retried
    once any of it was written.
    """

    __slots__ = ()

    @property
    def transaction(self):
        """Whether run() sends the commands as one MULTI ... EXEC."""
        return self._is_transaction()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        return None

    def __repr__(self):
        return "<vkclient.Pipeline queued=%d>" % (len(self),)


class Session(_native.SessionCore):
    """One pooled connection pinned to its caller until close(), for the
    commands a shared connection refuses: WATCH, MULTI/EXEC/DISCARD,
    SELECT, CLIENT SETNAME, ... (SUBSCRIBE, MONITOR and CLIENT REPLY stay
    refused: a session reads one reply per command).

    ``execute(*args)`` runs a command at once and returns its reply. After
    ``multi()`` (redis-py's pipeline shape) commands are queued instead, and
    ``run()`` sends them as one MULTI ... EXEC and returns EXEC's results;
    a WATCHed key that changed raises WatchError. MULTI, EXEC and DISCARD
    may also be sent by hand with execute() (an aborted EXEC raises
    WatchError too). ``run_pipeline(p)`` runs a Pipeline of the client on
    the session's connection.

    Nothing is retried on a session: a connection failure (an error, a
    timeout, Ctrl-C during a blocking command) fails it, and later calls
    raise ConnectionError. ``with client.session() as s:`` closes it on
    exit; close() gives the connection back after undoing what the session
    changed (DISCARD, UNWATCH, SELECT back to the configured db), or closes
    the connection when that cannot be done for sure.
    """

    __slots__ = ("_client", "queued")

    def __init__(self, client, key=None):
        self._client = client
        #: The transaction pipeline that multi() started (None: immediate).
        self.queued = None

    def execute(self, *args):
        """Runs the command now, or queues it after multi() (returns the
        session then, so calls chain)."""
        if self.queued is not None:
            self.queued.execute(*args)
            return self
        return self._execute(*args)

    def watch(self, *keys):
        """WATCH keys: a later EXEC on this session aborts (WatchError) if
        any of them changes first."""
        if self.queued is not None:
            raise CommandNotAllowedError("WATCH inside MULTI is not allowed")
        if not keys:
            raise TypeError("watch() needs at least one key")
        return self._execute("WATCH", *keys)

    def unwatch(self):
        """UNWATCH: forgets the watched keys."""
        return self._execute("UNWATCH")

    def multi(self):
        """Starts queueing: later execute() calls are sent by run() as one
        MULTI ... EXEC."""
        if self.queued is not None:
            raise CommandNotAllowedError("MULTI inside MULTI; transactions cannot be nested")
        p = Pipeline(self._client)
        p._set_transaction(True)
        self.queued = p
        return self

    def discard(self):
        """Drops the commands queued since multi() (nothing was sent yet)."""
        self.queued = None

    def run(self):
        """Sends the queued transaction and returns EXEC's results (error
        replies as ResponseError instances in the list). WatchError when a
        watched key changed: nothing of it ran."""
        p = self.queued
        if p is None:
            raise CommandNotAllowedError("run() without multi(): nothing is queued")
        self.queued = None
        return self._run_pipeline(p)

    def run_pipeline(self, pipeline):
        """Runs a Pipeline of the same client on the session's connection."""
        return self._run_pipeline(pipeline)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        """Closes the session (see close())."""
        self.close()

    def __repr__(self):
        return "<vkclient.Session %s>" % ("closed" if self.closed else "open",)
