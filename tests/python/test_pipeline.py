"""Pipelines: one round trip, replies in order, errors kept in place."""

import pytest

import vkclient


def test_run_returns_every_reply_in_order(client, key):
    p = client.pipeline()
    assert isinstance(p, vkclient.Pipeline)
    assert len(p) == 0
    assert p.execute("SET", key, 1) is p
    p.execute("INCR", key).execute("GET", key).execute("GET", key + ":none")
    assert len(p) == 4
    assert "queued=4" in repr(p)
    assert p.run() == ["OK", 2, b"2", None]
    assert len(p) == 0


def test_error_reply_in_the_middle_keeps_the_others(client, key):
    p = client.pipeline()
    p.execute("SET", key, "a")
    p.execute("NO-SUCH-COMMAND")
    p.execute("INCR", key)  # WRONGTYPE-like: not an integer
    p.execute("GET", key)
    replies = p.run()
    assert replies[0] == "OK"
    assert isinstance(replies[1], vkclient.ResponseError)
    assert str(replies[1]).startswith("ERR unknown command")
    assert isinstance(replies[2], vkclient.ResponseError)
    assert str(replies[2]) == "ERR value is not an integer or out of range"
    assert replies[3] == b"a"


def test_reuse_and_large_pipelines(client, key):
    with client.pipeline() as p:
        for i in range(1000):
            p.execute("RPUSH", key, i)
        replies = p.run()
        assert replies == list(range(1, 1001))
        p.execute("LLEN", key)
        assert p.run() == [1000]
        assert p.run() == []


def test_pipeline_needs_an_open_client():
    never_opened = vkclient.Client.__new__(vkclient.Client)
    with pytest.raises(vkclient.NilClientError) as info:
        never_opened.pipeline()
    assert str(info.value) == "redis client is nil"
    with pytest.raises(TypeError):
        vkclient.Pipeline("not a client")


def test_pipeline_argument_errors(client):
    p = client.pipeline()
    with pytest.raises(TypeError):
        p.execute()
    with pytest.raises(TypeError):
        p.execute("SET", "k", None)
    assert len(p) == 0


def test_pipeline_on_a_dead_server(own_server, key):
    from conftest import plain_config
    cfg = plain_config(own_server.address, options=vkclient.ConnectionOptions(max_retries=-1))
    with vkclient.Client(cfg) as c:
        p = c.pipeline()
        p.execute("SET", key, 1)
        own_server.kill()
        with pytest.raises(vkclient.ConnectionError):
            p.run()
