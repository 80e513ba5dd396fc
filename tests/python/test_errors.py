"""Every error class: its code, its builtin base, and the exact text of the
behaviour contract, each produced by a real call."""

import builtins
import signal
import threading

import pytest

import vkclient
from vkclient import _native

from conftest import Env, plain_config

# class -> (C code, builtin base or None)
CLASSES = {
    vkclient.NilClientError: (_native.VK_ERR_NIL_CLIENT, None),
    vkclient.InvalidConfigError: (_native.VK_ERR_INVALID_CONFIG, ValueError),
    vkclient.NilLockHandleError: (_native.VK_ERR_NIL_LOCK_HANDLE, ValueError),
    vkclient.LockNotHeldError: (_native.VK_ERR_LOCK_NOT_HELD, None),
    vkclient.NilLockManagerError: (_native.VK_ERR_NIL_LOCK_MANAGER, ValueError),
    vkclient.LockNotInitializedError: (_native.VK_ERR_LOCK_NOT_INITIALIZED, ValueError),
    vkclient.NilLockFnError: (_native.VK_ERR_NIL_LOCK_FN, ValueError),
    vkclient.EmptyLockKeyError: (_native.VK_ERR_EMPTY_LOCK_KEY, ValueError),
    vkclient.LockExpiryInvalidError: (_native.VK_ERR_LOCK_EXPIRY_INVALID, ValueError),
    vkclient.LockTriesInvalidError: (_native.VK_ERR_LOCK_TRIES_INVALID, ValueError),
    vkclient.LockTriesExceededError: (_native.VK_ERR_LOCK_TRIES_EXCEEDED, ValueError),
    vkclient.LockRetryDelayNegativeError: (_native.VK_ERR_LOCK_RETRY_DELAY_NEGATIVE, ValueError),
    vkclient.LockDriftFactorInvalidError: (_native.VK_ERR_LOCK_DRIFT_FACTOR_INVALID, ValueError),
    vkclient.NilLockHandleOnUnlockError: (_native.VK_ERR_NIL_LOCK_HANDLE_ON_UNLOCK, ValueError),
    vkclient.LockAcquireError: (_native.VK_ERR_LOCK_ACQUIRE, None),
    vkclient.LockFunctionError: (_native.VK_ERR_LOCK_FN, None),
    vkclient.ConnectionError: (_native.VK_ERR_IO, builtins.ConnectionError),
    vkclient.TimeoutError: (_native.VK_ERR_TIMEOUT, builtins.TimeoutError),
    vkclient.PoolTimeoutError: (_native.VK_ERR_POOL_TIMEOUT, builtins.TimeoutError),
    vkclient.ReconnectRateLimitedError: (_native.VK_ERR_RECONNECT_RATE_LIMITED,
                                         builtins.ConnectionError),
    vkclient.AuthenticationError: (_native.VK_ERR_AUTH, builtins.ConnectionError),
    vkclient.TLSError: (_native.VK_ERR_TLS, builtins.ConnectionError),
    vkclient.IAMError: (_native.VK_ERR_IAM, None),
    vkclient.ProtocolError: (_native.VK_ERR_PROTOCOL, None),
    vkclient.OutOfMemoryError: (_native.VK_ERR_NO_MEMORY, MemoryError),
    vkclient.InvalidArgumentError: (_native.VK_ERR_INVALID_ARGUMENT, ValueError),
    vkclient.CancelledError: (_native.VK_ERR_CANCELLED, None),
    vkclient.ResponseError: (_native.VK_ERR_SERVER, None),
    vkclient.LockLostError: (_native.VK_ERR_LOCK_LOST, None),
    vkclient.CommandNotAllowedError: (_native.VK_ERR_COMMAND_NOT_ALLOWED, ValueError),
    vkclient.WatchError: (_native.VK_ERR_WATCH_CONFLICT, None),
}


@pytest.mark.parametrize("cls", list(CLASSES), ids=lambda c: c.__name__)
def test_class_code_and_bases(cls):
    code, builtin = CLASSES[cls]
    assert cls.code == code
    assert issubclass(cls, vkclient.Error)
    if builtin is not None:
        assert issubclass(cls, builtin)
    # Raised with a message, str() is the message and .code the code.
    err = cls("some text")
    assert str(err) == "some text"
    assert err.code == code


def test_every_core_code_has_its_own_class():
    codes = {getattr(_native, name) for name in dir(_native)
             if name.startswith("VK_ERR_")}
    assert codes == {code for code, _ in CLASSES.values()}


