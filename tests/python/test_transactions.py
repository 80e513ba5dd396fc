"""Transactions and sessions through the Python binding, against real
servers: pipeline(transaction=True), atomicity seen from a second client,
WATCH conflicts (WatchError) and transaction() retries, DISCARD, the state
a session leaves behind (SELECT, WATCH, MULTI, CLIENT SETNAME), a broken
session, then a session over Sentinel and the slot rules of a Cluster.

Sentinel and Cluster come from the harness (--topologies) or are started
here (test_topologies' fixtures).
"""

import threading

import pytest

import vkclient
from conftest import plain_config
from test_topologies import cluster, sentinel  # noqa: F401  (fixtures)


def small_client(db=0, pool_size=1):
    """One pooled connection: a session's is then the next caller's."""
    return vkclient.Client(plain_config(options=vkclient.ConnectionOptions(db=db,
                                                                           pool_size=pool_size)))


# ---- transaction pipelines ---------------------------------------------------------

def test_transaction_pipeline_returns_exec_results(client, key):
    p = client.pipeline(transaction=True)
    assert p.transaction
    assert not client.pipeline().transaction
    p.execute("SET", key, 1).execute("INCR", key).execute("GET", key)
    assert p.run() == ["OK", 2, b"2"]
    assert p.run() == []          # the mode stays; nothing queued, nothing sent
    # An error reply of one command at EXEC is an instance in the list.
    p.execute("SET", key, "text").execute("INCR", key)
    results = p.run()
    assert results[0] == "OK" and isinstance(results[1], vkclient.ResponseError)


def test_transaction_pipeline_refusals(client, key):
    p = client.pipeline(transaction=True)
    with pytest.raises(vkclient.CommandNotAllowedError) as e:
        p.execute("MULTI")
    assert str(e.value) == ("command not allowed on a shared connection: MULTI, EXEC and "
                            "DISCARD in a transaction pipeline: exec sends MULTI and EXEC itself")
    with pytest.raises(vkclient.CommandNotAllowedError):
        p.run()
    # A command refused when queued discards the whole transaction.
    p.execute("SET", key, "kept")
    assert p.run() == ["OK"]
    p.execute("SET", key, "lost").execute("SET", key)
    with pytest.raises(vkclient.ResponseError) as e:
        p.run()
    assert str(e.value).startswith("server error reply: transaction discarded: command 2 "
                                   "was refused: ERR wrong number of arguments")
    assert client.get(key) == b"kept"
    # The mode is set before the first command.
    q = client.pipeline()
    q.execute("PING")
    with pytest.raises(vkclient.InvalidArgumentError):
        q._set_transaction(True)


def test_a_second_client_never_sees_half_a_transaction(client, key):
    left, right = key + ":left", key + ":right"
    stop = threading.Event()
    torn, reads = [], [0]

    def read():
        with vkclient.Client(plain_config()) as other:
            while not stop.is_set():
                a, b = other.execute("MGET", left, right)
                if a != b:
                    torn.append((a, b))
                reads[0] += 1

    reader = threading.Thread(target=read)
    reader.start()
    try:
        p = client.pipeline(transaction=True)
        for i in range(300):
            p.execute("SET", left, i).execute("SET", right, i)
            assert p.run() == ["OK", "OK"]
    finally:
        stop.set()
        reader.join()
    assert reads[0] > 0
    assert torn == []


def test_queued_commands_are_invisible_until_exec(client, key):
    other = vkclient.Client(plain_config())
    with client.session() as s:
        assert s.execute("MULTI") == "OK"
        assert s.execute("SET", key, "1") == "QUEUED"
        assert other.get(key) is None
        assert s.execute("EXEC") == ["OK"]
    assert other.get(key) == b"1"
    other.close()


# ---- WATCH, transaction(), DISCARD -----------------------------------------------------

def test_watch_conflict_raises_watch_error(client, key):
    client.set(key, "0")
    with client.session() as s:
        s.watch(key)
        client.set(key, "theirs")         # another connection writes the watched key
        s.multi()
        s.execute("SET", key, "mine")
        with pytest.raises(vkclient.WatchError) as e:
            s.run()
        assert str(e.value) == "transaction aborted: a watched key changed"
        assert isinstance(e.value, vkclient.Error)
        # By hand, the same.
        s.watch(key)
        client.set(key, "theirs again")
        s.execute("MULTI")
        s.execute("SET", key, "mine")
        with pytest.raises(vkclient.WatchError):
            s.execute("EXEC")
    assert client.get(key) == b"theirs again"


def test_transaction_retries_until_it_wins(client, key):
    client.set(key, "10")
    calls = []

    def double(s):
        calls.append(1)
        value = int(s.execute("GET", key))
        if len(calls) < 3:
            client.set(key, str(value + 1))   # a concurrent writer, twice
        s.multi()
        s.execute("SET", key, value * 2)

    assert client.transaction(double, key) == ["OK"]
    assert len(calls) == 3
    assert client.get(key) == b"24"
    # value_from_callable, and no multi() at all.
    assert client.transaction(lambda s: s.execute("GET", key), key,
                              value_from_callable=True) == b"24"
    assert client.transaction(lambda s: None, key) == []


