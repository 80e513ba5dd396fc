#!/usr/bin/python3
"""vkclient (Python) against redis-py with the hiredis parser, on one server,
one connection each, client and server pinned to one core (DESIGN §7).

    PYTHONPATH=<build>/bindings/python /usr/bin/python3 bench/python/bench_redis_py.py \
        [--ops 20000] [--runs 5] [--cpu 0] [--server valkey-server] [--bench-core PATH]

Cases: request/response SET and GET, pipelines of 100 SETs, and lock
acquire+release pairs (vkclient try_lock + unlock against redis-py's
redis.lock.Lock acquire(blocking=False) + release). Each run measures every
case for both clients back to back and the report gives the median ops/s
and the median of the per-run ratios. When the C benchmark (bench_core,
built in <build>/bench/c) is found, it is run on the same server for the
raw hiredis figures, and vkclient-from-Python is compared with them too.

Without VK_TEST_ADDR in the environment a server is started on a free port
through tests/harness/vkharness.py, pinned to the same core, and stopped at
the end.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "harness"))

import redis  # noqa: E402  Debian's python3-redis (4.3), the peer
import redis.utils  # noqa: E402

import vkclient  # noqa: E402

PIPELINE_DEPTH = 100
TARGETS = {  # vkclient / redis-py: the binding's performance targets
    "SET": 1.2, "GET": 1.2, "pipeline of 100": 2.0, "lock pair": 1.5,
}
HIREDIS_TARGET = 0.85


def timed(fn, ops):
    started = time.perf_counter()
    fn(ops)
    return ops / (time.perf_counter() - started)


class Cases:
    """The same work for both clients; each function runs `ops` operations."""

    def __init__(self, host, port):
        self.vk = vkclient.Client(vkclient.Config(
            standalone=vkclient.Standalone("%s:%d" % (host, port)),
            options=vkclient.ConnectionOptions(pool_size=1)))
        self.locks = vkclient.LockManager(self.vk)
        self.rp = redis.Redis(host=host, port=port)
        self.value = b"value-0123456789"
        self.vk.set("bench:key", self.value)

    # -- vkclient -------------------------------------------------------------

    def vk_set(self, ops):
        execute, value = self.vk.execute, self.value
        for _ in range(ops):
            execute("SET", "bench:key", value)

    def vk_get(self, ops):
        get = self.vk.get
        for _ in range(ops):
            get("bench:key")

    def vk_pipeline(self, ops):
        value = self.value
        for _ in range(ops // PIPELINE_DEPTH):
            p = self.vk.pipeline()
            execute = p.execute
            for _ in range(PIPELINE_DEPTH):
                execute("SET", "bench:key", value)
            p.run()

    def vk_lock(self, ops):
        try_lock = self.locks.try_lock
        for _ in range(ops):
            try_lock("bench:lock").unlock()

    # -- redis-py -------------------------------------------------------------

    def rp_set(self, ops):
        set_, value = self.rp.set, self.value
        for _ in range(ops):
            set_("bench:key", value)

    def rp_get(self, ops):
        get = self.rp.get
        for _ in range(ops):
            get("bench:key")

    def rp_pipeline(self, ops):
        value = self.value
        for _ in range(ops // PIPELINE_DEPTH):
            p = self.rp.pipeline(transaction=False)
            for _ in range(PIPELINE_DEPTH):
                p.set("bench:key", value)
            p.execute()

    def rp_lock(self, ops):
        for _ in range(ops):
            lock = self.rp.lock("bench:rplock", timeout=10)
            lock.acquire(blocking=False)
            lock.release()


def bench_core_figures(path, host, port, ops, runs):
    """Raw hiredis op/s per case from the C benchmark, or None."""
    if not path or not os.access(path, os.X_OK):
        return None, None
    out = subprocess.run([path, host, str(port), str(ops), str(runs)], check=True,
                         capture_output=True, text=True).stdout
    figures = {}
    for line in out.splitlines():
        match = re.match(r"^(\S.*?)\s{2,}(\d+)\s+(\d+)\s+([\d.]+)\s*$", line)
        if match:
            figures[match.group(1).strip()] = float(match.group(3))
    return figures, out


def find_bench_core(explicit):
    if explicit:
        return explicit
    candidates = []
    if os.environ.get("VK_BUILD_DIR"):
        candidates.append(os.path.join(os.environ["VK_BUILD_DIR"], "bench", "c", "bench_core"))
    # <build>/bindings/python/vkclient/__init__.py -> <build>/bench/c/bench_core
    package = os.path.dirname(os.path.abspath(vkclient.__file__))
    build = os.path.dirname(os.path.dirname(os.path.dirname(package)))
    candidates.append(os.path.join(build, "bench", "c", "bench_core"))
    return next((c for c in candidates if os.access(c, os.X_OK)), None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=20000, help="operations per case and run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cpu", type=int, default=int(os.environ.get("VK_BENCH_CPU", "0")))
    parser.add_argument("--server", default=os.environ.get("VK_TEST_SERVER", "valkey-server"))
    parser.add_argument("--bench-core", default=None, help="path of the C bench_core binary")
    args = parser.parse_args()

    # Pin first: a server started below inherits the affinity.
    os.sched_setaffinity(0, {args.cpu})
    server = None
    if os.environ.get("VK_TEST_ADDR"):
        host, port = os.environ["VK_TEST_ADDR"].rsplit(":", 1)
        port = int(port)
    else:
        import vkharness
        server = vkharness.Server(args.server).start()
        host, port = "127.0.0.1", server.port
    try:
        return run(args, host, port)
    finally:
        if server is not None:
            server.stop()


def run(args, host, port):
    cases = Cases(host, port)
    names = [("SET", cases.vk_set, cases.rp_set, args.ops),
             ("GET", cases.vk_get, cases.rp_get, args.ops),
             ("pipeline of 100", cases.vk_pipeline, cases.rp_pipeline, args.ops * 5),
             ("lock pair", cases.vk_lock, cases.rp_lock, max(args.ops // 4, 100))]
    core = find_bench_core(args.bench_core)
    print("vkclient %s (Python %s) vs redis-py %s (hiredis parser: %s)" % (
        vkclient.__version__, sys.version.split()[0], redis.__version__,
        redis.utils.HIREDIS_AVAILABLE))
    print("server %s:%d, client and server pinned to cpu %d; %d runs; median ops/s "
          "(pipelines: commands/s, lock pairs: pairs/s)" % (host, port, args.cpu, args.runs))
    results = {name: {"vk": [], "rp": [], "ratio": [], "raw": [], "raw_ratio": []}
               for name, *_ in names}
    for _ in range(args.runs):
        for name, vk_fn, rp_fn, ops in names:
            vk = timed(vk_fn, ops)
            rp = timed(rp_fn, ops)
            results[name]["vk"].append(vk)
            results[name]["rp"].append(rp)
            results[name]["ratio"].append(vk / rp)
        # Raw hiredis in the same run, right after: one bench_core pass.
        figures, raw_out = bench_core_figures(core, host, port, args.ops, 1)
        if os.environ.get("VK_BENCH_VERBOSE") and raw_out:
            print(raw_out)
        for name in ("SET", "GET"):
            raw = next((v for k, v in (figures or {}).items() if k.upper() == name), None)
            if raw:
                results[name]["raw"].append(raw)
                results[name]["raw_ratio"].append(results[name]["vk"][-1] / raw)

    print()
    print("%-18s %14s %14s %8s %8s" % ("case", "vkclient op/s", "redis-py op/s", "ratio",
                                        "target"))
    failed = []
    for name, *_ in names:
        r = results[name]
        ratio = statistics.median(r["ratio"])
        ok = ratio >= TARGETS[name]
        failed += [] if ok else [name]
        print("%-18s %14.0f %14.0f %8.2f %7.1fx %s" % (
            name, statistics.median(r["vk"]), statistics.median(r["rp"]), ratio,
            TARGETS[name], "ok" if ok else "BELOW"))

    print()
    if not results["GET"]["raw"]:
        print("raw hiredis: bench_core not found (build bench/ or pass --bench-core); "
              "no hiredis comparison")
        failed.append("hiredis comparison not run")
    else:
        print("vkclient from Python vs raw hiredis in C (%s, run after the Python cases "
              "of each run):" % core)
        print("%-18s %14s %14s %8s %8s" % ("case", "vkclient op/s", "hiredis op/s", "ratio",
                                            "target"))
        for name in ("SET", "GET"):
            r = results[name]
            ratio = statistics.median(r["raw_ratio"])
            ok = ratio >= HIREDIS_TARGET
            failed += [] if ok else ["%s vs hiredis" % name]
            print("%-18s %14.0f %14.0f %8.2f %7.2fx %s" % (
                name, statistics.median(r["vk"]), statistics.median(r["raw"]), ratio,
                HIREDIS_TARGET, "ok" if ok else "BELOW"))
    print()
    print("all targets met" if not failed else "below target: " + ", ".join(failed))
    cases.vk.delete("bench:key", "bench:lock", "bench:rplock")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
