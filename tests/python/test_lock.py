"""The distributed lock from Python: every method, options, handles,
exceptions through with_lock, Ctrl-C, quorum, renewal."""

import datetime
import os
import signal
import threading
import time

import pytest

import vkclient

from conftest import plain_config, wait_until


@pytest.fixture
def locks(client):
    manager = vkclient.LockManager(client)
    yield manager
    manager.close()


def test_with_lock_returns_the_result_and_releases(locks, client, key):
    def critical():
        # Held while fn runs: nobody else gets it.
        assert locks.try_lock(key) is None
        return "result"

    assert locks.with_lock(key, critical) == "result"
    handle = locks.try_lock(key)
    assert handle is not None
    handle.unlock()


class CustomError(Exception):
    pass


def test_exception_in_fn_is_wrapped_after_release(locks, key):
    raised = CustomError("from fn")

    def failing():
        raise raised

    with pytest.raises(vkclient.LockFunctionError) as info:
        locks.with_lock(key, failing)
    assert str(info.value) == "distributed lock: function execution: from fn"
    assert info.value.code == vkclient.LockFunctionError.code
    # raise ... from fn's exception: the original, with its traceback.
    assert info.value.__cause__ is raised
    assert info.value.__suppress_context__
    assert raised.__traceback__ is not None
    handle = locks.try_lock(key)  # released despite the exception
    assert handle is not None
    handle.unlock()

    with pytest.raises(vkclient.LockFunctionError) as info:
        locks.with_lock_options(key, vkclient.LockOptions(), lambda: {}["missing"])
    assert str(info.value) == "distributed lock: function execution: 'missing'"
    assert isinstance(info.value.__cause__, KeyError)
    assert locks.try_lock(key).unlock() is None

    # An exception without a text is named by its type.
    def bare():
        raise CustomError()

    with pytest.raises(vkclient.LockFunctionError) as info:
        locks.with_lock(key, bare)
    assert str(info.value) == "distributed lock: function execution: CustomError"
    assert locks.try_lock(key).unlock() is None


def test_fault_texts_of_try_lock_and_unlock(own_server):
    """A node that is gone: try_lock and unlock fail with the original's
    wording and the cause's class; contention would not be an error."""
    with vkclient.Client(plain_config(own_server.address)) as c:
        locks = vkclient.LockManager(c)
        handle = locks.try_lock("job:1")
        own_server.stop()
        with pytest.raises(vkclient.ConnectionError) as info:
            handle.unlock()
        assert str(info.value).startswith("distributed lock: unlock: ")
        assert len(str(info.value)) > len("distributed lock: unlock: ")
        with pytest.raises(vkclient.ConnectionError) as info:
            locks.try_lock("job:\t2")
        assert str(info.value).startswith('failed to attempt lock acquisition for "job:\\t2": ')
        assert "failed to attempt" not in str(info.value)[40:]
        locks.close()


def test_with_lock_options(locks, key):
    opts = vkclient.LockOptions(expiry=30.0, tries=5, retry_delay=1.0, drift_factor=0.01)
    seen = []

    def body():
        seen.append(True)
        return 7

    assert locks.with_lock_options(key, opts, body) == 7
    assert seen == [True]
    assert locks.with_lock_options(key, None, lambda: 8) == 8
    with pytest.raises(TypeError):
        locks.with_lock_options(key, {"expiry": 1}, lambda: 1)
    with pytest.raises(TypeError):
        locks.with_lock(key, "not callable")


def test_with_lock_waits_for_the_holder(locks, key):
    holder = locks.try_lock(key)
    threading.Timer(0.2, holder.unlock).start()
    opts = vkclient.LockOptions(tries=100, retry_delay=0.05)
    assert locks.with_lock_options(key, opts, lambda: "got it") == "got it"


