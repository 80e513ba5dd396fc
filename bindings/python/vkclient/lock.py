"""The distributed lock (Redlock over one node or a quorum of nodes).

The algorithm is the core's; this module gives it Python's shapes: a
context manager, exceptions, seconds as floats. The key/value protocol is
the same in every language, so a Python holder excludes a C, Lua or Ruby
contender on the same key.
"""

import warnings

from . import _native
from .config import to_ms
from .errors import LockLostError, LockNotHeldError

__all__ = ["LockOptions", "LockHandle", "LockManager"]


class LockOptions:
    """How a lock is taken. None means the core's default:

    expiry 10 s (> 0), tries 3 (1..1000), retry_delay 0.5 s (>= 0),
    drift_factor 0.01 (in [0, 1)), auto_renew False (keep the lock alive
    while it is held: during a with_lock function or a ``lock()`` block,
    extending it every third of its expiry). Durations in seconds or timedelta.
    Invalid values are reported by the core when the options are used (or
    by validate()) with the exact texts, e.g. LockTriesInvalidError("lock
    tries must be at least 1").
    """

    __slots__ = ("expiry", "tries", "retry_delay", "drift_factor", "auto_renew")

    def __init__(self, expiry=None, tries=None, retry_delay=None, drift_factor=None,
                 auto_renew=False):
        self.expiry = _DEFAULTS.expiry if expiry is None else expiry
        self.tries = _DEFAULTS.tries if tries is None else tries
        self.retry_delay = _DEFAULTS.retry_delay if retry_delay is None else retry_delay
        self.drift_factor = _DEFAULTS.drift_factor if drift_factor is None else drift_factor
        self.auto_renew = auto_renew

    @classmethod
    def _from_native(cls, values):
        expiry_ms, tries, retry_delay_ms, drift_factor, auto_renew = values
        opts = object.__new__(cls)
        opts.expiry = expiry_ms / 1000.0
        opts.tries = tries
        opts.retry_delay = retry_delay_ms / 1000.0
        opts.drift_factor = drift_factor
        opts.auto_renew = auto_renew
        return opts

    @classmethod
    def default(cls):
        """The defaults: expiry 10 s, 3 tries, 0.5 s apart, drift factor 0.01."""
        return cls._from_native(_native.lock_options_default())

    @classmethod
    def rate_limiter(cls):
        """For short, fast critical sections: expiry 2 s, 2 tries, 0.1 s apart."""
        return cls._from_native(_native.lock_options_rate_limiter())

    def _as_native(self):
        if isinstance(self.tries, bool) or not isinstance(self.tries, int):
            raise TypeError("tries must be an int, not %s" % type(self.tries).__name__)
        if not -2**31 <= self.tries < 2**31:
            raise ValueError("tries must fit in a 32-bit int, got %d" % self.tries)
        drift = self.drift_factor
        if isinstance(drift, bool) or not isinstance(drift, (int, float)):
            raise TypeError("drift_factor must be a float, not %s" % type(drift).__name__)
        return (to_ms(self.expiry, "expiry"), self.tries, to_ms(self.retry_delay, "retry_delay"),
                float(drift), bool(self.auto_renew))

    def validate(self):
        """Raises the matching error when an option breaks the rules."""
        _native.vk_lock_options_validate(self._as_native())

    def __eq__(self, other):
        if not isinstance(other, LockOptions):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __repr__(self):
        return "LockOptions(%s)" % ", ".join("%s=%r" % (k, getattr(self, k))
                                             for k in self.__slots__)


_DEFAULTS = LockOptions.default()


class _HandleView:
    """What every lock handle reads without the network (blocking and
    asyncio): validity, fencing token, key, lost; and its release."""

    __slots__ = ("_lock", "_manager", "__weakref__")
    _free = None          # how the native handle is released
    _repr_name = None

    def __init__(self, native_lock, manager):
        self._lock = native_lock
        self._manager = manager

    @property
    def validity(self):
        """Remaining validity in seconds (0.0 once expired or released)."""
        return _native.vk_lock_validity_ms(self._lock) / 1000.0

    @property
    def fencing_token(self):
        """Strictly increasing per key across every holder: pass it to storage."""
        return _native.vk_lock_fencing_token(self._lock)

    @property
    def key(self):
        """The lock key (str; bytes when it is not valid UTF-8)."""
        raw = _native.lock_key(self._lock)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw

    @property
    def lost(self):
        """True when automatic renewal failed and the lock can no longer be trusted."""
        return bool(_native.vk_lock_is_lost(self._lock))

    def __del__(self):
        lock = getattr(self, "_lock", None)
        self._lock = None
        if lock is not None and _native is not None:
            type(self)._free(lock)

    def __repr__(self):
        return "<%s key=%r fencing_token=%d validity=%.3fs>" % (
            self._repr_name, self.key, self.fencing_token, self.validity)


class LockHandle(_HandleView):
    """A held lock. Release it with unlock() (or use LockManager.lock(...) as a
    context manager). The handle stays usable after unlock: validity is
    then 0, and unlocking again raises LockNotHeldError."""

    __slots__ = ()
    _free = staticmethod(_native.vk_lock_free)
    _repr_name = "vkclient.LockHandle"

    def unlock(self):
        """Releases the lock (compare-and-delete: only if it is still ours).
        Raises LockNotHeldError when it expired or was taken over."""
        _native.vk_lock_unlock(self._lock, None)

    def extend(self, expiry):
        """Resets the expiry to `expiry` seconds, only while the lock is still ours."""
        _native.vk_lock_extend(self._lock, None, to_ms(expiry, "expiry"))


