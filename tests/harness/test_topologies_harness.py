"""Checks of topologies.py against real servers: the Sentinel and Cluster
tests of every language rely on what it promises (a group that can fail
over at once, a settled cluster, the Python key slot, slot moves)."""
import os
import random
import socket
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import topologies  # noqa: E402
import vkharness  # noqa: E402

HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vkharness.py")
SERVERS = ["valkey-server", "redis-server"]


def _gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("binary", SERVERS)
def test_sentinel_group_starts_ready_and_fails_over(binary):
    group = topologies.SentinelGroup(binary, name="selftest")
    with group:
        assert len(group.nodes) == 3 and len(group.sentinels) == 3
        assert group.sentinel_addresses == ["127.0.0.1:%d" % s.port for s in group.sentinels]
        assert group.master() == 0
        assert group.master_address() == group.nodes[0].address
        assert [group.node_is_master(i) for i in range(3)] == [True, False, False]
        # Ready means a failover can start at once: every sentinel sees both
        # replicas and all three sentinels.
        for s in group.sentinels:
            assert len(s.cli("SENTINEL", "REPLICAS", "selftest")) == 2
            assert s.cli("SENTINEL", "CKQUORUM", "selftest").startswith("OK 3 usable")
        # The replicas really replicate the master.
        group.nodes[0].cli("SET", "selftest:k", "v1")
        assert _wait_for(lambda: all(n.cli("GET", "selftest:k") == "v1"
                                     for n in group.nodes[1:]))

        group.failover()
        new = group.wait_new_master(0, 10.0)
        assert new in (1, 2)
        assert group.node_is_master(new)
        assert group.nodes[new].cli("GET", "selftest:k") == "v1"
        assert group.nodes[new].cli("SET", "selftest:k", "v2") == "OK"
        pids = [p.pid for p in group.nodes + group.sentinels]
    assert all(_gone(pid) for pid in pids)


def test_key_slot_matches_the_server():
    with vkharness.Server("valkey-server", extra=["cluster-enabled yes",
                                                  "cluster-port %d" % vkharness.free_port()]) as s:
        rng = random.Random(1234)
        keys = ["", "a", "foo", "{user1}:a", "{user1}:b", "x{user1}y", "{}", "{}user1",
                "a{}{b}", "{{a}}", "a}b{c}", "{a", "a}", "{ab}{cd}", "\u00e9t\u00e9"]
        keys += ["".join(rng.choice("abcxyz{}:01") for _ in range(rng.randint(1, 12)))
                 for _ in range(100)]
        for key in keys:
            assert topologies.key_slot(key) == s.cli("CLUSTER", "KEYSLOT", key), key
        assert topologies.key_slot(b"\xff\x00{\xfe}") == s.cli("CLUSTER", "KEYSLOT",
                                                                b"\xff\x00{\xfe}")
        assert topologies.Cluster.key_slot("{user1}:a") == topologies.key_slot("{user1}:b")


