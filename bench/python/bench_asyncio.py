#!/usr/bin/python3
"""vkclient.asyncio against redis.asyncio (Debian's python3-redis 4.3, with
the hiredis parser when python3-hiredis is installed) and against the
blocking vkclient from threads, on one server, in one run (DESIGN §7).

    PYTHONPATH=<build>/bindings/python /usr/bin/python3 bench/python/bench_asyncio.py \
        [--ops 20000] [--runs 5] [--cpu 0] [--server valkey-server]

Cases, each measured for every client back to back in each run (default
asyncio loop for both asyncio clients):
  - 64 concurrent tasks doing GET on one client object (redis.asyncio: one
    Redis object, its pool opens what the tasks need); the blocking
    vkclient from 64 threads on one Client;
  - 1 task doing GET;
  - pipelines of 100 GETs from one task;
  - lock pairs from one task: vkclient try_lock + unlock against
    redis.asyncio's Lock acquire(blocking=False) + release;
  - GET from one thread on the blocking vkclient with the Prometheus
    adapter (vkclient.prometheus, Debian's python3-prometheus-client) as
    its metrics sink, against the same client without any sink.
The report gives the median ops/s per client and, per target, the median
of the per-run ratios, one line each:
    target <name> <ratio> (>= <goal>) met|not met

Without VK_TEST_ADDR in the environment a server is started on a free port
through tests/harness/vkharness.py (pinned with --cpu) and stopped at the end.
"""

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "harness"))

import redis.asyncio  # noqa: E402  Debian's python3-redis (4.3), the peer
import redis.asyncio.lock  # noqa: E402

import prometheus_client  # noqa: E402  Debian's python3-prometheus-client
import vkclient  # noqa: E402
import vkclient.asyncio  # noqa: E402
from vkclient.prometheus import PrometheusMetrics  # noqa: E402

TASKS = 64
PIPELINE_DEPTH = 100
KEY = "bench:asyncio:key"
LOCK_KEY = "bench:asyncio:lock"

# name: (goal, numerator case, denominator case)
TARGETS = [
    ("asyncio_64_tasks_vs_redis_asyncio", 4.0, "vk_async_64", "redis_async_64"),
    ("asyncio_64_tasks_vs_blocking_64_threads", 1.5, "vk_async_64", "vk_blocking_64_threads"),
    ("asyncio_1_task_vs_redis_asyncio", 2.0, "vk_async_1", "redis_async_1"),
    ("asyncio_pipeline_100_vs_redis_asyncio", 4.0, "vk_async_pipeline", "redis_async_pipeline"),
    ("asyncio_lock_pairs_vs_redis_asyncio_lock", 2.0, "vk_async_lock", "redis_async_lock"),
    ("prometheus_get_vs_no_sink", 0.85, "vk_get_prometheus", "vk_get_no_sink"),
]


async def tasks_get(get, ops, tasks):
    per_task = ops // tasks

    async def worker():
        for _ in range(per_task):
            await get(KEY)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return per_task * tasks / (time.perf_counter() - t0)