class _HeldLock:
    """The context manager returned by LockManager.lock()."""

    __slots__ = ("_manager", "_key", "_options", "_timeout", "_auto_renew", "_handle")

    def __init__(self, manager, key, options, timeout, auto_renew):
        self._manager = manager
        self._key = key
        self._options = options
        self._timeout = timeout
        self._auto_renew = auto_renew
        self._handle = None

    def __enter__(self):
        options = self._options if self._options is not None else LockOptions.default()
        timeout_ms = None if self._timeout is None else to_ms(self._timeout, "timeout")
        native = _native.acquire(self._manager._native(), self._key, options._as_native(),
                                 timeout_ms)
        self._handle = LockHandle(native, self._manager)
        if self._auto_renew and not options.auto_renew:
            try:
                _native.vk_lock_auto_renew(native)
            except BaseException:
                self._handle.unlock()
                raise
        return self._handle

    def __exit__(self, exc_type, exc, tb):
        handle = self._handle
        try:
            handle.unlock()   # stops the renewal first
        except LockNotHeldError:
            # The body's own exception matters more than the late release,
            # and a lost lock is reported as such below.
            if exc_type is None and not handle.lost:
                raise
        if exc_type is None and handle.lost:
            raise _lock_lost()
        return None


class LockManager:
    """Distributed locks over one client, or over several independent clients
    for a Redlock quorum (``LockManager([c1, c2, c3])``: a majority must
    agree). Thread-safe; survives reconnects and token refreshes."""

    __slots__ = ("_manager", "_clients", "__weakref__")

    def __init__(self, client):
        self._manager = None
        for c in client if isinstance(client, (list, tuple)) else (client,):
            if c is not None and not isinstance(c, _native.ClientCore):
                raise TypeError("LockManager takes a vkclient.Client or a list of them, not %s"
                                % type(c).__name__)
        if isinstance(client, (list, tuple)):
            self._clients = tuple(client)
            pointers = [c._pointer() if c is not None else None for c in self._clients]
            self._manager = _native.vk_lock_manager_new_quorum(pointers)
        else:
            self._clients = (client,)
            self._manager = _native.vk_lock_manager_new(
                client._pointer() if client is not None else None)

    def _native(self):
        return self._manager

    def with_lock(self, key, fn):
        """Acquires `key` with the default options, runs fn() and releases the
        lock, also when fn raises. Returns fn()'s result. An Exception raised
        by fn becomes LockFunctionError("distributed lock: function
        execution: <str(exc)>") raised from it (``__cause__`` is fn's
        exception); KeyboardInterrupt and SystemExit pass unchanged. Ctrl-C
        stops the wait for the lock."""
        return _native.with_lock(self._manager, key, None, fn, None)

    def with_lock_options(self, key, options, fn):
        """with_lock with explicit LockOptions."""
        return _native.with_lock(self._manager, key, _options(options), fn, None)

    def try_lock(self, key):
        """One attempt with the default expiry: a LockHandle, or None when the
        lock is busy. Network problems raise."""
        native = _native.try_lock(self._manager, key)
        return LockHandle(native, self) if native is not None else None

    def lock(self, key, options=None, timeout=None, auto_renew=False):
        """A context manager: ``with locks.lock("k") as handle: ...``.

        Acquires with retries per `options` (default LockOptions()), waiting
        at most `timeout` seconds overall (TimeoutError); auto_renew=True
        (or options.auto_renew) extends the lock every expiry/3 while the
        block runs. Released on exit; if renewal failed meanwhile
        (``handle.lost``), a block that ended normally raises
        LockLostError."""
        if options is not None and not isinstance(options, LockOptions):
            raise TypeError("options must be a vkclient.LockOptions, not %s"
                            % type(options).__name__)
        return _HeldLock(self, key, options, timeout, auto_renew)

    def unlock(self, handle):
        """Deprecated: use handle.unlock()."""
        warnings.warn("LockManager.unlock() is deprecated; use LockHandle.unlock()",
                      DeprecationWarning, stacklevel=2)
        if handle is None:
            raise _nil_handle_on_unlock()
        if not isinstance(handle, LockHandle):
            raise TypeError("handle must be a vkclient.LockHandle, not %s" % type(handle).__name__)
        handle.unlock()

    def close(self):
        """Releases the native manager (also done when it is garbage collected)."""
        manager = getattr(self, "_manager", None)
        self._manager = None
        if manager is not None and _native is not None:
            _native.vk_lock_manager_free(manager)

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()

    def __repr__(self):
        return "<vkclient.LockManager nodes=%d>" % (len(self._clients),)


def _options(options):
    if options is None:
        return None
    if not isinstance(options, LockOptions):
        raise TypeError("options must be a vkclient.LockOptions, not %s" % type(options).__name__)
    return options._as_native()


def _lock_lost():
    return LockLostError(_native.vk_strerror(_native.VK_ERR_LOCK_LOST))


def _nil_handle_on_unlock():
    from .errors import NilLockHandleOnUnlockError
    return NilLockHandleOnUnlockError(
        _native.vk_strerror(_native.VK_ERR_NIL_LOCK_HANDLE_ON_UNLOCK))
