"""Sentinel and Cluster through the Python binding, against real groups and
clusters: routing to the master / the slot owner (checked on the node
itself), multi-key commands and hash tags, the cross-slot refusal,
pipelines across masters, locks, a failover and a slot migration under
load with one client that is never re-created.

Run under `vkharness.py run --topologies`, the shared Sentinel group and
Cluster come from VK_TEST_SENTINEL_ADDRS / VK_TEST_SENTINEL_MASTER /
VK_TEST_CLUSTER_ADDRS; without them this module starts its own through
topologies.py. Tests that fail a master over or move slots start a group or
cluster of their own, so the shared ones keep their documented shape.
"""

import os
import random
import threading
import time
import uuid

import pytest

import topologies  # tests/harness, on sys.path through conftest
import vkclient

from conftest import Env, Writer, wait_until

CROSSSLOT_TEXT = "invalid argument: CROSSSLOT keys in request don't hash to the same slot"


def unique(prefix):
    return "vkpy:%s:%s" % (prefix, uuid.uuid4().hex[:10])


# ---------------------------------------------------------------------------
# The shared topologies: from the harness, or started here
# ---------------------------------------------------------------------------

class SharedSentinel:
    """A Sentinel group known by its sentinels' addresses and master name."""

    def __init__(self, addresses, name):
        self.addresses = addresses
        self.name = name

    def master_address(self):
        """The master as the sentinels name it (every sentinel must agree)."""
        named = {tuple(topologies.cli(a, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name))
                 for a in self.addresses}
        assert len(named) == 1, named
        host, port = named.pop()
        return "%s:%s" % (host, port)

    def replica_addresses(self):
        replicas = topologies.cli(self.addresses[0], "SENTINEL", "REPLICAS", self.name)
        return ["%s:%s" % (r["ip"], r["port"]) for r in (dict(zip(x[0::2], x[1::2]))
                                                         for x in replicas)]

    def config(self, addresses=None, name=None, **options):
        opts = vkclient.ConnectionOptions(**options) if options else None
        return vkclient.Config(sentinel=vkclient.Sentinel(
            self.addresses if addresses is None else addresses,
            master_name=self.name if name is None else name), options=opts)


class SharedCluster:
    """A Cluster known by its masters' addresses."""

    def __init__(self, addresses):
        self.addresses = addresses

    def slot_map(self):
        return sorted((r[0], r[1], "%s:%d" % (r[2][0], r[2][1]))
                      for r in topologies.cli(self.addresses[0], "CLUSTER", "SLOTS"))

    def slot_owner(self, slot):
        for first, last, owner in self.slot_map():
            if first <= slot <= last:
                return owner
        return None

    def key_owner(self, key):
        return self.slot_owner(topologies.key_slot(key))

    def config(self):
        return vkclient.Config(cluster=vkclient.Cluster(self.addresses))


@pytest.fixture(scope="module")
def sentinel():
    if os.environ.get("VK_TEST_SENTINEL_ADDRS"):
        yield SharedSentinel(os.environ["VK_TEST_SENTINEL_ADDRS"].split(","),
                             os.environ["VK_TEST_SENTINEL_MASTER"])
        return
    with topologies.SentinelGroup(Env.server, name="vkmaster") as group:
        yield SharedSentinel(group.sentinel_addresses, group.name)


@pytest.fixture(scope="module")
def cluster():
    if os.environ.get("VK_TEST_CLUSTER_ADDRS"):
        yield SharedCluster(os.environ["VK_TEST_CLUSTER_ADDRS"].split(","))
        return
    with topologies.Cluster(Env.server, masters=3, replicas=0) as started:
        yield SharedCluster(started.masters)


@pytest.fixture
def sentinel_client(sentinel):
    with vkclient.Client(sentinel.config()) as c:
        yield c


@pytest.fixture
def cluster_client(cluster):
    with vkclient.Client(cluster.config()) as c:
        yield c


# ---------------------------------------------------------------------------
# Mutual exclusion, shared by the Sentinel and Cluster lock tests
# ---------------------------------------------------------------------------