@pytest.mark.parametrize("binary", SERVERS)
def test_cluster_starts_moves_a_slot_and_fails_over(binary):
    cluster = topologies.Cluster(binary, masters=3, replicas=1)
    with cluster:
        assert len(cluster.nodes) == 6 and len(cluster.masters) == 3
        assert cluster.seed_addresses == cluster.masters
        # The slots are shared evenly, and every node sees the same map.
        expected = [(0, 5460, cluster.masters[0]), (5461, 10921, cluster.masters[1]),
                    (10922, 16383, cluster.masters[2])]
        for i in range(6):
            assert cluster.slot_map(i) == expected
            assert cluster.cluster_info(i)["cluster_state"] == "ok"
        for m in range(3):
            role = cluster.nodes[cluster.shards[m][1]].cli("ROLE")
            assert role[0] == "slave" and role[2] == cluster.nodes[m].port
        assert cluster.slot_owner(0) == cluster.masters[0]
        assert cluster.slot_owner(16383) == cluster.masters[2]

        # Migration: the keys follow the slot; the source redirects.
        slot = cluster.key_slot("{mig}")
        src = cluster.master_index(cluster.slot_owner(slot))
        dst = (src + 1) % 3
        for n in range(25):
            assert cluster.key_owner("{mig}%d" % n).cli("SET", "{mig}%d" % n, n) == "OK"
        assert cluster.migrate_slot(slot, dst, batch=7) == 25
        assert cluster.slot_owner(slot) == cluster.masters[dst]
        for i in range(6):
            owner = [o for first, last, o in cluster.slot_map(i) if first <= slot <= last]
            assert owner == [cluster.masters[dst]]
        target = cluster.node(cluster.masters[dst])
        assert [target.cli("GET", "{mig}%d" % n) for n in range(25)] == \
            [str(n) for n in range(25)]
        source = cluster.node(cluster.masters[src])
        assert source.cli("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
        with pytest.raises(vkharness.ReplyError, match="^MOVED %d " % slot):
            source.cli("GET", "{mig}0")

        # Failover: the replica of shard 0 takes over its slots and data.
        old = cluster.masters[0]
        key = next(k for k in ("fo%d" % n for n in range(1000))
                   if cluster.slot_owner(cluster.key_slot(k)) == old)
        assert cluster.node(old).cli("SET", key, "before") == "OK"
        before = cluster.slot_map(0)
        new = cluster.failover(0)
        assert new != old and cluster.masters[0] == new
        assert cluster.node(new).cli("ROLE")[0] == "master"
        # A manual failover waits until the replica caught up: no write lost.
        assert cluster.node(new).cli("GET", key) == "before"
        assert _wait_for(lambda: cluster.node(old).cli("ROLE")[0] == "slave")
        after = [(first, last, new if owner == old else owner) for first, last, owner in before]
        for i in range(6):
            assert cluster.slot_map(i) == after
        pids = [n.pid for n in cluster.nodes]
    assert all(_gone(pid) for pid in pids)


def _raw(address, *args):
    """One inline command on a fresh connection; the raw reply bytes."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall((" ".join(args) + "\r\n").encode())
        time.sleep(0.05)
        return s.recv(65536)


def test_run_topologies_exports_working_topologies():
    script = (
        "import os\n"
        "print(os.environ['VK_TEST_SENTINEL_MASTER'])\n"
        "print(os.environ['VK_TEST_SENTINEL_ADDRS'])\n"
        "print(os.environ['VK_TEST_CLUSTER_ADDRS'])\n")
    out = subprocess.run([sys.executable, HARNESS, "run", "--plain-only", "--topologies",
                          "--server", "redis-server", "--", sys.executable, "-c", script],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    name, sentinels, cluster = out.stdout.split()
    assert name == "vkmaster"
    assert len(sentinels.split(",")) == 3 and len(cluster.split(",")) == 3
    # Everything was stopped when the command ended.
    for address in sentinels.split(",") + cluster.split(","):
        with pytest.raises(OSError):
            _raw(address, "PING")

    # While the command runs, the sentinels name a master and the cluster
    # serves every slot.
    check = (
        "import os, socket, sys, time\n"
        "def raw(address, *args):\n"
        "    host, port = address.rsplit(':', 1)\n"
        "    with socket.create_connection((host, int(port)), timeout=5) as s:\n"
        "        s.sendall((' '.join(args) + '\\r\\n').encode())\n"
        "        time.sleep(0.05)\n"
        "        return s.recv(65536).decode()\n"
        "name = os.environ['VK_TEST_SENTINEL_MASTER']\n"
        "for a in os.environ['VK_TEST_SENTINEL_ADDRS'].split(','):\n"
        "    assert '127.0.0.1' in raw(a, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name)\n"
        "for a in os.environ['VK_TEST_CLUSTER_ADDRS'].split(','):\n"
        "    info = raw(a, 'CLUSTER', 'INFO')\n"
        "    assert 'cluster_state:ok' in info and 'cluster_slots_assigned:16384' in info\n"
        "    assert 'cluster_known_nodes:3' in info\n"
        "assert 'VK_TEST_ADDR' in os.environ\n")
    out = subprocess.run([sys.executable, HARNESS, "run", "--plain-only", "--topologies",
                          "--", sys.executable, "-c", check],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr

    # Without the flag, nothing of the topologies is started or exported.
    out = subprocess.run([sys.executable, HARNESS, "run", "--plain-only", "--",
                          sys.executable, "-c",
                          "import os; print([k for k in os.environ if 'SENTINEL' in k "
                          "or 'CLUSTER' in k])"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_tls_group_and_cluster():
    # Every node and sentinel serves TLS only; replication, the cluster bus,
    # the sentinels' links and MIGRATE run over TLS too.
    with topologies.SentinelGroup("valkey-server", name="selftls", tls=True) as group:
        assert group.master() == 0
        group.nodes[0].cli("SET", "tls:k", "v")
        assert _wait_for(lambda: all(n.cli("GET", "tls:k") == "v" for n in group.nodes[1:]))
        try:
            answer = _raw(group.sentinel_addresses[0], "PING")
        except OSError:
            answer = b""
        assert not answer.startswith(b"+PONG")   # no plain text on a sentinel
    with topologies.Cluster("valkey-server", masters=3, replicas=0, tls=True) as cluster:
        slot = cluster.key_slot("{tls}")
        for n in range(5):
            cluster.key_owner("{tls}%d" % n).cli("SET", "{tls}%d" % n, n)
        dst = (cluster.master_index(cluster.slot_owner(slot)) + 1) % 3
        assert cluster.migrate_slot(slot, dst) == 5
        assert cluster.node(cluster.masters[dst]).cli("GET", "{tls}4") == "4"
