"""Sentinel groups and Clusters of real servers for the vkclient test suites.

Library (standard library only), on top of vkharness.Server: every process
runs on a free loopback port in its own temporary folder, is stopped by its
PID, and whatever is still running at interpreter exit is stopped.

    from topologies import SentinelGroup, Cluster
    with SentinelGroup("valkey-server", name="vkmaster") as g:
        g.sentinel_addresses            # ["127.0.0.1:p1", ...]
        old = g.master()                # index into g.nodes
        g.failover()
        new = g.wait_new_master(old, 10.0)
    # Data nodes that require auth: replication and the sentinels log in as
    # an ACL user of their own, `default` needs default_password.
    with SentinelGroup("valkey-server", name="vkmaster", tls=True,
                       acl_user=("replicator", "pw1"), default_password="pw2") as g:
        g.nodes[0].cli("ACL", "WHOAMI")   # "default" (cli logs in with pw2)
    with Cluster("redis-server", masters=3, replicas=1) as c:
        c.slot_owner(c.key_slot("{user1}:a"))   # "127.0.0.1:p"
        c.migrate_slot(c.key_slot("k"), 2)
        c.failover(0)

The server configurations mirror the C suite's harness
(tests/c/support/sentinels.c and clusters.c), which work with both
valkey-server 8 and redis-server 7.
"""

import os
import socket
import sys
import time

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vkharness  # noqa: E402  (the path is set just above)
from vkharness import ReplyError, Server, free_port  # noqa: E402

__all__ = ["SentinelGroup", "Cluster", "key_slot", "sentinel_binary", "cli", "SLOTS"]

READY_TIMEOUT_S = 30.0
POLL_S = 0.05
SLOTS = 16384


def _wait(predicate, timeout, what):
    """Polls predicate until it is true; raises TimeoutError naming `what`.
    Connection errors while polling count as "not yet" (a node may be busy
    switching roles)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except (OSError, ConnectionError, ReplyError):
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError("%s: not reached in %.1f s" % (what, timeout))
        time.sleep(POLL_S)


def cli(address, *args, timeout=5.0):
    """Runs one command on the plain (no TLS, no password) server at
    "host:port" on a fresh connection, like Server.cli: for the servers a
    suite only knows by address (e.g. from VK_TEST_SENTINEL_ADDRS)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock:
        sock.sendall(vkharness._encode_command(args))
        reply = vkharness._Reader(sock).reply()
    if isinstance(reply, ReplyError):
        raise reply
    return reply


