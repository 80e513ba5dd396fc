"""vkclient.asyncio in Sentinel mode against real groups: the master found
through the sentinels (writes checked on the node itself), the blocking
client's errors, status(), a failover under async load with one client
that is never re-created, and the same with GCP IAM tokens rotating every
second on the data nodes.

The shared group comes from the harness (VK_TEST_SENTINEL_ADDRS) or is
started here, as in test_topologies.py; the failover test starts a group of
its own.
"""

import asyncio
import time

import pytest

import topologies  # tests/harness, on sys.path through conftest
import vkclient
import vkclient.asyncio as vka

from conftest import Env
from test_sentinel_iam import client_logins, iam_group  # noqa: F401  (iam_group: a fixture)
from test_topologies import sentinel, unique  # noqa: F401  (sentinel is a fixture)


class Writers:
    """Tasks that each write 1, 2, 3... to their own key through client and
    remember the last acknowledged value, when, and every error (with its
    time). Once stopped, each still ends on an acknowledged write, so that
    the value on the server is the last one it saw succeed."""

    def __init__(self, client, prefix, count):
        self.client = client
        self.keys = [unique("%s-%d" % (prefix, i)) for i in range(count)]
        self.last_ok = [0] * count
        self.last_ok_at = [0.0] * count
        self.errors = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.ensure_future(self._write(i)) for i in range(count)]

    async def _write(self, i):
        n = 0
        while not self._stop.is_set() or n != self.last_ok[i]:
            n += 1
            try:
                await self.client.set(self.keys[i], n)
            except vkclient.Error as err:
                self.errors.append((time.monotonic(), err))
                await asyncio.sleep(0.02)
                continue
            self.last_ok[i], self.last_ok_at[i] = n, time.monotonic()

    async def stop(self):
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), 15)


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


@pytest.mark.asyncio
async def test_writes_land_on_the_named_master(sentinel):  # noqa: F811
    # One sentinel address is enough: the client learns the others.
    client = vka.Client(sentinel.config(addresses=sentinel.addresses[-1:]))
    status = client.status()
    assert (status.connected, status.mode, status.master_address) == (False, "sentinel", None)
    key = unique("async-sentinel")
    assert await client.set(key, "v") is True
    master = sentinel.master_address()
    assert topologies.cli(master, "GET", key) == "v"
    assert await client.get(key) == b"v"
    status = client.status()
    assert status.connected is True and status.mode == "sentinel"
    assert (status.master_address, status.master_switches) == (master, 0)
    assert client.last_refresh_error() is None
    # Many tasks share the connection to the master.
    counter = unique("async-sentinel-counter")
    await asyncio.gather(*(client.execute("INCR", counter) for _ in range(500)))
    assert topologies.cli(master, "GET", counter) == "500"
    await client.close()


def blocking_error(config):
    with pytest.raises(vkclient.Error) as info:
        vkclient.Client(config)
    return info.value


@pytest.mark.asyncio
async def test_unknown_master_name_fails_like_the_blocking_client(sentinel):  # noqa: F811
    config = sentinel.config(name="no-such-master")
    expected = blocking_error(config)
    client = vka.Client(config)
    with pytest.raises(vkclient.Error) as info:
        await client.ping()
    assert type(info.value) is type(expected)
    assert str(info.value) == str(expected) == (
        'redis sentinel: master "no-such-master" is unknown to every reachable sentinel')
    assert client.is_connected() is False
    await client.close()


@pytest.mark.asyncio
async def test_unreachable_sentinels_fail_like_the_blocking_client(sentinel, harness):  # noqa: F811
    config = sentinel.config(addresses=["127.0.0.1:%d" % harness.free_port()])
    expected = blocking_error(config)
    client = vka.Client(config)
    with pytest.raises(vkclient.Error) as info:
        await client.execute("GET", "k")
    assert type(info.value) is type(expected)
    assert str(info.value) == str(expected)
    assert str(info.value).startswith("redis sentinel: all sentinels are unreachable: ")
    await client.close()


