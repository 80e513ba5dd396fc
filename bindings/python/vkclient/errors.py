"""Exceptions raised by vkclient.

Every failure of the core (a ``vk_status``) is raised as one class per
error of the behaviour contract; ``str(e)`` is the contract's exact text,
with the detail the core adds (``invalid redis config: standalone address is
required``), and ``e.code`` is the numeric status of the C API. Each class
also derives from the matching builtin where one exists, so ``except
ValueError`` / ``except TimeoutError`` / ``except ConnectionError`` work as
Python programmers expect.
"""

import builtins

from . import _native

__all__ = [
    "Error", "NilClientError", "InvalidConfigError", "NilLockHandleError", "LockNotHeldError",
    "NilLockManagerError", "LockNotInitializedError", "NilLockFnError", "EmptyLockKeyError",
    "LockExpiryInvalidError", "LockTriesInvalidError", "LockTriesExceededError",
    "LockRetryDelayNegativeError", "LockDriftFactorInvalidError", "NilLockHandleOnUnlockError",
    "LockAcquireError", "LockFunctionError", "ConnectionError", "TimeoutError",
    "PoolTimeoutError", "ReconnectRateLimitedError", "AuthenticationError", "TLSError",
    "IAMError", "ProtocolError", "OutOfMemoryError", "InvalidArgumentError", "CancelledError",
    "ResponseError", "LockLostError", "CommandNotAllowedError", "WatchError",
]


class Error(Exception):
    """Base class of every vkclient error. ``code`` is the C API's vk_status."""

    code = 0


class NilClientError(Error):
    """redis client is nil: the client was never opened (or is gone)."""

    code = _native.VK_ERR_NIL_CLIENT


class InvalidConfigError(Error, ValueError):
    """invalid redis config: <reason>."""

    code = _native.VK_ERR_INVALID_CONFIG


class NilLockHandleError(Error, ValueError):
    """lock handle is nil or not initialized."""

    code = _native.VK_ERR_NIL_LOCK_HANDLE


class LockNotHeldError(Error):
    """lock was not held or already expired."""

    code = _native.VK_ERR_LOCK_NOT_HELD


class NilLockManagerError(Error, ValueError):
    """lock manager is nil."""

    code = _native.VK_ERR_NIL_LOCK_MANAGER


class LockNotInitializedError(Error, ValueError):
    """distributed lock is not initialized (e.g. a quorum of no clients)."""

    code = _native.VK_ERR_LOCK_NOT_INITIALIZED


class NilLockFnError(Error, ValueError):
    """lock function is nil."""

    code = _native.VK_ERR_NIL_LOCK_FN


class EmptyLockKeyError(Error, ValueError):
    """lock key cannot be empty (empty or whitespace only)."""

    code = _native.VK_ERR_EMPTY_LOCK_KEY


class LockExpiryInvalidError(Error, ValueError):
    """lock expiry must be greater than 0."""

    code = _native.VK_ERR_LOCK_EXPIRY_INVALID


class LockTriesInvalidError(Error, ValueError):
    """lock tries must be at least 1."""

    code = _native.VK_ERR_LOCK_TRIES_INVALID


class LockTriesExceededError(Error, ValueError):
    """lock tries exceeds maximum (1000)."""

    code = _native.VK_ERR_LOCK_TRIES_EXCEEDED


class LockRetryDelayNegativeError(Error, ValueError):
    """lock retry delay cannot be negative."""

    code = _native.VK_ERR_LOCK_RETRY_DELAY_NEGATIVE


class LockDriftFactorInvalidError(Error, ValueError):
    """lock drift factor must be between 0 (inclusive) and 1 (exclusive)."""

    code = _native.VK_ERR_LOCK_DRIFT_FACTOR_INVALID


class NilLockHandleOnUnlockError(Error, ValueError):
    """lock handle is nil (the deprecated LockManager.unlock got None)."""

    code = _native.VK_ERR_NIL_LOCK_HANDLE_ON_UNLOCK


class LockAcquireError(Error):
    """failed to acquire lock "<key>": <cause> (contention after the last try)."""

    code = _native.VK_ERR_LOCK_ACQUIRE


class LockFunctionError(Error):
    """distributed lock: function execution: <cause>.

    Raised by ``with_lock`` when the function raised an Exception, after the
    lock was released; ``__cause__`` is the function's own exception.
    """

    code = _native.VK_ERR_LOCK_FN


class ConnectionError(Error, builtins.ConnectionError):
    """A connection could not be made or broke (also a builtin ConnectionError)."""

    code = _native.VK_ERR_IO


class TimeoutError(Error, builtins.TimeoutError):
    """A read, write, dial or deadline timed out (also a builtin TimeoutError)."""

    code = _native.VK_ERR_TIMEOUT


class PoolTimeoutError(TimeoutError):
    """No pooled connection became free within the pool timeout."""

    code = _native.VK_ERR_POOL_TIMEOUT


class ReconnectRateLimitedError(ConnectionError):
    """redis reconnect: rate-limited (next attempt in <duration>)."""

    code = _native.VK_ERR_RECONNECT_RATE_LIMITED


class AuthenticationError(ConnectionError):
    """The server refused the credentials."""

    code = _native.VK_ERR_AUTH


class TLSError(ConnectionError):
    """TLS handshake or certificate verification failed."""

    code = _native.VK_ERR_TLS


class IAMError(Error):
    """A GCP IAM token could not be obtained."""

    code = _native.VK_ERR_IAM


class ProtocolError(Error):
    """The server sent something that is not valid RESP."""

    code = _native.VK_ERR_PROTOCOL


class OutOfMemoryError(Error, MemoryError):
    """The core ran out of memory."""

    code = _native.VK_ERR_NO_MEMORY


class InvalidArgumentError(Error, ValueError):
    """An argument the core cannot use."""

    code = _native.VK_ERR_INVALID_ARGUMENT


class CancelledError(Error):
    """The operation was cancelled."""

    code = _native.VK_ERR_CANCELLED


class ResponseError(Error):
    """An error reply from the server, e.g. ``ERR unknown command``."""

    code = _native.VK_ERR_SERVER


class LockLostError(Error):
    """Automatic renewal failed: the lock can no longer be trusted."""

    code = _native.VK_ERR_LOCK_LOST


class CommandNotAllowedError(Error, ValueError):
    """A command that would change the state of a pooled connection for its
    next caller (SELECT, MULTI, SUBSCRIBE, ...); nothing was sent."""

    code = _native.VK_ERR_COMMAND_NOT_ALLOWED


class WatchError(Error):
    """transaction aborted: a watched key changed. The EXEC of a transaction
    answered nil because a key WATCHed on the session changed before it;
    nothing of the transaction ran. Client.transaction() retries on it."""

    code = _native.VK_ERR_WATCH_CONFLICT


_native._register_errors(Error, {cls.code: cls for cls in (
    NilClientError, InvalidConfigError, NilLockHandleError, LockNotHeldError,
    NilLockManagerError, LockNotInitializedError, NilLockFnError, EmptyLockKeyError,
    LockExpiryInvalidError, LockTriesInvalidError, LockTriesExceededError,
    LockRetryDelayNegativeError, LockDriftFactorInvalidError, NilLockHandleOnUnlockError,
    LockAcquireError, LockFunctionError, ConnectionError, TimeoutError, PoolTimeoutError,
    ReconnectRateLimitedError, AuthenticationError, TLSError, IAMError, ProtocolError,
    OutOfMemoryError, InvalidArgumentError, CancelledError, ResponseError, LockLostError,
    CommandNotAllowedError, WatchError,
)})
