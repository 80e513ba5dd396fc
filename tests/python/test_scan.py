"""Client.scan_iter, hscan_iter, sscan_iter and zscan_iter against real
servers: standalone, a Sentinel group and a Cluster (where scan_iter walks
every master). Run under `vkharness.py run --topologies` for the shared
Sentinel group and Cluster; without them test_topologies.py's fixtures
start their own.
"""

import uuid

import pytest

import topologies  # tests/harness, on sys.path through conftest
import vkclient

from test_topologies import cluster, cluster_client, sentinel, sentinel_client  # noqa: F401

KEYS = 1000
MEMBERS = 1000


def unique(prefix):
    return "vkpy:%s:%s:" % (prefix, uuid.uuid4().hex[:10])


def fill(client, prefix):
    """KEYS strings prefix<i>, 20 hashes prefix h<i>, and a big hash, set and
    sorted set (MEMBERS each); returns their names."""
    p = client.pipeline()
    for i in range(KEYS):
        p.execute("SET", "%s%d" % (prefix, i), i)
    for i in range(20):
        p.execute("HSET", "%sh%d" % (prefix, i), "f", i)
    big = {"hash": prefix + "{big}hash", "set": prefix + "{big}set", "zset": prefix + "{big}zset"}
    for i in range(MEMBERS):
        p.execute("HSET", big["hash"], "m%d" % i, "v%d" % i)
        p.execute("SADD", big["set"], "m%d" % i)
        p.execute("ZADD", big["zset"], "%d.5" % i, "m%d" % i)
    replies = p.run()
    assert not [r for r in replies if isinstance(r, Exception)]
    return big


def check_scans(client, prefix, big):
    # Every key, with a page size hint: at least once each.
    keys = list(client.scan_iter(match=prefix + "*", count=100))
    names = set(keys)
    assert all(isinstance(k, bytes) for k in keys)
    assert {("%s%d" % (prefix, i)).encode() for i in range(KEYS)} <= names
    assert len(names) == KEYS + 20 + 3
    # MATCH narrows, TYPE filters.
    assert set(client.scan_iter(match=prefix + "1?")) == \
        {("%s1%d" % (prefix, i)).encode() for i in range(10)}
    assert set(client.scan_iter(match=prefix + "*", _type="hash")) == \
        {("%sh%d" % (prefix, i)).encode() for i in range(20)} | {big["hash"].encode()}
    # Collections bigger than one page.
    fields = dict(client.hscan_iter(big["hash"], count=50))
    assert fields == {("m%d" % i).encode(): ("v%d" % i).encode() for i in range(MEMBERS)}
    assert set(client.sscan_iter(big["set"])) == {("m%d" % i).encode() for i in range(MEMBERS)}
    scores = list(client.zscan_iter(big["zset"]))
    assert dict(scores) == {("m%d" % i).encode(): i + 0.5 for i in range(MEMBERS)}
    assert all(isinstance(s, float) for _, s in scores)
    assert dict(client.hscan_iter(big["hash"], match="m99*")) == \
        {("m99%s" % s).encode(): ("v99%s" % s).encode() for s in [""] + list("0123456789")}
    assert list(client.zscan_iter(big["zset"], match="m7", score_cast_func=str)) == \
        [(b"m7", "b'7.5'")]
    # A collection that does not exist is empty.
    assert list(client.sscan_iter(prefix + "missing")) == []


def test_standalone(client):
    prefix = unique("scan")
    check_scans(client, prefix, fill(client, prefix))


def test_empty_database(own_server):
    with vkclient.Client(vkclient.Config(standalone=vkclient.Standalone(own_server.address))) as c:
        assert list(c.scan_iter()) == []
        assert list(c.scan_iter(count=10, _type="string")) == []
        c.set("only", "1")
        assert list(c.scan_iter()) == [b"only"]


def test_iterators_are_lazy(client):
    prefix = unique("lazy")
    for i in range(30):
        client.set("%s%d" % (prefix, i), i)
    it = client.scan_iter(match=prefix + "*", count=5)
    first = next(it)
    assert first.startswith(prefix.encode())
    assert len({first, *it}) == 30


def test_bad_input(client, key):
    with pytest.raises(vkclient.InvalidArgumentError,
                       match="^invalid argument: scan count cannot be negative$"):
        client.scan_iter(count=-1)
    with pytest.raises(ValueError):
        client.scan_iter(count=0)
    with pytest.raises(TypeError):
        client.scan_iter(count="10")
    with pytest.raises(vkclient.InvalidArgumentError,
                       match="^invalid argument: scan type cannot be empty$"):
        client.scan_iter(_type="")
    client.set(key, "x")
    with pytest.raises(vkclient.ResponseError, match="^server error reply: HSCAN: WRONGTYPE"):
        list(client.hscan_iter(key))


def test_closed_client_scans_again_on_demand(client):
    prefix = unique("closed")
    client.set(prefix + "1", "1")
    client.close()
    assert list(client.scan_iter(match=prefix + "*")) == [(prefix + "1").encode()]


def test_sentinel(sentinel_client):
    prefix = unique("scan-sentinel")
    check_scans(sentinel_client, prefix, fill(sentinel_client, prefix))


def test_cluster_walks_every_master(cluster, cluster_client):
    prefix = unique("scan-cluster")
    big = fill(cluster_client, prefix)
    owners = {cluster.key_owner("%s%d" % (prefix, i)) for i in range(KEYS)}
    assert sorted(owners) == sorted(cluster.addresses)
    check_scans(cluster_client, prefix, big)
    # Without MATCH the walk covers the whole key space of every master.
    everything = set(cluster_client.scan_iter(count=500))
    assert {("%s%d" % (prefix, i)).encode() for i in range(KEYS)} <= everything
    total = sum(topologies.cli(a, "DBSIZE") for a in cluster.addresses)
    assert len(everything) >= total - 50   # other suites may write meanwhile