def run_contention(client, lock_key, counter_key, threads=4, rounds=25, manager=None):
    """`threads` threads each take the lock `rounds` times and, only while
    holding it, increment a counter on the server with a GET and a SET (a
    read-modify-write that loses updates unless the lock excludes).
    The lock is `manager`'s when given, else a manager over `client`.
    Returns (counter, overlaps, token regressions, errors)."""
    locks = manager if manager is not None else vkclient.LockManager(client)
    options = vkclient.LockOptions(tries=1000, retry_delay=0.002)
    state = {"inside": 0, "overlaps": 0, "last_token": 0, "regressions": 0}
    guard = threading.Lock()
    errors = []

    def contend():
        try:
            for _ in range(rounds):
                with locks.lock(lock_key, options=options) as handle:
                    with guard:
                        state["inside"] += 1
                        if state["inside"] > 1:
                            state["overlaps"] += 1
                        if handle.fencing_token <= state["last_token"]:
                            state["regressions"] += 1
                        state["last_token"] = handle.fencing_token
                    seen = int(client.get(counter_key) or 0)
                    time.sleep(0)  # invite another holder in, if the lock let one
                    client.set(counter_key, seen + 1)
                    with guard:
                        state["inside"] -= 1
        except Exception as err:  # reported by the caller
            errors.append(err)

    workers = [threading.Thread(target=contend) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    if manager is None:
        locks.close()
    return int(client.get(counter_key)), state["overlaps"], state["regressions"], errors


# ---------------------------------------------------------------------------
# Sentinel
# ---------------------------------------------------------------------------

def test_sentinel_writes_land_on_the_named_master(sentinel, sentinel_client):
    key, value = unique("sentinel"), uuid.uuid4().hex
    assert sentinel_client.set(key, value) is True
    assert sentinel_client.get(key) == value.encode()
    master = sentinel.master_address()
    # The node the sentinels name is a master and holds the value itself.
    assert topologies.cli(master, "ROLE")[0] == "master"
    assert topologies.cli(master, "GET", key) == value
    status = sentinel_client.status()
    assert status.mode == "sentinel"
    assert status.master_address == master
    assert status.master_switches == 0
    # The replicas are not where the client writes: they are read-only.
    replicas = sentinel.replica_addresses()
    assert len(replicas) == 2 and master not in replicas
    for replica in replicas:
        with pytest.raises(topologies.ReplyError, match="^READONLY"):
            topologies.cli(replica, "SET", key, "from-test")


def test_sentinel_one_address_is_enough(sentinel):
    # The client asks the one sentinel it was given and finds the master.
    with vkclient.Client(sentinel.config(addresses=sentinel.addresses[-1:])) as c:
        key = unique("one-sentinel")
        c.execute("RPUSH", key, "a", "b")
        assert c.execute("LRANGE", key, 0, -1) == [b"a", b"b"]
        assert c.status().master_address == sentinel.master_address()
        assert topologies.cli(sentinel.master_address(), "LLEN", key) == 2


def test_sentinel_lock_mutual_exclusion(sentinel, sentinel_client):
    lock_key, counter_key = unique("sentinel-lock"), unique("sentinel-counter")
    counter, overlaps, regressions, errors = run_contention(sentinel_client, lock_key,
                                                            counter_key)
    assert errors == []
    assert (counter, overlaps, regressions) == (4 * 25, 0, 0)
    # The counter lives on the master the sentinels name.
    assert topologies.cli(sentinel.master_address(), "GET", counter_key) == "100"
    # A held lock is a key on that master, and nobody else gets it.
    locks = vkclient.LockManager(sentinel_client)
    handle = locks.try_lock(lock_key)
    assert handle is not None
    assert topologies.cli(sentinel.master_address(), "EXISTS", lock_key) == 1
    assert locks.try_lock(lock_key) is None
    handle.unlock()
    assert topologies.cli(sentinel.master_address(), "EXISTS", lock_key) == 0
    locks.close()


def test_sentinel_unknown_master_name_fails_at_construction(sentinel):
    with pytest.raises(vkclient.ResponseError) as info:
        vkclient.Client(sentinel.config(name="no-such-master"))
    assert str(info.value) == ('redis sentinel: master "no-such-master" is unknown to every '
                               'reachable sentinel')
    assert info.value.code == vkclient.ResponseError.code


@pytest.mark.parametrize("how", ["sentinel-failover", "master-killed"])
def test_sentinel_failover_under_load(how):
    # A group of its own: the shared one keeps its master.
    group = topologies.SentinelGroup(Env.server, name="vkpyfailover").start()
    client = None
    try:
        client = vkclient.Client(vkclient.Config(
            sentinel=vkclient.Sentinel(group.sentinel_addresses, master_name=group.name),
            options=vkclient.ConnectionOptions(dial_timeout=0.5, read_timeout=1.0)))
        old = group.master()
        assert old == 0 and client.status().master_address == group.nodes[0].address
        writers = [Writer(client, unique("failover-%d" % i)) for i in range(2)]
        for w in writers:
            w.start()
        assert wait_until(lambda: all(w.last_ok > 10 for w in writers), 5.0)
        assert [w.errors for w in writers] == [[], []]

        started = time.monotonic()
        if how == "sentinel-failover":
            group.failover()
        else:
            group.nodes[old].kill()   # a crash: the sentinels need down-after (1 s) first
        new = group.wait_new_master(old, 20.0)
        assert new > 0
        new_address = group.nodes[new].address
        # The client follows the sentinels' switch to the new master...
        switched = wait_until(lambda: client.status().master_address == new_address, 20.0)
        assert switched is not None
        # ... and every writer's writes succeed again within 5 s of it.
        resumed = wait_until(lambda: all(w.last_ok_at > switched for w in writers), 5.0)
        assert resumed is not None
        time.sleep(0.3)   # keep writing on the new master for a while
        for w in writers:
            w.stop_asked.set()
        for w in writers:
            w.join(15)
            assert not w.is_alive()

        # What each writer saw acknowledged last is what the new master holds.
        for w in writers:
            assert w.last_ok_at > switched
            assert group.nodes[new].cli("GET", w.key) == str(w.last_ok)
        # Errors are vkclient errors, only inside the switch window, and few:
        # at most one per writer per pause between its attempts.
        errors = [e for w in writers for e in w.errors]
        summary = "switch after %.3f s, %d errors: %s" % (
            switched - started, len(errors), sorted({repr(e) for _, e in errors})[:5])
        for at, err in errors:
            assert isinstance(err, vkclient.Error), summary
            assert started <= at <= switched + 1.0, (at - started, summary)
        assert len(errors) <= 2 * ((switched + 1.0 - started) / 0.02 + 5), summary
        # The same client object, still connected, now on the new master.
        status = client.status()
        assert (status.master_address, status.master_switches) == (new_address, 1), \
            (status, summary)
        assert client.is_connected(), (status, summary)
        key = unique("after-failover")
        assert client.set(key, "1") is True
        assert group.nodes[new].cli("GET", key) == "1"
    finally:
        if client is not None:
            client.close()
        group.stop()


# ---------------------------------------------------------------------------
# Cluster
# ---------------------------------------------------------------------------

def keys_per_master(cluster, prefix, per_master=1):
    """{master address: [keys it owns]}, at least per_master keys each."""
    owners = {m: [] for m in {owner for _, _, owner in cluster.slot_map()}}
    i = 0
    while any(len(keys) < per_master for keys in owners.values()):
        key = "%s:%d" % (prefix, i)
        owner = cluster.key_owner(key)
        if len(owners[owner]) < per_master:
            owners[owner].append(key)
        i += 1
    return owners


def test_cluster_keys_on_every_master(cluster, cluster_client):
    owners = keys_per_master(cluster, unique("every-master"))
    assert sorted(owners) == sorted(cluster.addresses)
    status = cluster_client.status()
    assert status.mode == "cluster" and sorted(status.nodes) == sorted(cluster.addresses)
    assert sum(status.nodes.values()) == topologies.SLOTS
    for owner, (key,) in owners.items():
        value = uuid.uuid4().hex
        assert cluster_client.set(key, value) is True
        assert cluster_client.get(key) == value.encode()
        # The owner holds it; any other master redirects to the owner.
        assert topologies.cli(owner, "GET", key) == value
        for other in cluster.addresses:
            if other != owner:
                with pytest.raises(topologies.ReplyError,
                                   match="^MOVED %d %s$" % (topologies.key_slot(key), owner)):
                    topologies.cli(other, "GET", key)


def test_cluster_hash_tags_share_a_slot(cluster, cluster_client):
    a, b = "{user1}:a", "{user1}:b"
    assert topologies.key_slot(a) == topologies.key_slot(b)
    va, vb = uuid.uuid4().hex, uuid.uuid4().hex
    assert cluster_client.execute("MSET", a, va, b, vb) == "OK"
    assert cluster_client.execute("MGET", a, b, "{user1}:missing") == [va.encode(),
                                                                        vb.encode(), None]
    owner = cluster.key_owner(a)
    assert topologies.cli(owner, "MGET", a, b) == [va, vb]
    assert cluster_client.execute("DEL", a, b) == 2
    assert topologies.cli(owner, "EXISTS", a, b) == 0


def test_cluster_cross_slot_is_refused_by_the_client(cluster, cluster_client):
    a, b = unique("cross-a"), unique("cross-b")
    while topologies.key_slot(a) == topologies.key_slot(b):
        b = unique("cross-b")
    with pytest.raises(vkclient.InvalidArgumentError) as info:
        cluster_client.execute("MSET", a, "1", b, "2")
    assert str(info.value) == CROSSSLOT_TEXT
    # Nothing was written on either owner.
    assert topologies.cli(cluster.key_owner(a), "EXISTS", a) == 0
    assert topologies.cli(cluster.key_owner(b), "EXISTS", b) == 0
    # In a pipeline the whole batch is refused before anything is sent.
    p = cluster_client.pipeline()
    p.execute("SET", a, "sent?").execute("MGET", a, b)
    with pytest.raises(vkclient.InvalidArgumentError) as info:
        p.run()
    assert str(info.value) == CROSSSLOT_TEXT
    assert topologies.cli(cluster.key_owner(a), "EXISTS", a) == 0
    # The client is still fine afterwards.
    assert cluster_client.set(a, "ok") is True


def test_cluster_pipeline_spans_every_master_in_order(cluster, cluster_client):
    owners = keys_per_master(cluster, unique("pipeline"), per_master=12)
    keys = [k for ks in owners.values() for k in ks]
    random.Random(7).shuffle(keys)   # interleave the masters
    p = cluster_client.pipeline()
    for i, key in enumerate(keys):
        p.execute("SET", key, i).execute("INCR", key).execute("GET", key)
    p.execute("PING")
    assert len(p) == 3 * len(keys) + 1 >= 100
    replies = p.run()
    expected = []
    for i, _ in enumerate(keys):
        expected += ["OK", i + 1, str(i + 1).encode()]
    assert replies == expected + ["PONG"]
    for i, key in enumerate(keys):
        assert topologies.cli(cluster.key_owner(key), "GET", key) == str(i + 1)


def test_cluster_lock_mutual_exclusion(cluster, cluster_client):
    lock_key, counter_key = unique("cluster-lock"), unique("cluster-counter")
    counter, overlaps, regressions, errors = run_contention(cluster_client, lock_key,
                                                            counter_key)
    assert errors == []
    assert (counter, overlaps, regressions) == (4 * 25, 0, 0)
    assert topologies.cli(cluster.key_owner(counter_key), "GET", counter_key) == "100"
    # The held lock is a key on its slot's owner.
    locks = vkclient.LockManager(cluster_client)
    with locks.lock(lock_key) as handle:
        assert handle.fencing_token > 0
        assert topologies.cli(cluster.key_owner(lock_key), "EXISTS", lock_key) == 1
        assert locks.try_lock(lock_key) is None
    assert topologies.cli(cluster.key_owner(lock_key), "EXISTS", lock_key) == 0
    locks.close()


def test_cluster_slot_migration_under_load():
    # A cluster of its own: the shared one keeps its slot map.
    with topologies.Cluster(Env.server, masters=3, replicas=0) as own:
        with vkclient.Client(vkclient.Config(cluster=vkclient.Cluster(own.seed_addresses))) as c:
            keys = ["{migrating}:%d" % k for k in range(20)]
            slot = own.key_slot(keys[0])
            other = next("spread:%d" % i for i in range(100)
                         if own.key_slot("spread:%d" % i) != slot)
            for key in keys:
                c.set(key, 0)
            c.set(other, "steady")
            source = own.master_index(own.slot_owner(slot))
            target = (source + 1) % 3
            stop = threading.Event()
            errors = []
            increments = [[0] * len(keys) for _ in range(2)]
            operations = [0, 0]

            def singles(n):
                # INCR then GET of a random key of the moving slot.
                rng = random.Random(n)
                while not stop.is_set():
                    k = rng.randrange(len(keys))
                    try:
                        assert isinstance(c.execute("INCR", keys[k]), int)
                        increments[n][k] += 1
                        assert c.get(keys[k]) is not None
                    except Exception as err:  # must not happen: checked below
                        errors.append(err)
                    operations[n] += 2

            def pipelines(n):
                # Four INCRs around a key of another slot: each batch spans
                # nodes and meets ASK and MOVED command by command.
                rng = random.Random(n)
                while not stop.is_set():
                    picked = [rng.randrange(len(keys)) for _ in range(4)]
                    p = c.pipeline()
                    for i, k in enumerate(picked):
                        p.execute("INCR", keys[k])
                        if i == 1:
                            p.execute("GET", other)
                    try:
                        replies = p.run()
                        assert replies[2] == b"steady", replies
                        for k, r in zip(picked, replies[:2] + replies[3:]):
                            assert isinstance(r, int), replies
                            increments[n][k] += 1
                    except Exception as err:  # must not happen: checked below
                        errors.append(err)
                    operations[n] += 5

            threads = [threading.Thread(target=singles, args=(0,)),
                       threading.Thread(target=pipelines, args=(1,))]
            for t in threads:
                t.start()
            try:
                time.sleep(0.2)
                # The slot's keys move five at a time with pauses: the
                # clients meet the ASK phase, then MOVED.
                moved = own.migrate_slot(slot, target, pause=0.25, batch=5)
                time.sleep(0.3)
            finally:
                stop.set()
                for t in threads:
                    t.join(30)
            assert errors == []
            assert moved == len(keys)
            assert sum(operations) > 100
            new_owner = own.masters[target]
            assert own.slot_owner(slot) == new_owner
            # Every acknowledged increment is there, on the new owner.
            for k, key in enumerate(keys):
                total = increments[0][k] + increments[1][k]
                assert own.node(new_owner).cli("GET", key) == str(total), key
                assert c.get(key) == str(total).encode()
            status = c.status()
            assert status.moved_redirects > 0 and status.ask_redirects > 0, status


def test_cluster_failover_is_followed():
    # A cluster of its own, with a replica per master to promote.
    with topologies.Cluster(Env.server, masters=3, replicas=1) as own:
        with vkclient.Client(vkclient.Config(cluster=vkclient.Cluster(own.seed_addresses))) as c:
            key = next("failover:%d" % i for i in range(1000)
                       if own.master_index(own.slot_owner(own.key_slot("failover:%d" % i))) == 0)
            c.set(key, 0)
            stop = threading.Event()
            acked = [0]
            failures = []   # (time, exception)

            def write():
                while not stop.is_set():
                    try:
                        acked[0] = c.execute("INCR", key)
                    except vkclient.Error as err:
                        failures.append((time.monotonic(), err))
                        time.sleep(0.01)

            writer = threading.Thread(target=write)
            writer.start()
            try:
                time.sleep(0.2)
                promoted = own.failover(0)
                switched = time.monotonic()
                before = acked[0]
                # Writes go on, on the promoted replica, with the same client.
                while acked[0] < before + 50 and time.monotonic() < switched + 5.0:
                    time.sleep(0.02)
            finally:
                stop.set()
                writer.join(30)
            assert acked[0] >= before + 50
            assert own.slot_owner(own.key_slot(key)) == promoted
            assert own.key_owner(key).cli("GET", key) == str(acked[0])
            # A graceful failover loses no write; any error ends with it.
            assert all(at < switched + 5.0 for at, _ in failures), failures


# ---------------------------------------------------------------------------
# A Redlock quorum over nodes of different topologies
# ---------------------------------------------------------------------------

def test_quorum_mixes_topologies(client, sentinel_client, cluster_client):
    """One standalone server, the Sentinel group's master and the cluster:
    three independent nodes of one Redlock quorum (a majority is 2)."""
    nodes = [client, sentinel_client, cluster_client]
    quorum = vkclient.LockManager(nodes)
    lock_key, counter_key = unique("mixed-lock"), unique("mixed-counter")
    counter, overlaps, regressions, errors = run_contention(client, lock_key, counter_key,
                                                            manager=quorum)
    assert errors == []
    assert (counter, overlaps, regressions) == (4 * 25, 0, 0)

    # A held lock is a key on all three, with one value.
    with quorum.lock(lock_key) as handle:
        values = {c.get(lock_key) for c in nodes}
        assert len(values) == 1 and None not in values
        assert quorum.try_lock(lock_key) is None
    assert [c.get(lock_key) for c in nodes] == [None, None, None]
    assert handle.fencing_token > 0

    # One node holding somebody else's value still leaves a majority ...
    sentinel_client.set(lock_key, b"stranger")
    handle = quorum.try_lock(lock_key)
    assert handle is not None
    handle.unlock()
    assert sentinel_client.get(lock_key) == b"stranger"
    # ... two do not.
    cluster_client.set(lock_key, b"stranger")
    assert quorum.try_lock(lock_key) is None
    assert client.get(lock_key) is None   # the failed attempt cleaned up after itself
    sentinel_client.delete(lock_key)
    cluster_client.delete(lock_key)
    quorum.close()
