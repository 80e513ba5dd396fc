"""register_script on vkclient.Client and vkclient.asyncio.Client against
real servers (standalone and Cluster): the first run after SCRIPT FLUSH
loads the script (EVALSHA answered NOSCRIPT, then EVAL: SCRIPT EXISTS
says 1), later runs are EVALSHA alone (INFO commandstats), a script's
error reply raises ResponseError, keys and args are binary safe, a SCRIPT
FLUSH between runs is recovered from, keys route the run to their master
in a Cluster, keys of two slots raise CROSSSLOT, and bad arguments are
refused.
"""

import asyncio
import hashlib

import pytest

import topologies  # tests/harness, on sys.path through conftest
import vkclient
import vkclient.asyncio as vka

from conftest import Env, plain_config
from test_topologies import cluster, keys_per_master, unique  # noqa: F401  (cluster: a fixture)

SET_GET = "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('GET', KEYS[1])"
ECHO = "return {KEYS[1], ARGV[1], #ARGV[1]}"
FAILS = "return redis.error_reply('MYERR the script says no')"
CROSSSLOT_TEXT = "invalid argument: CROSSSLOT keys in request don't hash to the same slot"


def calls(address, command):
    """cmdstat_<command> calls on the node at address (0 when never called)."""
    stats = topologies._fields(topologies.cli(address, "INFO", "commandstats"))
    field = stats.get("cmdstat_" + command)
    if field is None:
        return 0
    return int(dict(kv.split("=") for kv in field.split(","))["calls"])


def exists(address, sha):
    return topologies.cli(address, "SCRIPT", "EXISTS", sha)[0]


# ---- blocking, standalone ---------------------------------------------------------------

def test_script_object(client):
    script = client.register_script("return 1")
    assert script.sha == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
    assert script.sha == hashlib.sha1(b"return 1").hexdigest()
    assert script.registered_client is client
    assert script.script == "return 1"
    assert isinstance(script, vkclient.Script)
    assert "e0e1f9fa" in repr(script)
    assert client.register_script(b"return 1").sha == script.sha


def test_first_run_loads_then_evalsha_only(client, key):
    topologies.cli(Env.addr, "SCRIPT", "FLUSH")
    script = client.register_script(SET_GET)
    assert exists(Env.addr, script.sha) == 0
    eval_before, evalsha_before = calls(Env.addr, "eval"), calls(Env.addr, "evalsha")
    assert script(keys=[key], args=["one"]) == b"one"
    assert exists(Env.addr, script.sha) == 1
    assert calls(Env.addr, "eval") == eval_before + 1
    evalsha_loaded = calls(Env.addr, "evalsha")
    assert evalsha_loaded >= evalsha_before
    for i in range(3):
        assert script(keys=[key], args=[i]) == str(i).encode()
    assert calls(Env.addr, "eval") == eval_before + 1
    assert calls(Env.addr, "evalsha") == evalsha_loaded + 3


def test_error_reply_raises(client, key):
    script = client.register_script(FAILS)
    for _ in range(2):   # by EVAL, then by EVALSHA
        with pytest.raises(vkclient.ResponseError) as e:
            script()
        assert str(e.value) == "MYERR the script says no"
    client.set(key, "text")
    incr = client.register_script("return redis.call('INCR', KEYS[1])")
    with pytest.raises(vkclient.ResponseError):
        incr(keys=[key])


def test_binary_safe(client, key):
    script = client.register_script(ECHO)
    k = key.encode() + b"\x00\xff"
    arg = b"\x00\r\n\xfe arg"
    assert script(keys=[k], args=[arg]) == [k, arg, len(arg)]
    assert script(keys=(k,), args=(3.5,)) == [k, b"3.5", 3]


def test_flush_between_runs_recovers(client, key):
    script = client.register_script(SET_GET)
    assert script(keys=[key], args=["1"]) == b"1"
    topologies.cli(Env.addr, "SCRIPT", "FLUSH")
    before = calls(Env.addr, "eval")
    assert script(keys=[key], args=["2"]) == b"2"
    assert calls(Env.addr, "eval") == before + 1
    assert exists(Env.addr, script.sha) == 1


def test_run_on_another_client(client, key):
    script = client.register_script(SET_GET)
    with vkclient.Client(plain_config()) as other:
        assert script(keys=[key], args=["x"], client=other) == b"x"


def test_bad_arguments(client, key):
    script = client.register_script("return 1")
    with pytest.raises(TypeError):
        script(keys=key)            # a str is not a list of keys
    with pytest.raises(TypeError):
        script(args=5)
    with pytest.raises(TypeError):
        script(keys=[object()])
    with pytest.raises(TypeError):
        script(client=object())
    with pytest.raises(TypeError):
        client.register_script(None)
    assert script(keys=None, args=None) == 1


