"""Commands that would change a pooled connection for its next caller are
refused before anything is sent; a transaction inside one pipeline runs."""

import pytest

import vkclient

from conftest import plain_config
from test_topologies import cluster, sentinel  # noqa: F401  (fixtures)

PREFIX = "command not allowed on a shared connection: "
SELECT_TEXT = PREFIX + ("SELECT changes the database of the connection; choose the database "
                        "with the db connection option")
MULTI_TEXT = PREFIX + ("MULTI leaves the connection in a transaction; send MULTI ... EXEC in "
                       "one pipeline (or use a transaction pipeline or a session)")
WATCH_TEXT = PREFIX + "WATCH leaves keys watched on the connection; use a session"


@pytest.fixture
def single(env):
    """A client with a pool of one connection: every call shares it."""
    cfg = plain_config(env.addr, options=vkclient.ConnectionOptions(pool_size=1))
    with vkclient.Client(cfg) as c:
        yield c


def refused(call, text):
    with pytest.raises(vkclient.CommandNotAllowedError) as info:
        call()
    err = info.value
    assert str(err) == text
    assert err.code == 30
    assert isinstance(err, vkclient.Error) and isinstance(err, ValueError)
    return err


def test_select_is_refused_and_the_database_stays(single, key):
    connection = single.execute("CLIENT", "ID")
    assert single.execute("SET", key, "zero") == "OK"
    refused(lambda: single.execute("SELECT", "1"), SELECT_TEXT)
    refused(lambda: single.execute("select", 1), SELECT_TEXT)
    assert single.get(key) == b"zero"
    assert single.execute("CLIENT", "ID") == connection


def test_multi_is_refused_and_nothing_is_queued(single, key):
    connection = single.execute("CLIENT", "ID")
    refused(lambda: single.execute("MULTI"), MULTI_TEXT)
    refused(lambda: single.execute(b"mUlTi"), MULTI_TEXT)
    assert single.execute("SET", key, "v") == "OK"   # not QUEUED
    with pytest.raises(vkclient.CommandNotAllowedError) as info:
        single.execute("CLIENT", "REPLY", "OFF")
    assert str(info.value).startswith(PREFIX + "CLIENT REPLY ")
    assert single.execute("CLIENT", "ID") == connection


def test_a_transaction_in_one_pipeline(single, key):
    counter = key + ":n"
    p = single.pipeline()
    p.execute("MULTI").execute("SET", key, "v").execute("INCR", counter).execute("EXEC")
    assert p.run() == ["OK", "QUEUED", "QUEUED", ["OK", 1]]
    p.execute("multi").execute("INCR", counter).execute("discard")
    assert p.run() == ["OK", "QUEUED", "OK"]
    assert single.execute("INCR", counter) == 2   # out of MULTI; the DISCARD held


def test_pipeline_refusals_send_nothing(single, key):
    p = single.pipeline()
    p.execute("SET", key, "sent")
    refused(lambda: p.execute("WATCH", key), WATCH_TEXT)
    refused(p.run, WATCH_TEXT)
    assert len(p) == 0
    assert single.get(key) is None

    p.execute("MULTI").execute("SET", key, "sent")
    refused(p.run, PREFIX + "MULTI without EXEC or DISCARD; end the transaction in the same "
                            "pipeline")
    refused(lambda: p.execute("EXEC"), PREFIX + "EXEC without MULTI; send MULTI ... EXEC in one "
                                                "pipeline (or use a transaction pipeline or "
                                                "a session)")
    refused(p.run, PREFIX + "EXEC without MULTI; send MULTI ... EXEC in one pipeline (or "
                            "use a transaction pipeline or a session)")
    assert single.get(key) is None
    assert p.execute("PING").run() == ["PONG"]


def test_sentinel_runs_a_transaction_in_one_pipeline(sentinel, key):  # noqa: F811
    with vkclient.Client(sentinel.config(pool_size=1)) as c:
        refused(lambda: c.execute("SELECT", "1"), SELECT_TEXT)
        p = c.pipeline()
        p.execute("MULTI").execute("SET", key, "v").execute("GET", key).execute("EXEC")
        assert p.run() == ["OK", "QUEUED", "QUEUED", ["OK", b"v"]]
        assert c.execute("SET", key, "w") == "OK"


def test_cluster_refuses_multi_in_pipelines(cluster, key):  # noqa: F811
    with vkclient.Client(cluster.config()) as c:
        refused(lambda: c.execute("MULTI"), MULTI_TEXT)
        p = c.pipeline()
        p.execute("SET", key, "sent")
        cluster_text = PREFIX + ("MULTI, EXEC and DISCARD in a cluster pipeline, which is split "
                                 "by node: a transaction cannot be kept on one connection (use "
                                 "a transaction pipeline, its keys in one slot)")
        refused(lambda: p.execute("MULTI"), cluster_text)
        refused(p.run, cluster_text)
        assert c.get(key) is None
        assert p.execute("SET", key, "v").execute("GET", key).run() == ["OK", b"v"]
