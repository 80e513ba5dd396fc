"""The client and its pipelines.

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

__all__ = ["Client", "Pipeline", "Status"]


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

    def pipeline(self):
        """A new Pipeline: queue commands with .execute(...), send them with .run()."""
        return Pipeline(self)

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

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        return None

    def __repr__(self):
        return "<vkclient.Pipeline queued=%d>" % (len(self),)
