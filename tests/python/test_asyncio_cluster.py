"""vkclient.asyncio in Cluster mode against real clusters: no I/O until the
first call, keys on every master (checked on the node itself), hash tags,
the cross-slot refusal (the blocking client's exception class and text),
commands the key table leaves to the server, pipelines across the masters
with their replies in order, blocking commands and cancellation, seeds that
are all unreachable, status(), the lock, and a slot migration under async
load with zero failed commands and one client that is never re-created.

The shared cluster comes from the harness (VK_TEST_CLUSTER_ADDRS) or is
started here, as in test_topologies.py; the migration test starts a cluster
of its own.
"""

import asyncio
import random
import time
import uuid

import pytest

import topologies  # tests/harness, on sys.path through conftest
import vkclient
import vkclient.asyncio as vka

from conftest import Env
from test_topologies import cluster, keys_per_master, unique  # noqa: F401  (cluster: a fixture)

CROSSSLOT_TEXT = "invalid argument: CROSSSLOT keys in request don't hash to the same slot"


def blocked_clients(address):
    return int(topologies._fields(topologies.cli(address, "INFO", "clients"))["blocked_clients"])


async def until(predicate, timeout):
    """The time predicate first held, polled while the loop runs; None
    after timeout seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return time.monotonic()
        await asyncio.sleep(0.01)
    return None


def check_status(status, masters):
    """A status of a client in service on a cluster of these masters."""
    assert status.mode == "cluster"
    assert status.connected is True
    assert status.master_address is None and status.master_switches == 0
    assert sorted(status.nodes) == sorted(masters)
    assert sum(status.nodes.values()) == topologies.SLOTS
    assert status.slot_map_refreshes >= 1


# ---- no I/O before the first call; keys on every master -----------------------------

@pytest.mark.asyncio
async def test_cluster_config_is_served_without_io(cluster):  # noqa: F811
    client = vka.Client(cluster.config())
    assert client.is_connected() is False
    status = client.status()
    assert (status.connected, status.mode, status.master_address) == (False, "cluster", None)
    assert status.last_refresh_error is None and status.refresh_loop_running is False
    await client.connect()
    assert client.is_connected() is True
    check_status(client.status(), cluster.addresses)
    await client.close()
    assert client.is_connected() is False


@pytest.mark.asyncio
async def test_keys_on_every_master(cluster):  # noqa: F811
    metrics = []
    config = vkclient.Config(cluster=vkclient.Cluster(cluster.addresses[-1:]),
                             metrics=lambda *m: metrics.append(m))
    async with vka.Client(config) as client:
        owners = keys_per_master(cluster, unique("async-every-master"), per_master=5)
        assert sorted(owners) == sorted(cluster.addresses)
        keys = [(owner, key, uuid.uuid4().hex) for owner, ks in owners.items() for key in ks]
        # Many tasks at once, on every master.
        assert await asyncio.gather(*(client.set(k, v) for _, k, v in keys)) == [True] * 15
        for owner, key, value in keys:
            # The owner holds it; any other master redirects to it.
            assert topologies.cli(owner, "GET", key) == value
        assert await asyncio.gather(*(client.get(k) for _, k, _ in keys)) == \
            [v.encode() for _, _, v in keys]
        assert await asyncio.gather(*(client.execute("APPEND", k, "!") for _, k, _ in keys)) == \
            [33] * 15
        assert await client.delete(*(k for _, k, _ in keys[:1])) == 1
        status = client.status()
        check_status(status, cluster.addresses)
        # Routed by the map: no redirect was needed.
        assert (status.moved_redirects, status.ask_redirects) == (0, 0)
        refreshes = [m for m in metrics if m[0] == "redis_cluster_slot_refreshes_total"]
        assert len(refreshes) == status.slot_map_refreshes
        assert not [m for m in metrics if m[0] == "redis_cluster_redirects_total"]
        # Many tasks on one counter, on its master.
        counter = unique("async-cluster-counter")
        await asyncio.gather(*(client.execute("INCR", counter) for _ in range(500)))
        assert topologies.cli(cluster.key_owner(counter), "GET", counter) == "500"


@pytest.mark.asyncio
async def test_alternating_masters_answer_promptly(cluster):  # noqa: F811
    """One command at a time, each for another master than the one before:
    each is answered at once, not when a timer (the read timeout) moves the
    client on."""
    owners = keys_per_master(cluster, unique("async-alternate"))
    keys = [owners[m][0] for m in cluster.addresses]
    slowest = (0.0, None)
    for seed in range(len(keys)):
        async with vka.Client(vkclient.Config(
                cluster=vkclient.Cluster(cluster.addresses[seed:seed + 1]))) as client:
            for i in range(3 * len(keys)):
                key = keys[(seed + i) % len(keys)]
                started = time.monotonic()
                assert isinstance(await client.execute("INCR", key), int)
                took = time.monotonic() - started
                if took > slowest[0]:
                    slowest = (took, "seed %d, command %d (%s)" % (seed, i, key))
    assert slowest[0] < 1.0, "%.3f s for %s" % slowest


@pytest.mark.asyncio
async def test_hash_tags_share_a_slot(cluster):  # noqa: F811
    tag = "{%s}" % unique("async-tag")
    a, b = tag + ":a", tag + ":b"
    async with vka.Client(cluster.config()) as client:
        assert await client.execute("MSET", a, "1", b, "2") == "OK"
        assert await client.execute("MGET", a, b, tag + ":none") == [b"1", b"2", None]
        assert topologies.cli(cluster.key_owner(a), "MGET", a, b) == ["1", "2"]
        assert await client.execute(
            "EVAL", "return redis.call('GET', KEYS[1]) .. ARGV[1]", 1, a, "!") == b"1!"
        assert await client.execute("DEL", a, b) == 2


# ---- the cross-slot refusal --------------------------------------------------------

def cross_slot_keys():
    a, b = unique("cross-a"), unique("cross-b")
    while topologies.key_slot(a) == topologies.key_slot(b):
        b = unique("cross-b")
    return a, b


@pytest.mark.asyncio
async def test_cross_slot_fails_like_the_blocking_client(cluster):  # noqa: F811
    a, b = cross_slot_keys()
    with vkclient.Client(cluster.config()) as blocking:
        with pytest.raises(vkclient.Error) as info:
            blocking.execute("MSET", a, "1", b, "2")
    expected = info.value
    assert type(expected) is vkclient.InvalidArgumentError
    assert str(expected) == CROSSSLOT_TEXT
    async with vka.Client(cluster.config()) as client:
        for args in (("MSET", a, "1", b, "2"), ("MGET", a, b), ("DEL", a, b),
                     ("EVAL", "return 1", 2, a, b)):
            with pytest.raises(vkclient.Error) as info:
                await client.execute(*args)
            assert type(info.value) is type(expected)
            assert str(info.value) == str(expected)
        # In a pipeline the whole batch is refused before anything is sent.
        p = client.pipeline()
        p.execute("SET", a, "sent?").execute("MGET", a, b)
        with pytest.raises(vkclient.Error) as info:
            await p.run()
        assert type(info.value) is type(expected)
        assert str(info.value) == str(expected)
        assert topologies.cli(cluster.key_owner(a), "EXISTS", a) == 0
        assert topologies.cli(cluster.key_owner(b), "EXISTS", b) == 0
        # A transaction pipeline is not kept together by the event-loop
        # cluster client: refused, nothing sent.
        t = client.pipeline(transaction=True)
        t.execute("SET", a, "sent?")
        with pytest.raises(vkclient.CommandNotAllowedError) as info:
            await t.run()
        assert str(info.value) == ("command not allowed on a shared connection: a transaction "
                                   "pipeline of an event-loop client in cluster mode: run it "
                                   "on the blocking client or on a session")
        assert topologies.cli(cluster.key_owner(a), "EXISTS", a) == 0
        # The client is still fine afterwards.
        assert await client.set(a, "ok") is True
        assert topologies.cli(cluster.key_owner(a), "GET", a) == "ok"
        await client.delete(a)


# ---- routing without the key table ----------------------------------------------------

@pytest.mark.asyncio
async def test_keyless_and_server_located_commands(cluster):  # noqa: F811
    async with vka.Client(cluster.config()) as client:
        assert await client.ping() is True
        assert await client.execute("ECHO", "hello") == b"hello"
        # SORT is not in the key table: the key is asked of the server,
        # and the command goes to its master on every master.
        for owner, (key,) in keys_per_master(cluster, unique("async-sort")).items():
            await client.execute("RPUSH", key, 3, 1, 2)
            assert await client.execute("SORT", key) == [b"1", b"2", b"3"]
            assert await client.execute("SORT", key, "STORE", "{%s}:sorted" % key) == 3
            assert topologies.cli(owner, "LLEN", "{%s}:sorted" % key) == 3
            await client.execute("DEL", key, "{%s}:sorted" % key)
        assert client.status().moved_redirects == 0
        with pytest.raises(vkclient.ResponseError, match="^ERR unknown command"):
            await client.execute("NOSUCHCOMMAND", "x")


# ---- pipelines -----------------------------------------------------------------------

@pytest.mark.asyncio
async def test_pipeline_spans_every_master_in_order(cluster):  # noqa: F811
    owners = keys_per_master(cluster, unique("async-pipeline"), per_master=12)
    keys = [k for ks in owners.values() for k in ks]
    random.Random(7).shuffle(keys)   # interleave the masters
    async with vka.Client(cluster.config()) as client:
        p = client.pipeline()
        for i, key in enumerate(keys):
            p.execute("SET", key, i).execute("INCR", key).execute("GET", key)
        p.execute("PING")
        assert len(p) == 3 * len(keys) + 1 >= 100
        replies = await p.run()
        expected = []
        for i, _ in enumerate(keys):
            expected += ["OK", i + 1, str(i + 1).encode()]
        assert replies == expected + ["PONG"]
        assert len(p) == 0
        for i, key in enumerate(keys):
            assert topologies.cli(cluster.key_owner(key), "GET", key) == str(i + 1)
        # Several pipelines and single commands in flight at once.
        pipes = []
        for n in range(4):
            q = client.pipeline()
            for key in keys:
                q.execute("INCRBY", key, n + 1)
            pipes.append(q.run())
        singles = [client.get(key) for key in keys]
        results = await asyncio.gather(*pipes, *singles)
        for n in range(4):
            assert len(results[n]) == len(keys)
            assert all(isinstance(r, int) for r in results[n])
        for i, key in enumerate(keys):
            assert topologies.cli(cluster.key_owner(key), "GET", key) == str(i + 1 + 10)
        # A transaction cannot be kept on one connection: refused, as by the
        # blocking cluster pipeline.
        with vkclient.Client(cluster.config()) as blocking:
            bp = blocking.pipeline()
            with pytest.raises(vkclient.Error) as info:
                bp.execute("MULTI").execute("SET", keys[0], "tx").execute("EXEC")
                bp.run()
        expected_error = info.value
        q = client.pipeline()
        with pytest.raises(vkclient.Error) as info:
            q.execute("MULTI").execute("SET", keys[0], "tx").execute("EXEC")
            await q.run()
        assert type(info.value) is type(expected_error) is vkclient.CommandNotAllowedError
        assert str(info.value) == str(expected_error)
        assert topologies.cli(cluster.key_owner(keys[0]), "GET", keys[0]) == "11"


# ---- blocking commands and cancellation ------------------------------------------------

@pytest.mark.asyncio
async def test_blocking_command_and_cancel(cluster):  # noqa: F811
    owners = keys_per_master(cluster, unique("async-blpop"), per_master=2)
    owner, (queue, other) = next(iter(owners.items()))
    async with vka.Client(cluster.config()) as client:
        await client.set(other, "beside")
        waiting = asyncio.ensure_future(client.execute("BLPOP", queue, 5))
        assert await until(lambda: blocked_clients(owner) == 1, 5.0)
        # Another key of the same master is served meanwhile.
        assert await asyncio.wait_for(client.get(other), 2.0) == b"beside"
        assert not waiting.done()
        topologies.cli(owner, "RPUSH", queue, "pushed")
        assert await asyncio.wait_for(waiting, 5.0) == [queue.encode(), b"pushed"]
        # A timeout of its own: answered with nil after it.
        started = time.monotonic()
        assert await client.execute("BLPOP", queue, 1) is None
        assert time.monotonic() - started >= 0.9
        # A task waiting on BLPOP forever, cancelled: the server's wait ends
        # and the client goes on.
        task = asyncio.ensure_future(client.execute("BLPOP", queue, 0))
        assert await until(lambda: blocked_clients(owner) == 1, 5.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await until(lambda: blocked_clients(owner) == 0, 5.0)
        assert await client.get(other) == b"beside"
        # wait_for timing out cancels the operation too.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(client.execute("BLPOP", queue, 0), 0.3)
        assert await until(lambda: blocked_clients(owner) == 0, 5.0)
        topologies.cli(owner, "RPUSH", queue, "kept")
        assert topologies.cli(owner, "LRANGE", queue, 0, -1) == ["kept"]
        assert await client.execute("LPOP", queue) == b"kept"
        await client.delete(other)


# ---- unreachable seeds -------------------------------------------------------------------

@pytest.mark.asyncio
async def test_unreachable_seeds_fail_like_the_blocking_client(cluster, harness):  # noqa: F811
    config = vkclient.Config(cluster=vkclient.Cluster(["127.0.0.1:%d" % harness.free_port()]))
    with pytest.raises(vkclient.Error) as info:
        vkclient.Client(config)
    expected = info.value
    client = vka.Client(config)
    with pytest.raises(vkclient.Error) as info:
        await client.execute("GET", "k")
    assert type(info.value) is type(expected) is vkclient.ConnectionError
    assert str(info.value) == str(expected)
    assert str(info.value).startswith("redis cluster: all nodes are unreachable: ")
    assert client.is_connected() is False
    assert client.status().mode == "cluster"
    await client.close()
    # A seed that is down is skipped when another one answers.
    config = vkclient.Config(cluster=vkclient.Cluster(
        ["127.0.0.1:%d" % harness.free_port()] + cluster.addresses[:1]))
    async with vka.Client(config) as client:
        key = unique("async-seeds")
        assert await client.set(key, "1") is True
        assert topologies.cli(cluster.key_owner(key), "GET", key) == "1"


# ---- the lock --------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_lock_manager_on_a_cluster_client(cluster):  # noqa: F811
    lock_key, counter_key = unique("async-cluster-lock"), unique("async-cluster-counter")
    options = vkclient.LockOptions(expiry=5, tries=1000, retry_delay=0.002)
    async with vka.Client(cluster.config()) as client:
        locks = vka.LockManager(client)
        state = {"inside": 0, "overlaps": 0, "last_token": 0, "regressions": 0}

        async def worker():
            for _ in range(4):
                async with locks.lock(lock_key, options=options) as handle:
                    state["inside"] += 1
                    if state["inside"] > 1:
                        state["overlaps"] += 1
                    if handle.fencing_token <= state["last_token"]:
                        state["regressions"] += 1
                    state["last_token"] = handle.fencing_token
                    value = int(await client.get(counter_key) or 0)
                    await asyncio.sleep(0)   # invite another holder in, if the lock let one
                    await client.set(counter_key, value + 1)
                    state["inside"] -= 1

        await asyncio.gather(*(worker() for _ in range(25)))
        assert (state["overlaps"], state["regressions"]) == (0, 0)
        assert topologies.cli(cluster.key_owner(counter_key), "GET", counter_key) == "100"
        assert topologies.cli(cluster.key_owner(lock_key), "EXISTS", lock_key) == 0
        # The held lock is a key on its slot's owner, and it excludes a
        # holder of the blocking API on the same cluster.
        async with locks.lock(lock_key) as handle:
            assert handle.fencing_token > state["last_token"]
            assert topologies.cli(cluster.key_owner(lock_key), "EXISTS", lock_key) == 1
            assert await locks.try_lock(lock_key) is None
            with vkclient.Client(cluster.config()) as blocking:
                blocking_locks = vkclient.LockManager(blocking)
                assert blocking_locks.try_lock(lock_key) is None
                blocking_locks.close()
        assert topologies.cli(cluster.key_owner(lock_key), "EXISTS", lock_key) == 0
        # with_lock runs the function under the lock.
        assert await locks.with_lock(lock_key, lambda: "ran") == "ran"


# ---- a slot migration under async load ------------------------------------------------

@pytest.mark.asyncio
async def test_slot_migration_under_async_load(harness):
    # A cluster of its own: the shared one keeps its slot map.
    loop = asyncio.get_running_loop()
    own = await loop.run_in_executor(
        None, lambda: topologies.Cluster(Env.server, masters=3, replicas=0).start())
    try:
        client = vka.Client(vkclient.Config(cluster=vkclient.Cluster(own.seed_addresses[:1])))
        tag = "{%s}" % unique("async-migrating")
        keys = ["%s:%d" % (tag, k) for k in range(20)]
        multi = ["%s:multi:%d" % (tag, k) for k in range(6)]
        slot = own.key_slot(keys[0])
        other = next("steady:%d" % i for i in range(100)
                     if own.key_slot("steady:%d" % i) != slot)
        await asyncio.gather(*(client.set(key, 0) for key in keys))
        await client.set(other, "steady")
        source = own.master_index(own.slot_owner(slot))
        target = (source + 1) % 3
        stop = asyncio.Event()
        errors = []
        increments = [0] * len(keys)
        operations = [0]
        rng = random.Random(11)

        async def singles():
            # INCR then GET of a random key of the moving slot.
            while not stop.is_set():
                k = rng.randrange(len(keys))
                try:
                    assert isinstance(await client.execute("INCR", keys[k]), int)
                    increments[k] += 1
                    assert await client.get(keys[k]) is not None
                except Exception as err:  # must not happen: checked below
                    errors.append(err)
                operations[0] += 2

        async def pipelines():
            # Four INCRs around a key of another slot: each batch spans
            # nodes and meets ASK and MOVED command by command.
            while not stop.is_set():
                picked = [rng.randrange(len(keys)) for _ in range(4)]
                p = client.pipeline()
                for i, k in enumerate(picked):
                    p.execute("INCR", keys[k])
                    if i == 1:
                        p.execute("GET", other)
                try:
                    replies = await p.run()
                    assert replies[2] == b"steady", replies
                    for k, r in zip(picked, replies[:2] + replies[3:]):
                        assert isinstance(r, int), replies
                        increments[k] += 1
                except Exception as err:  # must not happen: checked below
                    errors.append(err)
                operations[0] += 5

        multi_rounds = [0]

        async def multi_keys():
            # MSET then MGET of keys of the moving slot: refused with
            # TRYAGAIN while they are split, which the client rides out.
            n = 0
            while not stop.is_set():
                n += 1
                multi_rounds[0] = n - 1
                try:
                    args = []
                    for key in multi:
                        args += [key, n]
                    assert await client.execute("MSET", *args) == "OK"
                    assert await client.execute("MGET", *multi) == [str(n).encode()] * len(multi)
                except Exception as err:  # must not happen: checked below
                    errors.append(err)
                operations[0] += 2

        tasks = [asyncio.ensure_future(singles()) for _ in range(16)]
        tasks += [asyncio.ensure_future(pipelines()) for _ in range(2)]
        tasks.append(asyncio.ensure_future(multi_keys()))
        try:
            # The load runs (the multi keys written) before the slot moves.
            assert await until(lambda: operations[0] >= 200 and multi_rounds[0] >= 2, 10.0), \
                (operations, multi_rounds, errors)
            before = operations[0]
            # Every key of the slot is on its owner, the multi keys too.
            listed = own.node(own.slot_owner(slot)).cli("CLUSTER", "GETKEYSINSLOT", slot, 100)
            assert sorted(listed) == sorted(keys + multi)
            # The slot's keys move five at a time with pauses: the clients
            # meet the ASK phase, then MOVED.
            moved = await loop.run_in_executor(
                None, lambda: own.migrate_slot(slot, target, pause=0.25, batch=5))
            await asyncio.sleep(0.3)
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
        assert errors == [], sorted({repr(e) for e in errors})[:5]
        assert moved == len(keys) + len(multi)
        assert operations[0] - before > 100
        new_owner = own.masters[target]
        assert own.slot_owner(slot) == new_owner
        # Every acknowledged increment is there, on the new owner.
        for k, key in enumerate(keys):
            assert own.node(new_owner).cli("GET", key) == str(increments[k]), key
            assert await client.get(key) == str(increments[k]).encode()
        status = client.status()
        assert status.mode == "cluster"
        assert status.moved_redirects > 0 and status.ask_redirects > 0, status
        assert sorted(status.nodes) == sorted(own.masters)
        await client.close()
    finally:
        await loop.run_in_executor(None, own.stop)