async def pipelines(make, ops):
    rounds = max(1, ops // PIPELINE_DEPTH)
    t0 = time.perf_counter()
    for _ in range(rounds):
        p = make()
        for _ in range(PIPELINE_DEPTH):
            p.execute("GET", KEY) if hasattr(p, "run") else p.get(KEY)
        await (p.run() if hasattr(p, "run") else p.execute())
    return rounds * PIPELINE_DEPTH / (time.perf_counter() - t0)


async def vk_lock_pairs(locks, pairs):
    t0 = time.perf_counter()
    for _ in range(pairs):
        handle = await locks.try_lock(LOCK_KEY)
        await handle.unlock()
    return pairs / (time.perf_counter() - t0)


async def redis_lock_pairs(client, pairs):
    t0 = time.perf_counter()
    for _ in range(pairs):
        lock = redis.asyncio.lock.Lock(client, LOCK_KEY, timeout=10)
        assert await lock.acquire(blocking=False)
        await lock.release()
    return pairs / (time.perf_counter() - t0)


def blocking_threads(client, ops, threads):
    per_thread = ops // threads
    start = threading.Barrier(threads + 1)

    def worker():
        start.wait()
        for _ in range(per_thread):
            client.get(KEY)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join()
    return per_thread * threads / (time.perf_counter() - t0)


def one_thread_get(client, ops):
    get = client.get
    t0 = time.perf_counter()
    for _ in range(ops):
        get(KEY)
    return ops / (time.perf_counter() - t0)


def sink_cost(cfg, ops):
    """GET from one thread with the Prometheus adapter (a registry of this
    run's own) and without any sink, each on a client of its own, warmed
    up, measured back to back."""
    with_prometheus = vkclient.Config(
        standalone=cfg.standalone,
        metrics=PrometheusMetrics(registry=prometheus_client.CollectorRegistry()))
    rates = {}
    with vkclient.Client(cfg) as plain, vkclient.Client(with_prometheus) as observed:
        one_thread_get(plain, ops // 10)
        one_thread_get(observed, ops // 10)
        rates["vk_get_no_sink"] = one_thread_get(plain, ops // 2)
        rates["vk_get_prometheus"] = one_thread_get(observed, ops // 2)
    return rates


async def one_run(host, port, ops):
    cfg = vkclient.Config(standalone=vkclient.Standalone("%s:%d" % (host, port)))
    rates = {}
    async with vkclient.asyncio.Client(cfg) as vk:
        rp = redis.asyncio.Redis(host=host, port=port, max_connections=TASKS)
        try:
            await vk.set(KEY, "x" * 16)
            locks = vkclient.asyncio.LockManager(vk)
            # Warm up both (connections, pools, code paths).
            await tasks_get(vk.get, TASKS * 20, TASKS)
            await tasks_get(rp.get, TASKS * 20, TASKS)
            rates["vk_async_64"] = await tasks_get(vk.get, ops, TASKS)
            rates["redis_async_64"] = await tasks_get(rp.get, ops, TASKS)
            rates["vk_async_1"] = await tasks_get(vk.get, ops // 2, 1)
            rates["redis_async_1"] = await tasks_get(rp.get, ops // 2, 1)
            rates["vk_async_pipeline"] = await pipelines(vk.pipeline, ops * 2)
            rates["redis_async_pipeline"] = await pipelines(
                lambda: rp.pipeline(transaction=False), ops * 2)
            rates["vk_async_lock"] = await vk_lock_pairs(locks, ops // 4)
            rates["redis_async_lock"] = await redis_lock_pairs(rp, ops // 4)
        finally:
            await rp.close()
            await rp.connection_pool.disconnect()
    with vkclient.Client(cfg) as blocking:
        blocking_threads(blocking, TASKS * 20, TASKS)
        rates["vk_blocking_64_threads"] = blocking_threads(blocking, ops, TASKS)
    rates.update(sink_cost(cfg, ops))
    return rates


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--server", default=os.environ.get("VK_TEST_SERVER", "valkey-server"))
    args = parser.parse_args()

    server = None
    if os.environ.get("VK_TEST_ADDR"):
        host, port = os.environ["VK_TEST_ADDR"].rsplit(":", 1)
        port = int(port)
    else:
        import vkharness
        if args.cpu is not None:
            os.sched_setaffinity(0, {args.cpu})   # the server inherits it too
        server = vkharness.Server(args.server).start()
        host, port = "127.0.0.1", server.port
    try:
        runs = [asyncio.run(one_run(host, port, args.ops)) for _ in range(args.runs)]
    finally:
        if server is not None:
            server.stop()

    print("vkclient.asyncio vs redis.asyncio %s and vkclient from %d threads, %d ops per case, "
          "median of %d runs (ops/s):" % (redis.__version__, TASKS, args.ops, args.runs))
    for case in runs[0]:
        print("  %-24s %10.0f" % (case, statistics.median(r[case] for r in runs)))
    for name, goal, num, den in TARGETS:
        ratio = statistics.median(r[num] / r[den] for r in runs)
        print("target %s %.2f (>= %s) %s" % (name, ratio, goal,
                                             "met" if ratio >= goal else "not met"))


if __name__ == "__main__":
    main()
