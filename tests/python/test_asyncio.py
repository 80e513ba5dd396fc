"""vkclient.asyncio against real servers: every public call with its replies,
errors and texts (the same as the blocking client's), many tasks on one
client, cancellation, timeouts, pipelines and the lock (between tasks and
against a blocking holder in another process). test_asyncio_uvloop.py runs
the basic suite again on uvloop."""

import asyncio
import datetime
import os
import subprocess
import sys
import textwrap
import threading

import pytest
import pytest_asyncio

import vkclient
import vkclient.asyncio as vka

from conftest import Env, plain_config, wait_until

@pytest_asyncio.fixture
async def aclient():
    async with vka.Client(plain_config()) as c:
        yield c


@pytest.fixture
def blocking():
    with vkclient.Client(plain_config()) as c:
        yield c


def dead_address(harness):
    """A loopback port nothing listens on."""
    return "127.0.0.1:%d" % harness.free_port()


async def eventually(predicate, timeout=10.0):
    """Polls predicate while the loop keeps running; True once it holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return False


def blocked_clients(blocking):
    info = blocking.execute("INFO", "clients").decode()
    return int(next(line.split(":")[1] for line in info.splitlines()
                    if line.startswith("blocked_clients:")))


# ---- commands and replies -----------------------------------------------------

@pytest.mark.asyncio
async def test_commands_and_replies(aclient, key):
    assert await aclient.ping() is True
    assert await aclient.set(key, "v") is True
    assert await aclient.get(key) == b"v"
    assert await aclient.set(key, "w", nx=True) is None
    assert await aclient.get(key) == b"v"
    assert await aclient.set(key, b"\x00\xff", px=60000) is True
    assert await aclient.get(key) == b"\x00\xff"
    assert 0 < await aclient.execute("PTTL", key) <= 60000
    assert await aclient.set(key, 1, px=datetime.timedelta(seconds=30)) is True
    assert await aclient.execute("INCRBY", key, 41) == 42
    assert await aclient.execute("GET", key) == b"42"
    assert await aclient.execute("TYPE", key) == "string"
    assert await aclient.delete(key, key + ":other") == 1
    assert await aclient.get(key) is None
    assert await aclient.execute("RPUSH", key, "a", b"b", 3, 4.5) == 4
    assert await aclient.execute("LRANGE", key, 0, -1) == [b"a", b"b", b"3", b"4.5"]
    assert await aclient.delete(key) == 1


@pytest.mark.asyncio
async def test_replies_and_errors_match_the_blocking_client(aclient, blocking, key):
    await aclient.set(key, "text")
    calls = [("INCR", key), ("LPUSH", key, "x"), ("NOSUCHCOMMAND",), ("GET",),
             ("SUBSCRIBE", "chan"), ("EXISTS", key), ("HGETALL", key + ":none")]
    for args in calls:
        try:
            expected = ("ok", blocking.execute(*args))
        except vkclient.Error as err:
            expected = ("error", type(err), str(err))
        try:
            got = ("ok", await aclient.execute(*args))
        except vkclient.Error as err:
            got = ("error", type(err), str(err))
        assert got == expected, args
    with pytest.raises(vkclient.ResponseError) as info:
        await aclient.execute("INCR", key)
    assert str(info.value) == "ERR value is not an integer or out of range"
    with pytest.raises(vkclient.CommandNotAllowedError) as info:
        aclient.execute("SELECT", 1)
    assert str(info.value).startswith("command not allowed on a shared connection: ")
    with pytest.raises(TypeError):
        aclient.delete()
    with pytest.raises(TypeError):
        aclient.execute()
    with pytest.raises(TypeError):
        aclient.set(key)
    with pytest.raises(TypeError):
        aclient.execute("SET", key, object())


@pytest.mark.asyncio
async def test_no_io_until_first_use_then_connect_close_reuse(harness, key):
    address = dead_address(harness)
    dead = vka.Client(plain_config(address))   # nothing listens: no I/O yet
    assert not dead.is_connected()
    with pytest.raises(vkclient.ConnectionError) as info:
        await dead.ping()
    with pytest.raises(vkclient.ConnectionError) as blocking_info:
        vkclient.Client(plain_config(address))
    assert str(info.value) == str(blocking_info.value)
    await dead.close()

    client = vka.Client.from_url("redis://%s/0" % Env.addr)
    assert not client.is_connected()
    await client.connect()
    assert client.is_connected()
    status = client.status()
    assert status.connected and status.mode == "standalone"
    assert status.master_address == Env.addr
    assert status.last_refresh_error is None and not status.refresh_loop_running
    assert client.last_refresh_error() is None
    assert "connected=True" in repr(client)
    await client.close()
    assert not client.is_connected()
    await client.close()                        # twice is harmless
    assert await client.set(key, "again") is True   # reconnects on demand
    assert client.is_connected()
    await client.close()

    async with vka.Client(plain_config()) as c:
        assert await c.ping()
    assert not c.is_connected()


@pytest.mark.asyncio
async def test_config_errors_have_the_blocking_texts():
    with pytest.raises(vkclient.InvalidConfigError) as info:
        vka.Client(vkclient.Config())
    assert str(info.value) == "invalid redis config: exactly one topology must be configured"
    with pytest.raises(TypeError):
        vka.Client("127.0.0.1:6379")


@pytest.mark.asyncio
async def test_cluster_config_is_accepted_without_io(harness):
    # Served (test_asyncio_cluster.py): nothing is dialled before the first
    # call; nothing listens at these addresses, so that call fails with the
    # blocking client's error.
    config = vkclient.Config(cluster=vkclient.Cluster([dead_address(harness),
                                                       dead_address(harness)]))
    with pytest.raises(vkclient.Error) as info:
        vkclient.Client(config)
    expected = info.value
    client = vka.Client(config)
    assert not client.is_connected()
    assert client.status().mode == "cluster"
    with pytest.raises(vkclient.Error) as info:
        await client.ping()
    assert type(info.value) is type(expected) is vkclient.ConnectionError
    assert str(info.value) == str(expected)
    assert str(info.value).startswith("redis cluster: all nodes are unreachable: ")
    assert not client.is_connected()
    await client.close()


@pytest.mark.asyncio
async def test_close_fails_what_is_in_flight_and_the_client_stays_usable(aclient, blocking,
                                                                          key):
    await aclient.ping()
    waiting = asyncio.ensure_future(aclient.execute("BLPOP", key, 0))
    assert await eventually(lambda: blocked_clients(blocking) == 1)
    getting = aclient.get(key)   # sent, but its reply cannot be read before close()
    await aclient.close()
    for fut in (waiting, getting):
        with pytest.raises(vkclient.CancelledError) as info:
            await fut
        assert str(info.value) == "operation cancelled: client closed"
    assert wait_until(lambda: blocked_clients(blocking) == 0)
    assert await aclient.ping()


# ---- loops and threads ----------------------------------------------------------

@pytest.mark.asyncio
async def test_bound_to_its_loop(aclient):
    await aclient.ping()
    errors = []

    def other_thread():
        async def use():
            await aclient.ping()
        try:
            asyncio.run(use())
        except BaseException as err:   # checked below
            errors.append(err)

    t = threading.Thread(target=other_thread)
    t.start()
    t.join(10)
    assert len(errors) == 1 and isinstance(errors[0], vkclient.InvalidArgumentError)
    assert str(errors[0]) == ("vkclient.asyncio.Client is bound to the event loop it was first "
                              "used on; use it only from that loop (and its thread)")
    assert await aclient.ping()


def test_a_call_needs_a_running_loop():
    client = vka.Client(plain_config())
    with pytest.raises(RuntimeError) as info:
        client.get("k")
    assert str(info.value) == ("vkclient.asyncio: no running event loop "
                               "(await the call in a coroutine)")


# ---- many tasks, cancellation, timeouts --------------------------------------------

@pytest.mark.asyncio
async def test_thousand_tasks_each_get_their_own_reply(aclient, key):
    await aclient.set(key + ":text", "not a number")

    async def one(i):
        if i % 3 == 0:
            with pytest.raises(vkclient.ResponseError) as info:
                await aclient.execute("INCR", key + ":text")
            return str(info.value)
        if i % 3 == 1:
            assert await aclient.set("%s:%d" % (key, i), i) is True
            return await aclient.get("%s:%d" % (key, i))
        return await aclient.execute("ECHO", "echo-%d" % i)

    results = await asyncio.gather(*(one(i) for i in range(1000)))
    for i, result in enumerate(results):
        if i % 3 == 0:
            assert result == "ERR value is not an integer or out of range"
        elif i % 3 == 1:
            assert result == str(i).encode()
        else:
            assert result == ("echo-%d" % i).encode()
    await aclient.delete(key + ":text", *("%s:%d" % (key, i) for i in range(1, 1000, 3)))


@pytest.mark.asyncio
async def test_cancelled_tasks_leave_the_client_in_step(aclient, key):
    await aclient.set(key, "value")

    async def get():
        return await aclient.get(key)

    tasks = [asyncio.ensure_future(get()) for _ in range(200)]
    await asyncio.sleep(0)          # every request is queued or written
    for t in tasks[::2]:
        t.cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    for i, result in enumerate(done):
        if i % 2 == 0:
            assert isinstance(result, asyncio.CancelledError)
        else:
            assert result == b"value"
    # Replies of cancelled requests were dropped, not handed to later ones.
    for i in range(50):
        assert await aclient.execute("ECHO", i) == str(i).encode()


@pytest.mark.asyncio
async def test_wait_for_timeout_on_blpop_forever(aclient, blocking, key):
    for _ in range(3):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(aclient.execute("BLPOP", key, 0), 0.1)
        assert await aclient.ping()
    # The cancelled BLPOPs are gone from the server: nothing takes the item.
    assert wait_until(lambda: blocked_clients(blocking) == 0)
    blocking.execute("RPUSH", key, "item")
    assert await aclient.execute("LRANGE", key, 0, -1) == [b"item"]
    # A blocking command with a timeout of its own waits it out; others are
    # not held up meanwhile.
    waiting = asyncio.ensure_future(aclient.execute("BLPOP", key + ":empty", 0.3))
    assert await aclient.execute("LPOP", key) == b"item"
    assert await waiting is None
    # And one that is served gets its element.
    waiting = asyncio.ensure_future(aclient.execute("BLPOP", key + ":list", 0))
    assert await eventually(lambda: blocked_clients(blocking) == 1)
    await aclient.execute("RPUSH", key + ":list", "x")
    assert await waiting == [(key + ":list").encode(), b"x"]


@pytest.mark.asyncio
async def test_cancel_a_task_waiting_on_blpop(aclient, blocking, key):
    task = asyncio.ensure_future(aclient.execute("BLPOP", key, 0))
    assert await eventually(lambda: blocked_clients(blocking) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await aclient.ping()
    assert wait_until(lambda: blocked_clients(blocking) == 0)


# ---- pipelines -------------------------------------------------------------------

@pytest.mark.asyncio
async def test_pipeline(aclient, blocking, key):
    p = aclient.pipeline()
    assert len(p) == 0
    assert await p.run() == []
    assert p.execute("SET", key, 1) is p
    p.execute("INCR", key).execute("LPUSH", key, "x").execute("GET", key)
    assert len(p) == 4
    replies = await p.run()
    assert replies[:2] == ["OK", 2] and replies[3] == b"2"
    assert isinstance(replies[2], vkclient.ResponseError)
    assert str(replies[2]) == ("WRONGTYPE Operation against a key holding the wrong kind of "
                               "value")
    assert len(p) == 0
    # The blocking pipeline gives the same.
    bp = blocking.pipeline()
    bp.execute("SET", key, 1).execute("INCR", key).execute("LPUSH", key, "x").execute("GET", key)
    assert [str(r) if isinstance(r, Exception) else r for r in bp.run()] == \
        [str(r) if isinstance(r, Exception) else r for r in replies]
    # Reused, and large.
    for i in range(1000):
        p.execute("RPUSH", key + ":list", i)
    assert await p.run() == list(range(1, 1001))
    with pytest.raises(vkclient.CommandNotAllowedError):
        p.execute("SUBSCRIBE", "chan")
    async with aclient.pipeline() as q:
        q.execute("LLEN", key + ":list").execute("DEL", key, key + ":list")
    assert q.results == [1000, 2]
    assert "queued=0" in repr(q)


@pytest.mark.asyncio
async def test_pipeline_with_a_blocking_command(aclient, blocking, key):
    # It runs on a connection of its own, as the command alone would: a
    # wait_for timeout ends the server's wait and holds nobody up.
    p = aclient.pipeline()
    p.execute("SET", key + ":a", "1").execute("BLPOP", key, 0)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(p.run(), 0.1)
    assert len(p) == 0
    assert await aclient.ping()
    assert wait_until(lambda: blocked_clients(blocking) == 0)
    p.execute("RPUSH", key, "x").execute("BLPOP", key, 0).execute("ECHO", "after")
    assert await p.run() == [1, [key.encode(), b"x"], b"after"]
    assert await aclient.execute("EXISTS", key) == 0


@pytest.mark.asyncio
async def test_pipelines_from_many_tasks(aclient, key):
    async def one(i):
        p = aclient.pipeline()
        for j in range(20):
            p.execute("ECHO", "%d-%d" % (i, j))
        return await p.run()

    results = await asyncio.gather(*(one(i) for i in range(50)))
    for i, replies in enumerate(results):
        assert replies == [("%d-%d" % (i, j)).encode() for j in range(20)]


# ---- the lock ----------------------------------------------------------------------

@pytest_asyncio.fixture
async def alocks(aclient):
    return vka.LockManager(aclient)


@pytest.mark.asyncio
async def test_try_lock_handle_unlock_extend(alocks, key):
    handle = await alocks.try_lock(key)
    assert handle is not None
    assert handle.key == key and handle.fencing_token >= 1 and not handle.lost
    assert 9.0 < handle.validity <= 10.0
    assert await alocks.try_lock(key) is None      # contention is not an error
    await handle.extend(30)
    assert 29.0 < handle.validity <= 30.0
    await handle.unlock()
    with pytest.raises(vkclient.LockNotHeldError) as info:
        await handle.unlock()
    assert str(info.value) == "lock was not held or already expired"
    with pytest.raises(vkclient.LockNotHeldError):
        await handle.extend(5)
    again = await alocks.try_lock(key)
    assert again.fencing_token > handle.fencing_token
    await again.unlock()
    assert "fencing_token" in repr(again)


@pytest.mark.asyncio
async def test_lock_argument_errors_have_the_blocking_texts(alocks, client, key):
    blocking_locks = vkclient.LockManager(client)
    for bad_key in ("", "   ", None):
        with pytest.raises(vkclient.EmptyLockKeyError) as info:
            await alocks.try_lock(bad_key)
        with pytest.raises(vkclient.EmptyLockKeyError) as blocking_info:
            blocking_locks.try_lock(bad_key)
        assert str(info.value) == str(blocking_info.value) == "lock key cannot be empty"
    with pytest.raises(TypeError):
        await alocks.try_lock(3)
    for options, error, text in [
        (vkclient.LockOptions(tries=0), vkclient.LockTriesInvalidError,
         "lock tries must be at least 1"),
        (vkclient.LockOptions(tries=1001), vkclient.LockTriesExceededError,
         "lock tries exceeds maximum"),
        (vkclient.LockOptions(expiry=0), vkclient.LockExpiryInvalidError,
         "lock expiry must be greater than 0"),
        (vkclient.LockOptions(retry_delay=-1), vkclient.LockRetryDelayNegativeError,
         "lock retry delay cannot be negative"),
        (vkclient.LockOptions(drift_factor=1.0), vkclient.LockDriftFactorInvalidError,
         "lock drift factor must be between 0 (inclusive) and 1 (exclusive)"),
    ]:
        with pytest.raises(error) as info:
            async with alocks.lock(key, options=options):
                pass
        assert str(info.value) == text
        with pytest.raises(error) as info:
            await alocks.with_lock_options(key, options, lambda: None)
        assert str(info.value) == text
    with pytest.raises(vkclient.NilLockFnError) as info:
        await alocks.with_lock(key, None)
    assert str(info.value) == "lock function is nil"
    with pytest.raises(TypeError):
        vka.LockManager(client)        # a blocking client is not an asyncio one
    with pytest.raises(TypeError):
        alocks.lock(key, options="fast")
    blocking_locks.close()


@pytest.mark.asyncio
async def test_with_lock_result_exception_and_contention(alocks, client, key):
    async def critical():
        assert await alocks.try_lock(key) is None
        await asyncio.sleep(0)
        return "result"

    assert await alocks.with_lock(key, critical) == "result"
    assert await alocks.with_lock(key, lambda: 7) == 7   # a plain function too

    raised = ValueError("from fn")

    async def failing():
        raise raised

    with pytest.raises(vkclient.LockFunctionError) as info:
        await alocks.with_lock(key, failing)
    assert str(info.value) == "distributed lock: function execution: from fn"
    assert info.value.__cause__ is raised
    blocking_locks = vkclient.LockManager(client)
    with pytest.raises(vkclient.LockFunctionError) as blocking_info:
        blocking_locks.with_lock(key, lambda: {}["missing"])
    with pytest.raises(vkclient.LockFunctionError) as info:
        await alocks.with_lock_options(key, vkclient.LockOptions(), lambda: {}["missing"])
    assert str(info.value) == str(blocking_info.value)

    held = await alocks.try_lock(key)        # released after every failure above
    options = vkclient.LockOptions(tries=2, retry_delay=0.01)
    with pytest.raises(vkclient.LockAcquireError) as info:
        await alocks.with_lock_options(key, options, lambda: None)
    with pytest.raises(vkclient.LockAcquireError) as blocking_info:
        blocking_locks.with_lock_options(key, options, lambda: None)
    assert str(info.value) == str(blocking_info.value) == \
        'failed to acquire lock "%s": lock already taken' % key
    with pytest.raises(vkclient.TimeoutError) as info:
        async with alocks.lock(key, options=vkclient.LockOptions(tries=1000, retry_delay=0.01),
                               timeout=0.1):
            pass
    with pytest.raises(vkclient.TimeoutError) as blocking_info:
        with blocking_locks.lock(key, timeout=0.1):
            pass
    assert str(info.value) == str(blocking_info.value)
    await held.unlock()
    blocking_locks.close()


def set_calls(client):
    """SET commands the server ran so far (a lock try is one SET NX)."""
    stats = client.execute("INFO", "commandstats").decode()
    line = next((x for x in stats.splitlines() if x.startswith("cmdstat_set:")), None)
    return int(line.split("calls=")[1].split(",")[0]) if line else 0


@pytest.mark.asyncio
async def test_a_cancelled_acquisition_stops_trying(aclient, alocks, client, key):
    held = await alocks.try_lock(key)
    options = vkclient.LockOptions(tries=1000, retry_delay=0.01)
    task = asyncio.ensure_future(alocks.with_lock_options(key, options, lambda: None))
    await asyncio.sleep(0.2)
    assert set_calls(client) > 0 and not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The cancel reaches the core on the loop's next turn (the future's
    # callback); a try sent before it is answered before the second PING.
    await aclient.ping()
    await aclient.ping()
    tries = set_calls(client)
    await asyncio.sleep(0.3)
    assert set_calls(client) == tries      # the core stopped trying
    # lock(timeout=...) ends the same way.
    with pytest.raises(vkclient.TimeoutError):
        async with alocks.lock(key, options=options, timeout=0.1):
            pass
    await aclient.ping()
    await aclient.ping()
    tries = set_calls(client)
    await asyncio.sleep(0.3)
    assert set_calls(client) == tries
    await held.unlock()


@pytest.mark.asyncio
async def test_an_acquisition_cancelled_in_flight_leaves_no_lock(alocks, key):
    loop = asyncio.get_running_loop()
    for _ in range(20):
        task = asyncio.ensure_future(alocks.try_lock(key))
        await asyncio.sleep(0)      # its SET NX is on its way
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Whatever the attempt took is given back by the core once its
        # replies are in, long before the lock's 10 s expiry: the lock can
        # be taken again within moments.
        handle = None
        deadline = loop.time() + 5.0
        while handle is None and loop.time() < deadline:
            handle = await alocks.try_lock(key)
            if handle is None:
                await asyncio.sleep(0.01)
        assert handle is not None
        await handle.unlock()


@pytest.mark.asyncio
async def test_lock_context_manager_and_auto_renew(alocks, key):
    # Renewed every third of the expiry: 1 s leaves a busy machine time to
    # run a renewal before the lock would expire.
    options = vkclient.LockOptions(expiry=1.0)
    async with alocks.lock(key, options=options, auto_renew=True) as handle:
        await asyncio.sleep(2.2)              # longer than the expiry: renewed
        assert not handle.lost
        assert await alocks.try_lock(key) is None
    assert handle.validity == 0.0
    async with alocks.lock(key) as handle:
        assert handle.key == key
    again = await alocks.try_lock(key)
    assert isinstance(again, vka.LockHandle)
    await again.unlock()


@pytest.mark.asyncio
async def test_lock_mutual_exclusion_between_50_tasks(alocks):
    key = "vkpy:async-mutex"
    counter = {"value": 0, "inside": 0, "most": 0}
    options = vkclient.LockOptions(expiry=5, tries=1000, retry_delay=0.002)

    async def worker():
        for _ in range(4):
            async with alocks.lock(key, options=options):
                counter["inside"] += 1
                counter["most"] = max(counter["most"], counter["inside"])
                value = counter["value"]
                await asyncio.sleep(0)          # the critical section yields
                await alocks._clients[0].ping()
                counter["value"] = value + 1
                counter["inside"] -= 1

    await asyncio.gather(*(worker() for _ in range(50)))
    assert counter["value"] == 200
    assert counter["most"] == 1


BLOCKING_HOLDER = textwrap.dedent("""
    import sys, time
    import vkclient
    address, key, counter, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    client = vkclient.Client(vkclient.Config(standalone=vkclient.Standalone(address)))
    locks = vkclient.LockManager(client)
    options = vkclient.LockOptions(expiry=5, tries=1000, retry_delay=0.002)
    print("ready", flush=True)
    for _ in range(rounds):
        with locks.lock(key, options=options):
            value = int(client.get(counter) or 0)
            time.sleep(0.001)
            client.set(counter, value + 1)
    print("done", flush=True)
