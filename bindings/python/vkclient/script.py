"""Lua scripts run by digest, as redis-py's ``register_script`` does.

``script = client.register_script(source)`` computes the script's SHA-1
once (``script.sha``); ``script(keys=[...], args=[...])`` runs EVALSHA and,
when the server answers NOSCRIPT (first use on that node, a restart,
SCRIPT FLUSH, a failover), the same call as EVAL, which also caches it.
The fallback is the core's: in a Cluster the keys pick the node, and keys
of different slots raise InvalidArgumentError (CROSSSLOT). A script's own
error (``redis.error_reply``, a failing ``redis.call``) raises
ResponseError. A Script holds no connection: it may be shared between
threads and run on other clients with ``script(..., client=other)``.
"""

from . import _native

__all__ = ["Script", "AsyncScript"]


class _Registered:
    __slots__ = ("registered_client", "script", "_core")
    _client_class = None   # the native client class a subclass runs on

    def __init__(self, registered_client, script):
        self.registered_client = registered_client
        self.script = script
        self._core = _native.ScriptCore(script)

    @property
    def sha(self):
        """The SHA-1 the server names the script by: 40 lower-case hex digits."""
        return self._core.sha

    def _client(self, client):
        client = self.registered_client if client is None else client
        if not isinstance(client, self._client_class):
            raise TypeError("%s runs on a %s, not %s" % (type(self).__name__,
                                                         self._client_class.__name__,
                                                         type(client).__name__))
        return client

    def __repr__(self):
        return "<%s sha=%s>" % (type(self).__name__, self.sha)


class Script(_Registered):
    """A script registered with a vkclient.Client (see the module)."""

    __slots__ = ()
    _client_class = _native.ClientCore

    def __call__(self, keys=(), args=(), client=None):
        """Runs the script with KEYS = keys and ARGV = args (bytes, str, int
        or float) and returns its reply."""
        return self._client(client)._run_script(self._core, keys, args)


class AsyncScript(_Registered):
    """A script registered with a vkclient.asyncio.Client; calling it
    returns an awaitable of the reply."""

    __slots__ = ()
    _client_class = _native.AsyncClientCore

    def __call__(self, keys=(), args=(), client=None):
        """Queues the run at once and returns an awaitable of its reply."""
        return self._client(client)._run_script(self._core, keys, args)