@pytest.mark.asyncio
async def test_failover_under_async_load():
    # A group of its own: the shared one keeps its master.
    group = topologies.SentinelGroup(Env.server, name="vkasyncfailover").start()
    client = None
    try:
        client = vka.Client(vkclient.Config(
            sentinel=vkclient.Sentinel(group.sentinel_addresses, master_name=group.name),
            options=vkclient.ConnectionOptions(dial_timeout=0.5, read_timeout=1.0)))
        loop = asyncio.get_running_loop()
        w = Writers(client, "async-failover", 16)
        assert await until(lambda: all(n > 10 for n in w.last_ok), 5.0)
        assert w.errors == []
        old = group.master()
        assert client.status().master_address == group.nodes[old].address

        started = time.monotonic()
        await loop.run_in_executor(None, group.failover)
        new = await loop.run_in_executor(None, group.wait_new_master, old, 20.0)
        assert new >= 0 and new != old
        new_address = group.nodes[new].address
        # The client follows the sentinels to the new master on its own ...
        switched = await until(lambda: client.status().master_address == new_address, 20.0)
        assert switched is not None
        # ... and every writer's writes succeed again within 5 s of it.
        assert await until(lambda: all(t > switched for t in w.last_ok_at), 5.0)
        await asyncio.sleep(0.3)   # keep writing on the new master for a while
        await w.stop()

        # What each writer saw acknowledged last is what the new master holds.
        for i, key in enumerate(w.keys):
            assert group.nodes[new].cli("GET", key) == str(w.last_ok[i])
        # Errors are vkclient errors, only inside the switch window, and few.
        errors = w.errors
        summary = "switch after %.3f s, %d errors: %s" % (
            switched - started, len(errors), sorted({repr(e) for _, e in errors})[:5])
        for at, err in errors:
            assert started <= at <= switched + 1.0, (at - started, summary)
        assert len(errors) <= len(w.keys) * ((switched + 1.0 - started) / 0.02 + 5), summary
        status = client.status()
        assert (status.master_address, status.master_switches) == (new_address, 1), \
            (status, summary)
        assert client.is_connected(), (status, summary)
        key = unique("async-after-failover")
        assert await client.set(key, "1") is True
        assert group.nodes[new].cli("GET", key) == "1"
    finally:
        if client is not None:
            await client.close()
        group.stop()


# ---- GCP IAM in Sentinel mode ---------------------------------------------------


@pytest.mark.asyncio
async def test_iam_sentinel_failover_under_rotation(iam_group):  # noqa: F811
    """The sentinels asked with their own (no) credentials, the data nodes
    logged into with tokens that rotate every second, a failover while
    tasks write: writes resume on the new master, and no error is an auth
    failure."""
    group = iam_group.group
    client = vka.Client(iam_group.config(dial_timeout=0.5, read_timeout=1.0))
    loop = asyncio.get_running_loop()
    try:
        assert await client.execute("ACL", "WHOAMI") == b"default"
        old = group.master()
        assert client.status().master_address == group.nodes[old].address
        w = Writers(client, "iam-failover", 8)
        # Tokens rotate while the writers go.
        assert await until(lambda: all(n > 10 for n in w.last_ok)
                           and len(iam_group.issued()) >= 3, 15.0)
        assert w.errors == []
        started = time.monotonic()
        await loop.run_in_executor(None, group.failover)
        new = await loop.run_in_executor(None, group.wait_new_master, old, 20.0)
        assert new >= 0 and new != old
        new_master = group.nodes[new]
        switched = await until(lambda: client.status().master_address == new_master.address,
                               20.0)
        assert switched is not None, client.status()
        assert await until(lambda: all(t > switched for t in w.last_ok_at), 5.0)
        # Past a few more token rotations on the new master.
        issued = len(iam_group.issued())
        assert await until(lambda: len(iam_group.issued()) >= issued + 2, 15.0)
        await w.stop()
        for i, key in enumerate(w.keys):
            assert new_master.cli("GET", key) == str(w.last_ok[i])
        errors = w.errors
        summary = "switch after %.3f s, %d errors: %s" % (
            switched - started, len(errors), sorted({repr(e) for _, e in errors})[:5])
        for at, err in errors:
            assert not isinstance(err, (vkclient.AuthenticationError, vkclient.IAMError)), \
                summary
            assert started <= at <= switched + 1.0, (at - started, summary)
        status = client.status()
        assert (status.mode, status.master_switches) == ("sentinel", 1)
        assert status.last_refresh_error is None and status.refresh_loop_running is True
        assert client_logins(new_master)
    finally:
        await client.close()