""")


@pytest.mark.asyncio
async def test_lock_excludes_a_blocking_holder_in_another_process(alocks, aclient, key):
    counter = key + ":counter"
    rounds = 60
    proc = subprocess.Popen([sys.executable, "-c", BLOCKING_HOLDER, Env.addr, key, counter,
                             str(rounds)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ))
    try:
        assert proc.stdout.readline().strip() == "ready"
        options = vkclient.LockOptions(expiry=5, tries=1000, retry_delay=0.002)
        for _ in range(rounds):
            async with alocks.lock(key, options=options):
                value = int(await aclient.get(counter) or 0)
                await asyncio.sleep(0.001)
                await aclient.set(counter, value + 1)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and out.strip() == "done"
    assert int(await aclient.get(counter)) == 2 * rounds


@pytest.mark.asyncio
async def test_quorum_lock_over_three_servers(key):
    clients = [vka.Client(plain_config(a)) for a in Env.quorum_addrs]
    locks = vka.LockManager(clients)
    handle = await locks.try_lock(key)
    assert handle is not None
    for c in clients:
        assert await c.execute("EXISTS", key) == 1
    assert await locks.try_lock(key) is None
    await handle.unlock()
    for c in clients:
        assert await c.execute("EXISTS", key) == 0
        await c.close()


def test_the_asyncio_example_runs(key):
    example = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "examples", "python", "asyncio_demo.py")
    out = subprocess.run([sys.executable, example, Env.addr, "4"], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    lines = out.splitlines()
    assert lines[0] == "GET: hello from asyncio"
    assert lines[1] == "pipeline: ['PONG', b'pipelined']"
    counters = sorted(int(line.split("counter ")[1].split(" ")[0])
                      for line in lines if line.startswith("task "))
    assert len(counters) == 4 and counters == list(range(counters[0], counters[0] + 4))
    assert lines[-1].startswith("status: Status(connected=True")


@pytest.mark.asyncio
async def test_transaction_pipeline_runs_whole_among_other_tasks(aclient, blocking, key):
    p = aclient.pipeline(transaction=True)
    assert p.transaction and not aclient.pipeline().transaction
    p.execute("INCR", key).execute("INCR", key)
    # Single commands sent around it never land inside the transaction.
    before = [asyncio.ensure_future(aclient.execute("GET", key)) for _ in range(20)]
    run = asyncio.ensure_future(p.run())
    after = [asyncio.ensure_future(aclient.execute("GET", key)) for _ in range(20)]
    assert await run == [1, 2]
    assert set(await asyncio.gather(*before)) == {None}
    assert set(await asyncio.gather(*after)) == {b"2"}
    # A command refused when queued discards the transaction; the client goes on.
    p.execute("SET", key, "lost").execute("SET", key)
    with pytest.raises(vkclient.ResponseError) as e:
        await p.run()
    assert str(e.value).startswith("server error reply: transaction discarded: command 2 "
                                   "was refused")
    assert await aclient.execute("GET", key) == b"2"
    assert blocking.get(key) == b"2"