# ---- blocking, Cluster --------------------------------------------------------------------

def test_cluster_routes_by_key(cluster):  # noqa: F811
    owners = keys_per_master(cluster, unique("script"))
    for master in owners:
        topologies.cli(master, "SCRIPT", "FLUSH")
    evals = {m: calls(m, "eval") for m in owners}
    with vkclient.Client(cluster.config()) as c:
        script = c.register_script(SET_GET)
        for rnd in range(2):
            for master, keys in owners.items():
                value = "%s-%d" % (master, rnd)
                assert script(keys=keys[:1], args=[value]) == value.encode()
                assert topologies.cli(master, "GET", keys[0]) == value
        for master in owners:
            assert exists(master, script.sha) == 1
            assert calls(master, "eval") == evals[master] + 1
        with pytest.raises(vkclient.InvalidArgumentError) as e:
            script(keys=["{a}x", "{b}y"], args=["v"])
        assert str(e.value) == CROSSSLOT_TEXT
        both = c.register_script("return redis.call('MSET', KEYS[1], ARGV[1], KEYS[2], ARGV[1])")
        tag = unique("{tag}")
        assert both(keys=[tag + "{t}x", tag + "{t}y"], args=["z"]) == "OK"
        assert c.register_script("return 7")() == 7


# ---- asyncio --------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_async_standalone(key):
    topologies.cli(Env.addr, "SCRIPT", "FLUSH")
    client = vka.Client(plain_config())
    try:
        script = client.register_script(SET_GET)
        assert isinstance(script, vka.AsyncScript)
        assert script.sha == hashlib.sha1(SET_GET.encode()).hexdigest()
        before = calls(Env.addr, "eval")
        assert await script(keys=[key], args=["first"]) == b"first"
        assert exists(Env.addr, script.sha) == 1
        assert calls(Env.addr, "eval") == before + 1
        evalsha = calls(Env.addr, "evalsha")
        results = await asyncio.gather(*(script(keys=[key], args=[i]) for i in range(5)))
        assert results == [str(i).encode() for i in range(5)]
        assert calls(Env.addr, "eval") == before + 1
        assert calls(Env.addr, "evalsha") == evalsha + 5

        topologies.cli(Env.addr, "SCRIPT", "FLUSH")
        assert await script(keys=[key], args=["again"]) == b"again"
        assert calls(Env.addr, "eval") == before + 2

        with pytest.raises(vkclient.ResponseError) as e:
            await client.register_script(FAILS)()
        assert str(e.value) == "MYERR the script says no"
        k, arg = key.encode() + b"\x00\xff", b"\x00\r\n"
        assert await client.register_script(ECHO)(keys=[k], args=[arg]) == [k, arg, 3]

        # A cancelled task cancels the run; the client stays usable.
        ping = client.register_script("return redis.call('PING')")
        task = asyncio.ensure_future(ping())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await ping() == "PONG"
        with pytest.raises(TypeError):
            client.register_script("return 1")(keys="k")
        with vkclient.Client(plain_config()) as blocking:
            with pytest.raises(TypeError):
                script(keys=[key], args=["x"], client=blocking)
            with pytest.raises(TypeError):
                blocking.register_script(SET_GET)(keys=[key], args=["x"], client=client)
    finally:
        await client.close()


@pytest.mark.asyncio
async def test_async_cluster(cluster):  # noqa: F811
    owners = keys_per_master(cluster, unique("ascript"))
    for master in owners:
        topologies.cli(master, "SCRIPT", "FLUSH")
    evals = {m: calls(m, "eval") for m in owners}
    client = vka.Client(cluster.config())
    try:
        script = client.register_script(SET_GET)
        got = await asyncio.gather(*(script(keys=keys[:1], args=[m])
                                     for m, keys in owners.items()))
        assert got == [m.encode() for m in owners]
        for master, keys in owners.items():
            assert topologies.cli(master, "GET", keys[0]) == master
            assert exists(master, script.sha) == 1
            assert calls(master, "eval") == evals[master] + 1
        for master, keys in owners.items():
            assert await script(keys=keys[:1], args=["b"]) == b"b"
            assert calls(master, "eval") == evals[master] + 1
        with pytest.raises(vkclient.InvalidArgumentError) as e:
            await script(keys=["{a}x", "{b}y"])
        assert str(e.value) == CROSSSLOT_TEXT
    finally:
        await client.close()