def test_try_lock_and_handle(locks, key, client):
    handle = locks.try_lock(key)
    assert isinstance(handle, vkclient.LockHandle)
    assert handle.key == key
    assert 9.0 < handle.validity <= 10.0
    assert handle.fencing_token > 0
    assert handle.lost is False
    assert locks.try_lock(key) is None
    assert 9000 < client.execute("PTTL", key) <= 10000
    handle.extend(30.0)
    assert 29000 < client.execute("PTTL", key) <= 30000
    handle.extend(datetime.timedelta(seconds=20))
    assert 19000 < client.execute("PTTL", key) <= 20000
    assert "fencing_token=" in repr(handle)
    handle.unlock()
    assert handle.validity == 0.0
    with pytest.raises(vkclient.LockNotHeldError):
        handle.unlock()
    with pytest.raises(vkclient.LockNotHeldError):
        handle.extend(5.0)


def test_fencing_tokens_increase(locks, key):
    tokens = []
    for _ in range(5):
        handle = locks.try_lock(key)
        tokens.append(handle.fencing_token)
        handle.unlock()
    assert tokens == sorted(tokens) and len(set(tokens)) == 5


def test_binary_keys(locks):
    key = b"vkpy:lock:\xff\x00"
    handle = locks.try_lock(key)
    assert handle.key == key
    handle.unlock()


def test_expired_lock_is_not_held(locks, key, client):
    handle = locks.try_lock(key)
    client.delete(key)  # as if it expired
    with pytest.raises(vkclient.LockNotHeldError):
        handle.unlock()


def test_taken_over_lock_is_not_ours(locks, key, client):
    handle = locks.try_lock(key)
    client.set(key, "someone else")
    with pytest.raises(vkclient.LockNotHeldError):
        handle.extend(10.0)
    with pytest.raises(vkclient.LockNotHeldError):
        handle.unlock()
    assert client.get(key) == b"someone else"


def test_lock_context_manager(locks, key, client):
    with locks.lock(key) as handle:
        assert handle.key == key
        assert locks.try_lock(key) is None
    assert locks.try_lock(key).unlock() is None

    with pytest.raises(CustomError):
        with locks.lock(key, options=vkclient.LockOptions(expiry=5.0)):
            raise CustomError()
    assert locks.try_lock(key).unlock() is None

    # Expired inside the block: the release reports it ...
    with pytest.raises(vkclient.LockNotHeldError):
        with locks.lock(key):
            client.delete(key)
    # ... unless the block failed, whose error matters more.
    with pytest.raises(CustomError):
        with locks.lock(key):
            client.delete(key)
            raise CustomError()


def test_lock_timeout(locks, key):
    holder = locks.try_lock(key)
    opts = vkclient.LockOptions(tries=1000, retry_delay=0.05)
    started = time.monotonic()
    with pytest.raises(vkclient.TimeoutError):
        with locks.lock(key, options=opts, timeout=0.3):
            pass
    assert time.monotonic() - started < 5.0
    holder.unlock()


@pytest.mark.parametrize("how", ["argument", "options"])
def test_lock_auto_renew(locks, key, client, how):
    # A timedelta expiry, as LockOptions allows.
    if how == "argument":
        opts, renew = vkclient.LockOptions(expiry=datetime.timedelta(seconds=1)), True
    else:
        opts, renew = vkclient.LockOptions(expiry=1.0, auto_renew=True), False
    with locks.lock(key, options=opts, auto_renew=renew) as handle:
        time.sleep(2.5)  # well past the expiry: renewal kept it
        assert client.get(key) is not None
        assert locks.try_lock(key) is None
        assert handle.lost is False
    assert handle.validity == 0.0
    assert locks.try_lock(key).unlock() is None


