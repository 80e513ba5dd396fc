"""vkclient: a Redis/Valkey client with topology, TLS, IAM auth and a
distributed lock, over the vkclient C core.

    import vkclient

    cfg = vkclient.Config(standalone=vkclient.Standalone("127.0.0.1:6379"))
    with vkclient.Client(cfg) as client:
        client.set("greeting", "hello")
        client.get("greeting")                      # b'hello'
        locks = vkclient.LockManager(client)
        locks.with_lock("lock:user:1", lambda: client.execute("INCR", "n"))

See help(vkclient.Client), help(vkclient.LockManager) and vkclient.errors.
"""

from . import _native
from ._sinks import log_sink as _log_sink
from .client import Client, Pipeline, Session, Status
from .config import (
    GCPIAM, TLS, TLS1_0, TLS1_1, TLS1_2, TLS1_3, Cluster, Config, ConnectionOptions, Sentinel,
    Standalone, StaticPassword,
)
from .errors import (
    AuthenticationError, CancelledError, CommandNotAllowedError, ConnectionError,
    EmptyLockKeyError, Error,
    IAMError, InvalidArgumentError, InvalidConfigError, LockAcquireError,
    LockDriftFactorInvalidError, LockExpiryInvalidError, LockFunctionError, LockLostError,
    LockNotHeldError, LockNotInitializedError, LockRetryDelayNegativeError,
    LockTriesExceededError, LockTriesInvalidError, NilClientError, NilLockFnError,
    NilLockHandleError, NilLockHandleOnUnlockError, NilLockManagerError, OutOfMemoryError,
    PoolTimeoutError, ProtocolError, ReconnectRateLimitedError, ResponseError, TimeoutError,
    TLSError, WatchError,
)
from .lock import LockHandle, LockManager, LockOptions
from .script import Script

__version__ = _native.vk_version()


def set_package_logger(logger):
    """Sets the process-wide logger used for diagnostics of misuse (e.g. a
    lock manager created without a client): a logging.Logger, a
    callable(level, message, fields), or None for the no-op logger. Raises
    OutOfMemoryError when the logger cannot be stored (the previous one
    stays)."""
    _native.vk_set_package_logger(_log_sink(logger))


def hiredis_version():
    """The version of hiredis the core was built against, e.g. "0.14.1"."""
    return _native.vk_hiredis_version()


def resp3_supported():
    """True when this build can speak RESP3 (ConnectionOptions(protocol=3))."""
    return bool(_native.vk_resp3_supported())


__all__ = [
    "Client", "Pipeline", "Session", "Status", "Script", "Config", "Standalone", "Sentinel",
    "Cluster", "TLS",
    "StaticPassword", "GCPIAM", "ConnectionOptions", "TLS1_0", "TLS1_1", "TLS1_2", "TLS1_3",
    "LockManager", "LockHandle", "LockOptions", "set_package_logger", "hiredis_version",
    "resp3_supported", "Error", "NilClientError", "InvalidConfigError", "NilLockHandleError",
    "LockNotHeldError", "NilLockManagerError", "LockNotInitializedError", "NilLockFnError",
    "EmptyLockKeyError", "LockExpiryInvalidError", "LockTriesInvalidError",
    "LockTriesExceededError", "LockRetryDelayNegativeError", "LockDriftFactorInvalidError",
    "NilLockHandleOnUnlockError", "LockAcquireError", "LockFunctionError", "ConnectionError",
    "TimeoutError", "PoolTimeoutError", "ReconnectRateLimitedError", "AuthenticationError",
    "TLSError", "IAMError", "ProtocolError", "OutOfMemoryError", "InvalidArgumentError",
    "CancelledError", "ResponseError", "LockLostError", "CommandNotAllowedError",
    "WatchError",
]
