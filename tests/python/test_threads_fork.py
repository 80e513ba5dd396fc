"""Threads and fork: blocking calls release the GIL, one client serves many
threads, callbacks arrive from other threads, a forked child works."""

import multiprocessing
import threading
import time

import pytest

import vkclient

from conftest import plain_config


def blocked_clients(client):
    info = client.execute("INFO", "clients").decode()
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    return int(fields["blocked_clients"])


def test_two_threads_blocked_on_the_server_at_once(client, key):
    # Both threads sit in BLPOP inside C at the same time; the main thread
    # keeps running Python meanwhile. If a call kept the GIL, the second
    # thread (and the main thread) could not run until the first returned.
    results = {}

    def pop(name):
        results[name] = client.execute("BLPOP", key + name, 10)

    threads = [threading.Thread(target=pop, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    with vkclient.Client(plain_config()) as observer:
        deadline = time.monotonic() + 5
        while blocked_clients(observer) < 2:
            assert time.monotonic() < deadline, "the two BLPOPs never blocked together"
            time.sleep(0.01)
        observer.execute("LPUSH", key + "a", "A")
        observer.execute("LPUSH", key + "b", "B")
    for t in threads:
        t.join(10)
    assert results == {"a": [(key + "a").encode(), b"A"], "b": [(key + "b").encode(), b"B"]}


def test_many_threads_share_one_client(client, key):
    errors = []

    def work(n):
        try:
            for i in range(200):
                client.set("%s:%d" % (key, n), i)
                assert client.get("%s:%d" % (key, n)) == str(i).encode()
                client.execute("INCR", key)
                p = client.pipeline()
                p.execute("PING").execute("PING")
                assert p.run() == ["PONG", "PONG"]
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert client.get(key) == b"1600"


def test_locks_from_many_threads_exclude_each_other(client, key):
    locks = vkclient.LockManager(client)
    counter = {"value": 0, "inside": 0, "overlap": False}
    opts = vkclient.LockOptions(tries=1000, retry_delay=0.005)

    def increment():
        counter["inside"] += 1
        if counter["inside"] > 1:
            counter["overlap"] = True
        value = int(client.get(key) or 0)
        time.sleep(0.001)
        client.set(key, value + 1)
        counter["inside"] -= 1

    def worker():
        for _ in range(10):
            locks.with_lock_options(key + ":lock", opts, increment)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert client.get(key) == b"40"
    assert counter["overlap"] is False


def test_callbacks_from_another_thread(env, key):
    # The core's renewal thread runs while fn holds the lock; the logger and
    # metrics sinks may be called from any thread and must get the GIL.
    seen_threads = set()

    def logger(level, message, fields):
        seen_threads.add(threading.get_ident())

    def metrics(name, kind, value, labels):
        seen_threads.add(threading.get_ident())

    with vkclient.Client(plain_config(logger=logger, metrics=metrics)) as c:
        locks = vkclient.LockManager(c)
        opts = vkclient.LockOptions(expiry=0.2, auto_renew=True)
        # The critical section deletes the key: the renewal thread finds
        # the lock gone and reports it (log + metric) from its own thread.
        def lose_it():
            c.delete(key)
            time.sleep(0.5)

        with pytest.raises(vkclient.LockLostError):
            locks.with_lock_options(key, opts, lose_it)
    assert threading.get_ident() in seen_threads
    assert len(seen_threads) >= 2


def child_uses_inherited_client(client, key, queue):
    try:
        client.set(key + ":child", "from child")
        queue.put(client.get(key + ":child"))
        locks = vkclient.LockManager(client)
        queue.put(locks.with_lock(key + ":lock", lambda: "locked in child"))
    except Exception as err:  # sent to the parent, which fails the test
        queue.put(repr(err))


def test_forked_child_works(client, key):
    client.set(key, "parent")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=child_uses_inherited_client, args=(client, key, queue))
    child.start()
    first, second = queue.get(timeout=20), queue.get(timeout=20)
    child.join(20)
    assert child.exitcode == 0
    assert first == b"from child"
    assert second == "locked in child"
    # The parent's connections were not disturbed by the child.
    assert client.get(key) == b"parent"
    assert client.get(key + ":child") == b"from child"
    assert client.ping() is True


_inherited = {}


def _incr_in_worker(key):
    # Uses the client the parent created before forking.
    return _inherited["client"].execute("INCR", key)


def test_pool_of_forked_workers(client, key):
    client.execute("INCR", key + ":warm")  # the parent has live connections
    _inherited["client"] = client
    try:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(3) as pool:
            results = pool.map(_incr_in_worker, [key] * 30)
    finally:
        _inherited.clear()
    assert sorted(results) == list(range(1, 31))
    assert client.get(key) == b"30"
