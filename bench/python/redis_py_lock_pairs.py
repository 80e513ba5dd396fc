#!/usr/bin/python3
"""redis-py's redis.lock.Lock, acquire(blocking=False) + release pairs per
second on one connection: the peer figure for bench/run.sh's lock case.

    /usr/bin/python3 bench/python/redis_py_lock_pairs.py HOST PORT PAIRS RUNS

Prints the median of RUNS runs as "redis-py Lock pairs/s: N". Needs only
Debian's python3-redis, not the vkclient binding.
"""

import statistics
import sys
import time

import redis


def pairs_per_second(client, pairs):
    started = time.perf_counter()
    for _ in range(pairs):
        lock = client.lock("bench:rplock", timeout=10)
        lock.acquire(blocking=False)
        lock.release()
    return pairs / (time.perf_counter() - started)


def main(argv):
    if len(argv) != 5:
        sys.exit(__doc__)
    host, port, pairs, runs = argv[1], int(argv[2]), int(argv[3]), int(argv[4])
    client = redis.Redis(host=host, port=port)
    pairs_per_second(client, min(pairs, 1000))  # warm-up: connect, load the scripts
    rates = [pairs_per_second(client, pairs) for _ in range(runs)]
    print("redis-py Lock pairs/s: %.0f" % statistics.median(rates))


if __name__ == "__main__":
    main(sys.argv)