def test_transaction_gives_up_after_retries(client, key):
    client.set(key, "0")
    calls = []

    def always_loses(s):
        calls.append(1)
        client.execute("INCR", key)
        s.multi()
        s.execute("SET", key, "never")

    with pytest.raises(vkclient.WatchError):
        client.transaction(always_loses, key, retries=2)
    assert len(calls) == 3
    assert client.get(key) == b"3"
    with pytest.raises(ValueError):
        client.transaction(always_loses, key, retries=-1)
    with pytest.raises(TypeError):
        client.transaction(None, key)


def test_discard(client, key):
    with client.session() as s:
        s.execute("MULTI")
        assert s.execute("SET", key, "x") == "QUEUED"
        assert s.execute("DISCARD") == "OK"
        assert s.execute("GET", key) is None
        # multi() then discard(): nothing sent.
        s.multi()
        s.execute("SET", key, "y")
        s.discard()
        assert s.queued is None
    assert client.get(key) is None


# ---- what a session leaves behind --------------------------------------------------------

def test_select_does_not_leak_into_the_pool(key):
    with small_client(db=2) as c:
        c.set(key, "two")
        with c.session() as s:
            conn = s.execute("CLIENT", "ID")
            assert s.execute("SELECT", 5) == "OK"
            s.execute("SET", key, "five")
        assert c.execute("CLIENT", "ID") == conn   # the same connection...
        assert c.get(key) == b"two"                # ...back on db 2
        with pytest.raises(vkclient.CommandNotAllowedError):
            c.execute("SELECT", 5)
        with c.session() as s:
            s.execute("SELECT", 5)
            assert s.execute("GET", key) == b"five"
            s.execute("DEL", key)


def test_watch_multi_and_names_are_not_left_behind(key):
    with small_client() as c, small_client() as other:
        with c.session() as s:
            conn = s.execute("CLIENT", "ID")
            s.watch(key)
        other.set(key, "changed")
        # The WATCH was undone: a transaction on the same connection wins.
        with c.session() as s:
            assert s.execute("CLIENT", "ID") == conn
            s.multi()
            s.execute("SET", key, "mine")
            assert s.run() == ["OK"]
            s.execute("MULTI")
            s.execute("SET", key, "queued, then discarded")
        assert c.get(key) == b"mine"
        # A name cannot be undone for sure: that connection is closed.
        with c.session() as s:
            s.execute("CLIENT", "SETNAME", "pinned")
        assert c.execute("CLIENT", "ID") != conn
        assert c.execute("CLIENT", "GETNAME") is None


def test_broken_session_is_never_reused(client, key):
    with small_client() as c:
        s = c.session()
        conn = s.execute("CLIENT", "ID")
        client.execute("CLIENT", "KILL", "ID", conn)
        with pytest.raises(vkclient.ConnectionError):
            s.execute("PING")
        with pytest.raises(vkclient.ConnectionError) as e:
            s.execute("PING")
        assert "the session's connection failed" in str(e.value)
        s.close()
        s.close()
        assert s.closed
        with pytest.raises(ValueError):
            s.execute("PING")
        assert c.execute("CLIENT", "ID") != conn


def test_session_refusals(client):
    with client.session() as s:
        with pytest.raises(vkclient.CommandNotAllowedError):
            s.execute("SUBSCRIBE", "ch")
        with pytest.raises(vkclient.CommandNotAllowedError):
            s.execute("CLIENT", "REPLY", "OFF")
        assert s.execute("PING") == "PONG"
        with pytest.raises(vkclient.CommandNotAllowedError):
            s.run()
        s.multi()
        with pytest.raises(vkclient.CommandNotAllowedError):
            s.multi()
        with pytest.raises(vkclient.CommandNotAllowedError):
            s.watch("k")
    with pytest.raises(TypeError):
        vkclient.Session(object())


# ---- Sentinel and Cluster ------------------------------------------------------------------

def test_sentinel_session_goes_to_the_master(sentinel):  # noqa: F811
    with vkclient.Client(sentinel.config()) as c:
        with c.session() as s:
            assert s.execute("ROLE")[0] == b"master"
            key = "vkpy:tx:sentinel"
            s.watch(key)
            s.multi()
            s.execute("SET", key, "1").execute("INCR", key)
            assert s.run() == ["OK", 2]
        p = c.pipeline(transaction=True)
        p.execute("INCR", key)
        assert p.run() == [3]


def test_cluster_slots(cluster):  # noqa: F811
    with vkclient.Client(cluster.config()) as c:
        with pytest.raises(vkclient.InvalidArgumentError) as e:
            c.session()
        assert str(e.value) == ("invalid argument: a session in cluster mode needs a key: it "
                                "runs on the master of that key's hash slot")
        a, b = "{vkpy:tx}a", "{vkpy:tx}b"
        with c.session(a) as s:
            s.watch(a, b)
            s.multi()
            s.execute("SET", a, 1).execute("SET", b, 2)
            assert s.run() == ["OK", "OK"]
            with pytest.raises(vkclient.InvalidArgumentError) as e:
                s.execute("GET", "elsewhere")
            assert "the session is pinned to the master of hash slot" in str(e.value)
        p = c.pipeline(transaction=True)
        p.execute("INCR", a).execute("GET", "elsewhere")
        with pytest.raises(vkclient.InvalidArgumentError) as e:
            p.run()
        assert str(e.value).startswith("invalid argument: CROSSSLOT keys in request don't hash "
                                       "to the same slot")
        assert c.get(a) == b"1"
        # transaction() pins the session to the first watched key's slot.
        assert c.transaction(lambda s: s.multi().execute("INCR", a), a, b) == [2]