def test_lost_renewal_is_reported(locks, key, client):
    opts = vkclient.LockOptions(expiry=0.6, auto_renew=True)
    # Another owner takes the key over; the next renewal finds it gone.
    with pytest.raises(vkclient.LockLostError) as raised:
        with locks.lock(key, options=opts) as handle:
            client.set(key, b"stranger")
            assert wait_until(lambda: handle.lost)
    assert str(raised.value) == "lock was lost while held"
    assert client.get(key) == b"stranger"

    client.delete(key)

    def overtaken():
        client.set(key, b"stranger")
        time.sleep(1.0)  # several renewal periods
        return "done"

    with pytest.raises(vkclient.LockLostError):
        locks.with_lock_options(key, opts, overtaken)
    assert client.get(key) == b"stranger"


def test_with_lock_auto_renew_in_the_core(locks, key, client):
    opts = vkclient.LockOptions(expiry=1.0, auto_renew=True)

    def slow():
        time.sleep(2.5)
        return client.get(key) is not None

    assert locks.with_lock_options(key, opts, slow) is True


def interrupt_after(delay):
    """Sends SIGINT to this process after `delay` s; returns when it was sent."""
    sent = {}

    def fire():
        sent["at"] = time.monotonic()
        os.kill(os.getpid(), signal.SIGINT)

    threading.Timer(delay, fire).start()
    return sent


def test_ctrl_c_stops_a_lock_wait(locks, key):
    holder = locks.try_lock(key)
    # Retries 5 s apart: only the interrupt check can end the wait early.
    opts = vkclient.LockOptions(tries=1000, retry_delay=5.0)
    ran = []
    sent = interrupt_after(0.3)
    with pytest.raises(KeyboardInterrupt):
        locks.with_lock_options(key, opts, lambda: ran.append(1))
    assert time.monotonic() - sent["at"] < 1.0
    assert ran == []
    # The same for the context manager.
    sent = interrupt_after(0.3)
    with pytest.raises(KeyboardInterrupt):
        with locks.lock(key, options=opts):
            ran.append(2)
    assert time.monotonic() - sent["at"] < 1.0
    assert ran == []
    holder.unlock()
    # Nothing was left held by the interrupted waits.
    assert locks.try_lock(key).unlock() is None


def test_keyboard_interrupt_inside_fn_still_releases(locks, key):
    def interrupted():
        raise KeyboardInterrupt()

    with pytest.raises(KeyboardInterrupt):
        locks.with_lock(key, interrupted)
    assert locks.try_lock(key).unlock() is None


def test_deprecated_unlock(locks, key):
    handle = locks.try_lock(key)
    with pytest.deprecated_call():
        locks.unlock(handle)
    with pytest.raises(vkclient.LockNotHeldError):
        with pytest.deprecated_call():
            locks.unlock(handle)


def test_options_presets():
    default = vkclient.LockOptions.default()
    assert (default.expiry, default.tries, default.retry_delay, default.drift_factor) == \
        (10.0, 3, 0.5, 0.01)
    assert default == vkclient.LockOptions()
    limiter = vkclient.LockOptions.rate_limiter()
    assert (limiter.expiry, limiter.tries, limiter.retry_delay, limiter.drift_factor) == \
        (2.0, 2, 0.1, 0.01)
    assert limiter != default
    assert "tries=2" in repr(limiter)
    vkclient.LockOptions(expiry=datetime.timedelta(seconds=3)).validate()
    with pytest.raises(TypeError):
        vkclient.LockOptions(tries=2.5).validate()


def test_quorum_over_independent_nodes(env, key):
    clients = [vkclient.Client(plain_config(a)) for a in env.quorum_addrs]
    try:
        quorum = vkclient.LockManager(clients)
        assert "nodes=3" in repr(quorum)
        handle = quorum.try_lock(key)
        assert handle is not None
        assert all(c.get(key) is not None for c in clients)
        assert quorum.try_lock(key) is None
        handle.unlock()
        assert all(c.get(key) is None for c in clients)

        # A minority taken by someone else does not stop the majority.
        clients[0].set(key, "other")
        assert quorum.with_lock(key, lambda: "majority") == "majority"
        # A majority taken does.
        clients[1].set(key, "other")
        with pytest.raises(vkclient.LockAcquireError):
            quorum.with_lock_options(key, vkclient.LockOptions(tries=1), lambda: None)
        quorum.close()
        quorum.close()
    finally:
        for c in clients:
            c.delete(key)
            c.close()


