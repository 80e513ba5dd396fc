"""vkclient.asyncio: scan_iter, hscan_iter, sscan_iter and zscan_iter as
async generators, against the plain server and a Cluster (where scan_iter
walks every master). Run under `vkharness.py run --topologies` for the
shared Cluster; without it test_topologies.py's fixture starts one.
"""

import asyncio

import pytest

import vkclient
import vkclient.asyncio as vka

from conftest import plain_config
from test_scan import KEYS, MEMBERS, fill, unique
from test_topologies import cluster  # noqa: F401  (a fixture)


async def check_scans(client, prefix, big):
    keys = [k async for k in client.scan_iter(match=prefix + "*", count=100)]
    assert all(isinstance(k, bytes) for k in keys)
    names = set(keys)
    assert {("%s%d" % (prefix, i)).encode() for i in range(KEYS)} <= names
    assert len(names) == KEYS + 20 + 3
    assert {k async for k in client.scan_iter(match=prefix + "1?")} == \
        {("%s1%d" % (prefix, i)).encode() for i in range(10)}
    assert {k async for k in client.scan_iter(match=prefix + "*", _type="hash")} == \
        {("%sh%d" % (prefix, i)).encode() for i in range(20)} | {big["hash"].encode()}
    fields = {f: v async for f, v in client.hscan_iter(big["hash"], count=50)}
    assert fields == {("m%d" % i).encode(): ("v%d" % i).encode() for i in range(MEMBERS)}
    assert {m async for m in client.sscan_iter(big["set"])} == \
        {("m%d" % i).encode() for i in range(MEMBERS)}
    scores = {m: s async for m, s in client.zscan_iter(big["zset"])}
    assert scores == {("m%d" % i).encode(): i + 0.5 for i in range(MEMBERS)}
    assert [m async for m in client.sscan_iter(prefix + "missing")] == []


@pytest.mark.asyncio
async def test_standalone():
    prefix = unique("ascan")
    with vkclient.Client(plain_config()) as blocking:
        big = fill(blocking, prefix)
    async with vka.Client(plain_config()) as client:
        await check_scans(client, prefix, big)


@pytest.mark.asyncio
async def test_bad_input_and_errors(key):
    async with vka.Client(plain_config()) as client:
        with pytest.raises(vkclient.InvalidArgumentError,
                           match="^invalid argument: scan count cannot be negative$"):
            [k async for k in client.scan_iter(count=-1)]
        with pytest.raises(ValueError):
            [k async for k in client.scan_iter(count=0)]
        await client.set(key, "x")
        with pytest.raises(vkclient.ResponseError,
                           match="^server error reply: HSCAN: WRONGTYPE"):
            [f async for f in client.hscan_iter(key)]


@pytest.mark.asyncio
async def test_a_closed_generator_leaves_the_client_usable():
    prefix = unique("ascan-close")
    with vkclient.Client(plain_config()) as blocking:
        for i in range(50):
            blocking.set("%s%d" % (prefix, i), i)
    async with vka.Client(plain_config()) as client:
        it = client.scan_iter(match=prefix + "*", count=5)
        first = await it.__anext__()
        assert first.startswith(prefix.encode())
        await it.aclose()
        # A page cancelled with its task: the client goes on.
        task = asyncio.ensure_future(client.scan_iter(match=prefix + "*").__anext__())
        await asyncio.sleep(0)   # the task runs up to its page, which is sent
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await client.ping() is True
        assert len({k async for k in client.scan_iter(match=prefix + "*")}) == 50


@pytest.mark.asyncio
async def test_cluster_walks_every_master(cluster):  # noqa: F811
    prefix = unique("ascan-cluster")
    with vkclient.Client(cluster.config()) as blocking:
        big = fill(blocking, prefix)
    owners = {cluster.key_owner("%s%d" % (prefix, i)) for i in range(KEYS)}
    assert sorted(owners) == sorted(cluster.addresses)
    # A new client: the walk begins before its router has a slot map.
    async with vka.Client(cluster.config()) as client:
        await check_scans(client, prefix, big)