def test_contract_texts_match_the_core():
    # The fixed texts of SEMANTICS, as the core reports them.
    expected = {
        _native.VK_ERR_NIL_CLIENT: "redis client is nil",
        _native.VK_ERR_INVALID_CONFIG: "invalid redis config",
        _native.VK_ERR_NIL_LOCK_HANDLE: "lock handle is nil or not initialized",
        _native.VK_ERR_LOCK_NOT_HELD: "lock was not held or already expired",
        _native.VK_ERR_NIL_LOCK_MANAGER: "lock manager is nil",
        _native.VK_ERR_LOCK_NOT_INITIALIZED: "distributed lock is not initialized",
        _native.VK_ERR_NIL_LOCK_FN: "lock function is nil",
        _native.VK_ERR_EMPTY_LOCK_KEY: "lock key cannot be empty",
        _native.VK_ERR_LOCK_EXPIRY_INVALID: "lock expiry must be greater than 0",
        _native.VK_ERR_LOCK_TRIES_INVALID: "lock tries must be at least 1",
        _native.VK_ERR_LOCK_TRIES_EXCEEDED: "lock tries exceeds maximum",
        _native.VK_ERR_LOCK_RETRY_DELAY_NEGATIVE: "lock retry delay cannot be negative",
        _native.VK_ERR_LOCK_DRIFT_FACTOR_INVALID:
            "lock drift factor must be between 0 (inclusive) and 1 (exclusive)",
        _native.VK_ERR_NIL_LOCK_HANDLE_ON_UNLOCK: "lock handle is nil",
    }
    for code, text in expected.items():
        assert _native.vk_strerror(code) == text


def check(cls, text, call):
    with pytest.raises(cls) as info:
        call()
    assert type(info.value) is cls
    assert str(info.value) == text
    return info.value


def test_nil_client():
    never_opened = vkclient.Client.__new__(vkclient.Client)
    check(vkclient.NilClientError, "redis client is nil", lambda: never_opened.get("k"))
    check(vkclient.NilClientError, "redis client is nil", lambda: vkclient.LockManager(None))
    check(vkclient.NilClientError, "redis client is nil",
          lambda: vkclient.LockManager(never_opened))


def test_invalid_config():
    err = check(vkclient.InvalidConfigError,
                "invalid redis config: standalone address is required",
                lambda: vkclient.Client(plain_config(" ")))
    assert isinstance(err, ValueError)


def test_lock_errors(client, key):
    locks = vkclient.LockManager(client)
    check(vkclient.NilLockHandleError, "lock handle is nil or not initialized",
          lambda: vkclient.LockHandle(None, locks).unlock())
    check(vkclient.NilLockFnError, "lock function is nil", lambda: locks.with_lock(key, None))
    check(vkclient.EmptyLockKeyError, "lock key cannot be empty", lambda: locks.try_lock(" \t"))
    check(vkclient.NilLockHandleOnUnlockError, "lock handle is nil",
          lambda: pytest.deprecated_call(locks.unlock, None))
    check(vkclient.LockNotInitializedError, "distributed lock is not initialized",
          lambda: vkclient.LockManager([]))

    handle = locks.try_lock(key)
    check(vkclient.LockAcquireError, 'failed to acquire lock "%s": lock already taken' % key,
          lambda: locks.with_lock_options(key, vkclient.LockOptions(tries=1), lambda: None))
    handle.unlock()
    check(vkclient.LockNotHeldError, "lock was not held or already expired", handle.unlock)

    locks.close()
    check(vkclient.NilLockManagerError, "lock manager is nil", lambda: locks.try_lock(key))


@pytest.mark.parametrize("options,cls,text", [
    (dict(expiry=0), vkclient.LockExpiryInvalidError, "lock expiry must be greater than 0"),
    (dict(expiry=-1.5), vkclient.LockExpiryInvalidError, "lock expiry must be greater than 0"),
    (dict(tries=0), vkclient.LockTriesInvalidError, "lock tries must be at least 1"),
    (dict(tries=1001), vkclient.LockTriesExceededError, "lock tries exceeds maximum"),
    (dict(retry_delay=-0.1), vkclient.LockRetryDelayNegativeError,
     "lock retry delay cannot be negative"),
    (dict(drift_factor=1.0), vkclient.LockDriftFactorInvalidError,
     "lock drift factor must be between 0 (inclusive) and 1 (exclusive)"),
    (dict(drift_factor=-0.01), vkclient.LockDriftFactorInvalidError,
     "lock drift factor must be between 0 (inclusive) and 1 (exclusive)"),
])
def test_lock_option_errors(client, key, options, cls, text):
    opts = vkclient.LockOptions(**options)
    check(cls, text, opts.validate)
    locks = vkclient.LockManager(client)
    ran = []
    check(cls, text, lambda: locks.with_lock_options(key, opts, lambda: ran.append(1)))
    check(cls, text, lambda: locks.lock(key, options=opts).__enter__())
    assert ran == []


def test_connection_refused(harness):
    address = "127.0.0.1:%d" % harness.free_port()
    err = check(vkclient.ConnectionError,
                "connection error: dial %s: Connection refused" % address,
                lambda: vkclient.Client(plain_config(address)))
    assert isinstance(err, builtins.ConnectionError)