def _fields(text):
    """"a:1\\r\\nb:2" (INFO, CLUSTER INFO) -> {"a": "1", "b": "2"}."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    out = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out


def _pairs(flat):
    """A RESP2 map reply [k1, v1, k2, v2, ...] -> dict."""
    return dict(zip(flat[0::2], flat[1::2]))


def sentinel_binary(server_binary):
    """"valkey-server" -> "valkey-sentinel" (the same program, started under
    its sentinel name, as `<server> <conf> --sentinel` would)."""
    head, base = os.path.split(server_binary)
    if "-server" in base:
        base = base[:base.index("-server")]
    return os.path.join(head, base + "-sentinel")


# ---------------------------------------------------------------------------
# Sentinel
# ---------------------------------------------------------------------------

class SentinelGroup:
    """One master and two replicas, watched by three sentinels (quorum 2,
    down-after-milliseconds 1000, failover-timeout 5000).

    After start() every replica is in sync and every sentinel knows both
    replicas and the two other sentinels, so a failover can run at once.
    `nodes` are the data nodes (node 0 starts as the master); `sentinels`
    the sentinel processes; both are vkharness.Server objects.

    Auth on the data nodes (the sentinels themselves stay open):

    default_password: the `default` user's password on every data node
    (requirepass); node.cli() logs in with it. Other passwords may be added
    to and removed from `default` at run time (e.g. rotating tokens) as long
    as this one stays.
    acl_user: (name, password) of one more user with all permissions
    (`~* &* +@all`) on every data node. The replicas log in to their master
    as it (masteruser / masterauth) and so do the sentinels (sentinel
    auth-user / auth-pass), so replication and failovers never depend on
    `default`'s passwords. Without acl_user but with default_password, both
    log in as `default` with default_password.
    """

    NODES = 3
    SENTINELS = 3

    def __init__(self, binary="valkey-server", name="vkmaster", tls=False, acl_user=None,
                 default_password=None):
        self.binary = binary
        self.name = name
        self.tls = tls
        if acl_user is not None:
            acl_user = tuple(acl_user)
            if len(acl_user) != 2 or not all(acl_user):
                raise ValueError("acl_user is a (name, password) pair")
        self.acl_user = acl_user
        self.default_password = default_password
        self.nodes = []
        self.sentinels = []

    def __repr__(self):
        return "SentinelGroup(%s, %s, master=%s, sentinels=%s)" % (
            self.binary, self.name, [n.address for n in self.nodes],
            self.sentinel_addresses)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def sentinel_addresses(self):
        return [s.address for s in self.sentinels]

    def _replication(self):
        return "tls-replication %s" % ("yes" if self.tls else "no")

    def _login(self):
        """(user, password) that replicas and sentinels log in to the data
        nodes with; None when the data nodes are open."""
        if self.acl_user is not None:
            return self.acl_user
        if self.default_password is not None:
            return ("default", self.default_password)
        return None

    def _data_node(self, extra):
        """A data node with the group's auth settings. Every node (the master
        too: it may be demoted) knows how to log in to its master."""
        login = self._login()
        if login is not None:
            extra = extra + ["masteruser %s" % login[0], "masterauth %s" % login[1]]
        return Server(self.binary, tls=self.tls, requirepass=self.default_password,
                      acl_users=[self.acl_user] if self.acl_user is not None else None,
                      extra=extra)

    def start(self):
        try:
            # No 5 s wait before a diskless full sync (the default).
            master = self._data_node(["repl-diskless-sync-delay 0", self._replication()])
            self.nodes = [master.start()]
            for _ in range(self.NODES - 1):
                replica = self._data_node(["replicaof 127.0.0.1 %d" % master.port,
                                           "repl-diskless-sync-delay 0", self._replication()])
                self.nodes.append(replica.start())
            for _ in range(self.SENTINELS):
                self.sentinels.append(self.start_sentinel(master.port))
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def start_sentinel(self, master_port, password=None):
        """One more sentinel monitoring the master at master_port as this
        group's name (the group's settings, including how it logs in to the
        data nodes), with `password` required of its clients. The caller
        stops it; the group's sentinels learn of it and count it in their
        majority."""
        extra = [
            "sentinel resolve-hostnames no",
            self._replication(),
            "sentinel monitor %s 127.0.0.1 %d 2" % (self.name, master_port),
            "sentinel down-after-milliseconds %s 1000" % self.name,
            "sentinel failover-timeout %s 5000" % self.name,
        ]
        login = self._login()
        if login is not None:
            # How this sentinel logs in to the data nodes.
            extra += ["sentinel auth-user %s %s" % (self.name, login[0]),
                      "sentinel auth-pass %s %s" % (self.name, login[1])]
        return Server(sentinel_binary(self.binary), tls=self.tls, requirepass=password,
                      extra=extra).start()

    def _ready(self):
        m = self.master()
        if m < 0 or not self.node_is_master(m):
            return False
        for i, node in enumerate(self.nodes):
            if i == m or not node.running:
                continue
            info = _fields(node.cli("INFO", "replication"))
            if (info.get("master_link_status") != "up"
                    or info.get("master_port") != str(self.nodes[m].port)):
                return False
        for s in self.sentinels:
            if not s.running:
                continue
            addr = s.cli("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
            if not addr or int(addr[1]) != self.nodes[m].port:
                return False
            replicas = [_pairs(r) for r in s.cli("SENTINEL", "REPLICAS", self.name)]
            healthy = [r for r in replicas
                       if r.get("flags") == "slave" and r.get("master-link-status") == "ok"]
            if len(healthy) != sum(1 for i, n in enumerate(self.nodes) if i != m and n.running):
                return False
            # "OK 3 usable Sentinels...": a sentinel added by start_sentinel()
            # counts too.
            quorum = str(s.cli("SENTINEL", "CKQUORUM", self.name)).split()
            if (quorum[:1] != ["OK"] or not quorum[1].isdigit()
                    or int(quorum[1]) < sum(1 for x in self.sentinels if x.running)):
                return False
        return True

    def wait_ready(self, timeout=READY_TIMEOUT_S):
        """Waits until every running replica is in sync with the master the
        sentinels name, and every running sentinel names it, sees every
        replica healthy and reaches all the other sentinels (so the next
        failover can run at once)."""
        _wait(self._ready, timeout, "sentinel group %s ready" % self.name)

    def master(self):
        """The index in `nodes` of the node the sentinels name as master
        (asks the first sentinel that answers); -1 when none answers or the
        address is not one of the nodes."""
        for s in self.sentinels:
            if not s.running:
                continue
            try:
                addr = s.cli("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name, timeout=2.0)
            except (OSError, ConnectionError, ReplyError):
                continue
            return self._node_index(addr)
        return -1

    def _node_index(self, addr):
        if not addr:
            return -1
        for i, node in enumerate(self.nodes):
            if node.port == int(addr[1]):
                return i
        return -1

    def master_named_by(self, sentinel):
        """The index in `nodes` of the node that sentinels[sentinel] names as
        master; -1 when it does not answer or names none of the nodes."""
        s = self.sentinels[sentinel]
        if not s.running:
            return -1
        try:
            addr = s.cli("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name, timeout=2.0)
        except (OSError, ConnectionError, ReplyError):
            return -1
        return self._node_index(addr)

    def master_address(self):
        m = self.master()
        return self.nodes[m].address if m >= 0 else None

    def node_is_master(self, i):
        """True when node i says (ROLE) that it is a master."""
        try:
            return self.nodes[i].cli("ROLE", timeout=2.0)[0] == "master"
        except (OSError, ConnectionError, ReplyError):
            return False

    def failover(self, timeout=10.0):
        """SENTINEL FAILOVER on the first sentinel that accepts it. A
        sentinel that does not yet see a good replica, or is still busy
        with a previous failover, is asked again until timeout."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            for s in self.sentinels:
                if not s.running:
                    continue
                try:
                    if s.cli("SENTINEL", "FAILOVER", self.name) == "OK":
                        return
                except (OSError, ConnectionError, ReplyError) as err:
                    last = err
            time.sleep(0.1)
        raise RuntimeError("SENTINEL FAILOVER %s was refused: %s" % (self.name, last))

    def wait_new_master(self, old, timeout=10.0):
        """Waits until the sentinels name a master other than node `old` and
        that node says it is a master; its index, or -1 after timeout (s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.master()
            if m >= 0 and m != old and self.node_is_master(m):
                return m
            time.sleep(POLL_S)
        return -1

    def wait_agreed_master(self, old, timeout=10.0):
        """Like wait_new_master, but waits until every running sentinel names
        that node (right after a failover the others learn of it from the
        sentinel that ran it, through their hello messages): a client that
        asks any of them is then sent there. Its index, or -1 after timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            named = {self.master_named_by(i) for i, s in enumerate(self.sentinels)
                     if s.running}
            if len(named) == 1:
                m = named.pop()
                if m >= 0 and m != old and self.node_is_master(m):
                    return m
            time.sleep(POLL_S)
        return -1

    def stop(self):
        for s in self.sentinels:
            s.stop()
        for n in self.nodes:
            n.stop()