def test_quorum_with_a_missing_client(env):
    c = vkclient.Client(plain_config())
    with pytest.raises(vkclient.NilClientError):
        vkclient.LockManager([c, None, c])
    with vkclient.LockManager((c,)) as single:
        assert single.try_lock("vkpy:quorum-one").unlock() is None
    c.close()


def test_manager_outlives_a_reconnect(locks, client, key):
    client.close()
    client.connect()
    assert locks.with_lock(key, lambda: 1) == 1


def test_python_holder_excludes_another_process(env, key, tmp_path):
    # A second interpreter (a separate client) contends on the same key.
    import subprocess
    import sys
    script = tmp_path / "contender.py"
    script.write_text(
        "import sys, vkclient\n"
        "c = vkclient.Client(vkclient.Config(standalone=vkclient.Standalone(sys.argv[1])))\n"
        "h = vkclient.LockManager(c).try_lock(sys.argv[2])\n"
        "print('acquired' if h else 'busy')\n"
        "h and h.unlock()\n")
    with vkclient.Client(plain_config()) as c:
        locks = vkclient.LockManager(c)
        with locks.lock(key):
            out = subprocess.run([sys.executable, str(script), env.addr, key], check=True,
                                 capture_output=True, text=True, env=os.environ).stdout
            assert out.strip() == "busy"
        out = subprocess.run([sys.executable, str(script), env.addr, key], check=True,
                             capture_output=True, text=True, env=os.environ).stdout
        assert out.strip() == "acquired"


def test_wrong_argument_types_name_what_is_expected(locks, client, key):
    def type_error(text, fn):
        with pytest.raises(TypeError) as info:
            fn()
        assert type(info.value) is TypeError
        assert str(info.value) == text

    type_error("LockManager takes a vkclient.Client or a list of them, not str",
               lambda: vkclient.LockManager("127.0.0.1:6379"))
    type_error("LockManager takes a vkclient.Client or a list of them, not dict",
               lambda: vkclient.LockManager([client, {}]))
    type_error("lock key must be str or bytes, not int", lambda: locks.try_lock(42))
    type_error("lock key must be str or bytes, not list", lambda: locks.with_lock([key], lambda: 1))
    type_error("options must be a vkclient.LockOptions, not dict",
               lambda: locks.lock(key, options={"expiry": 1}))
    type_error("options must be a vkclient.LockOptions, not dict",
               lambda: locks.with_lock_options(key, {"expiry": 1}, lambda: 1))
    type_error("drift_factor must be a float, not str",
               lambda: vkclient.LockOptions(drift_factor="0.1").validate())
    type_error("tries must be an int, not float", lambda: vkclient.LockOptions(tries=2.0).validate())
    type_error("expiry must be seconds (int or float) or a datetime.timedelta, not str",
               lambda: vkclient.LockOptions(expiry="10").validate())
    type_error("timeout must be seconds (int or float) or a datetime.timedelta, not str",
               lambda: locks.lock(key, timeout="1").__enter__())
    handle = locks.try_lock(key)
    type_error("expiry must be seconds (int or float) or a datetime.timedelta, not str",
               lambda: handle.extend("5"))
    with pytest.warns(DeprecationWarning):
        type_error("handle must be a vkclient.LockHandle, not str", lambda: locks.unlock(key))
    handle.unlock()
    type_error("invalid command argument of type dict: expected bytes, str, int or float",
               lambda: client.execute("GET", {}))
    type_error("invalid command argument of type NoneType: expected bytes, str, int or float",
               lambda: client.execute("SET", key, None))