def test_authentication_failed(env):
    cfg = plain_config(env.acl_addr, static_password=vkclient.StaticPassword("wrong"))
    with pytest.raises(vkclient.AuthenticationError) as info:
        vkclient.Client(cfg)
    assert str(info.value).startswith("authentication failed: WRONGPASS")
    assert "wrong" not in str(info.value)


def test_tls_wrong_ca(env):
    cfg = plain_config(env.tls_addr, tls=vkclient.TLS(env.other_ca_b64))
    with pytest.raises(vkclient.TLSError) as info:
        vkclient.Client(cfg)
    assert str(info.value).startswith("TLS error: handshake with %s failed: " % env.tls_addr)
    assert "certificate verify failed" in str(info.value)


def test_timeout_on_a_stopped_server(own_server):
    cfg = plain_config(own_server.address, options=vkclient.ConnectionOptions(
        read_timeout=0.2, max_retries=-1))
    with vkclient.Client(cfg) as c:
        import os
        os.kill(own_server.pid, signal.SIGSTOP)
        try:
            with pytest.raises(vkclient.TimeoutError) as info:
                c.execute("SET", "k", "v")
        finally:
            os.kill(own_server.pid, signal.SIGCONT)
    assert isinstance(info.value, builtins.TimeoutError)
    assert str(info.value) == _native.vk_last_error()
    assert str(info.value).startswith("i/o timeout")


def test_pool_timeout(env, key):
    cfg = plain_config(options=vkclient.ConnectionOptions(pool_size=1, pool_timeout=0.2))
    with vkclient.Client(cfg) as c:
        blocked = threading.Thread(target=c.execute, args=("BLPOP", key, 2))
        blocked.start()
        try:
            waiter = vkclient.Client(plain_config())
            _wait_for_blocked(waiter, 1)
            with pytest.raises(vkclient.PoolTimeoutError) as info:
                c.get(key)
            assert str(info.value).startswith("connection pool timeout")
        finally:
            waiter.execute("LPUSH", key, "x")
            blocked.join()


def _wait_for_blocked(client, n):
    import time
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        info = client.execute("INFO", "clients").decode()
        fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        if int(fields["blocked_clients"]) >= n:
            return
        time.sleep(0.01)
    raise AssertionError("the server never saw %d blocked clients" % n)


def test_reconnect_rate_limited(own_server):
    cfg = plain_config(own_server.address, options=vkclient.ConnectionOptions(
        max_retries=-1, dial_timeout=0.5))
    with vkclient.Client(cfg) as c:
        own_server.kill()
        seen = set()
        for _ in range(200):
            try:
                c.ping()
            except vkclient.ReconnectRateLimitedError as err:
                assert str(err).startswith("redis reconnect: rate-limited (next attempt in ")
                assert str(err).endswith(")")
                assert isinstance(err, builtins.ConnectionError)
                break
            except vkclient.ConnectionError as err:
                seen.add(type(err))
        else:
            raise AssertionError("no rate-limited reconnect within 200 attempts")
        assert vkclient.ConnectionError in seen


def test_response_error(client):
    err = check(vkclient.ResponseError,
                "ERR unknown command 'NO-SUCH-COMMAND', with args beginning with: ",
                lambda: client.execute("NO-SUCH-COMMAND"))
    assert err.code == _native.VK_ERR_SERVER


def test_iam_error_without_a_token_endpoint(env, harness, tmp_path):
    import base64
    import fake_google
    key = fake_google.make_test_key(str(tmp_path))
    token_uri = "http://127.0.0.1:%d/token" % harness.free_port()
    credentials = base64.b64encode(fake_google.key_json(key, token_uri).encode()).decode()
    cfg = plain_config(env.tls_addr, tls=vkclient.TLS(env.ca_b64),
                       gcp_iam=vkclient.GCPIAM(credentials_base64=credentials,
                                               service_account="sa@example.test",
                                               refresh_operation_timeout=2.0))
    with pytest.raises(vkclient.IAMError) as info:
        vkclient.Client(cfg)
    assert str(info.value) == _native.vk_last_error()
    assert "PRIVATE KEY" not in str(info.value)


def test_invalid_argument():
    native = _native.vk_config_new()
    try:
        check(vkclient.InvalidArgumentError, "invalid argument: unknown event delivery 7",
              lambda: _native.vk_config_set_event_delivery(native, 7))
    finally:
        _native.vk_config_free(native)


def test_message_is_the_core_last_error(client):
    with pytest.raises(vkclient.ResponseError):
        client.execute("NO-SUCH-COMMAND")
    with pytest.raises(vkclient.InvalidConfigError) as info:
        vkclient.Config().validate()
    assert str(info.value) == _native.vk_last_error()
    assert _native.vk_last_status() == _native.VK_ERR_INVALID_CONFIG