# ---------------------------------------------------------------------------
# Cluster
# ---------------------------------------------------------------------------

def _crc16_table():
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC16 = _crc16_table()


def _crc16(data):
    """CRC16/XMODEM (poly 0x1021, init 0), the cluster's key hash."""
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[((crc >> 8) ^ b) & 0xFF]
    return crc


def key_slot(key):
    """The cluster slot of key (str or bytes): CRC16 of the hash tag (the
    part between the first "{" and the next "}", when not empty) or of the
    whole key, modulo 16384."""
    if isinstance(key, str):
        key = key.encode()
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1:end]
    return _crc16(key) % SLOTS


class Cluster:
    """`masters` masters sharing the 16384 slots evenly, each with
    `replicas` replicas. nodes[0:masters] start as the masters (shard i is
    master i); the replicas of shard i follow, in order.

    Every node has its cluster bus on a port of its own (cluster-port), so
    that the bus never lands above 65535 or on a port in use.
    """

    def __init__(self, binary="valkey-server", masters=3, replicas=1, tls=False):
        if masters < 1 or replicas < 0:
            raise ValueError("masters >= 1 and replicas >= 0")
        self.binary = binary
        self.tls = tls
        self.nmasters = masters
        self.nreplicas = replicas
        self.nodes = []
        self.ids = []
        self.bus_ports = []
        # shards[i]: node indexes of shard i, its current master first.
        self.shards = []

    def __repr__(self):
        return "Cluster(%s, masters=%s)" % (self.binary, self.masters)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- start ----------------------------------------------------------------

    def _start_node(self):
        last = None
        for _ in range(5):
            bus = free_port()
            extra = [
                "cluster-enabled yes",
                "cluster-config-file nodes.conf",
                "cluster-node-timeout 2000",
                "cluster-port %d" % bus,
                # Replicas stay with the master they were given.
                "cluster-allow-replica-migration no",
                # No 5 s wait before a diskless full sync (the default).
                "repl-diskless-sync-delay 0",
            ]
            if self.tls:
                extra += ["tls-cluster yes", "tls-replication yes"]
            try:
                node = Server(self.binary, tls=self.tls, extra=extra).start()
            except RuntimeError as err:
                # Most likely the bus port was taken meanwhile: pick another.
                last = err
                continue
            self.nodes.append(node)
            self.bus_ports.append(bus)
            self.ids.append(node.cli("CLUSTER", "MYID"))
            return
        raise last

    def start(self):
        try:
            total = self.nmasters * (1 + self.nreplicas)
            for _ in range(total):
                self._start_node()
            for m in range(self.nmasters):
                first, last = m * SLOTS // self.nmasters, (m + 1) * SLOTS // self.nmasters - 1
                self._ok(m, "CLUSTER", "ADDSLOTSRANGE", first, last)
            for i in range(1, total):
                self._ok(i, "CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port, self.bus_ports[0])
            _wait(lambda: all(int(self.cluster_info(i)["cluster_known_nodes"]) == total
                              for i in range(total)), READY_TIMEOUT_S, "cluster nodes meet")
            self.shards = [[m] for m in range(self.nmasters)]
            r = self.nmasters
            for m in range(self.nmasters):
                for _ in range(self.nreplicas):
                    self._ok(r, "CLUSTER", "REPLICATE", self.ids[m])
                    self.shards[m].append(r)
                    r += 1
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def _ok(self, i, *args):
        reply = self.nodes[i].cli(*args)
        if reply != "OK":
            raise RuntimeError("%s on node %d answered %r" % (" ".join(map(str, args)), i, reply))

    # -- state ---------------------------------------------------------------

    def cluster_info(self, i):
        return _fields(self.nodes[i].cli("CLUSTER", "INFO"))

    def _role(self, i):
        return self.nodes[i].cli("ROLE", timeout=2.0)

    def slot_map(self, i):
        """Node i's view: sorted [(first, last, master "127.0.0.1:port")]."""
        return sorted((r[0], r[1], "127.0.0.1:%d" % r[2][1])
                      for r in self.nodes[i].cli("CLUSTER", "SLOTS"))

    def _settled(self):
        running = [i for i in range(len(self.nodes)) if self.nodes[i].running]
        for i in running:
            if self.cluster_info(i).get("cluster_state") != "ok":
                return False
        for shard in self.shards:
            if self._role(shard[0])[0] != "master":
                return False
            for r in shard[1:]:
                if not self.nodes[r].running:
                    continue
                role = self._role(r)
                if role[0] != "slave" or role[2] != self.nodes[shard[0]].port \
                        or role[3] != "connected":
                    return False
        # Every node knows each node's role and master: a master ignores a
        # manual failover request from a replica it does not know as its own.
        want = {}
        for shard in self.shards:
            want[self.ids[shard[0]]] = ("master", "-")
            for r in shard[1:]:
                want[self.ids[r]] = ("slave", self.ids[shard[0]])
        for i in running:
            seen = {}
            for line in self.nodes[i].cli("CLUSTER", "NODES").splitlines():
                f = line.split()
                flags = set(f[2].split(","))
                if flags & {"fail", "fail?", "handshake", "noaddr"}:
                    continue
                seen[f[0]] = ("master" if "master" in flags else "slave", f[3])
            if any(seen.get(node_id) != role for node_id, role in want.items()
                   if self.nodes[self.ids.index(node_id)].running):
                return False
        maps = [self.slot_map(i) for i in running]
        if any(m != maps[0] for m in maps):
            return False
        covered = sum(last - first + 1 for first, last, _ in maps[0])
        masters = set(self.masters)
        return covered == SLOTS and all(owner in masters for _, _, owner in maps[0])

    def wait_ok(self, timeout=READY_TIMEOUT_S):
        """Waits until every running node says cluster_state:ok, every
        replica is in sync with its shard's master, and every node reports
        the same slot map, all of it owned by the current masters."""
        _wait(self._settled, timeout, "cluster settled")

    @property
    def masters(self):
        """The addresses of the current masters, shard by shard."""
        return [self.nodes[shard[0]].address for shard in self.shards]

    @property
    def seed_addresses(self):
        """Addresses a client can start from: the current masters."""
        return self.masters

    def master_index(self, address):
        """The shard whose master is at address; -1 when none."""
        return self.masters.index(address) if address in self.masters else -1

    def node(self, address):
        """The Server at address."""
        for n in self.nodes:
            if n.address == address:
                return n
        raise KeyError(address)

    def slot_owner(self, slot):
        """The address of the master that owns slot (as the first running
        master sees the map)."""
        for shard in self.shards:
            n = self.nodes[shard[0]]
            if not n.running:
                continue
            for first, last, owner in self.slot_map(shard[0]):
                if first <= slot <= last:
                    return owner
            return None
        return None

    @staticmethod
    def key_slot(key):
        """The slot of key (CRC16/XMODEM with hash tags, like the server)."""
        return key_slot(key)

    def key_owner(self, key):
        """The Server that owns key's slot."""
        return self.node(self.slot_owner(key_slot(key)))

    # -- changes -------------------------------------------------------------

    def migrate_slot(self, slot, to_master_index, pause=0.0, batch=10):
        """Moves slot to shard to_master_index the way `--cluster reshard`
        does: SETSLOT IMPORTING on the target, MIGRATING on the source,
        MIGRATE of its keys `batch` at a time until the slot is empty on the
        source, then SETSLOT NODE on every master; waits until the map
        settles. `pause` seconds are slept between the steps (and batches),
        so that clients meet the ASK phase. Returns the number of keys moved.
        """
        src_addr = self.slot_owner(slot)
        src = self.nodes.index(self.node(src_addr))
        dst = self.shards[to_master_index][0]
        if src == dst:
            return 0
        self._ok(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", self.ids[src])
        self._ok(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", self.ids[dst])
        time.sleep(pause)
        moved = 0
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            keys = self.nodes[src].cli("CLUSTER", "GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            reply = self.nodes[src].cli("MIGRATE", "127.0.0.1", self.nodes[dst].port, "", 0,
                                        5000, "KEYS", *keys)
            if reply not in ("OK", "NOKEY"):
                raise RuntimeError("MIGRATE answered %r" % reply)
            moved += len(keys)
            if time.monotonic() > deadline:
                raise TimeoutError("slot %d still has keys on node %d" % (slot, src))
            time.sleep(pause)
        # The target first, then the source (so it stops redirecting with
        # ASK), then the other masters, as redis-cli does.
        order = [dst, src] + [s[0] for s in self.shards if s[0] not in (src, dst)]
        for i in order:
            self._ok(i, "CLUSTER", "SETSLOT", slot, "NODE", self.ids[dst])
        self.wait_ok()
        return moved

    def failover(self, master_index, timeout=READY_TIMEOUT_S):
        """CLUSTER FAILOVER on the first replica of shard master_index;
        waits until it is the master and the map settled. Returns the
        address of the new master."""
        shard = self.shards[master_index]
        if len(shard) < 2:
            raise ValueError("shard %d has no replica" % master_index)
        replica = shard[1]
        self._ok(replica, "CLUSTER", "FAILOVER")
        _wait(lambda: self._role(replica)[0] == "master", timeout,
              "node %d promoted" % replica)
        shard.remove(replica)
        shard.insert(0, replica)
        self.wait_ok(timeout)
        return self.nodes[replica].address

    def stop(self):
        for n in self.nodes:
            n.stop()

