"""vkclient.prometheus: the core's metrics as prometheus_client metrics,
scraped as text (generate_latest) after real workloads on real servers.

Every client here reports through a Recorder: the adapter, plus a copy of
each raw report, so that the scrape can also be checked against exactly
what the core said (counters: the increments' sum; histograms: the count
and sum of the observations; gauges: the last value).
"""

import os
import subprocess
import sys
import threading
import time

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

import vkclient
from vkclient.prometheus import (
    COMMAND_DURATION_BUCKETS, LOCK_HOLD_BUCKETS, METRICS, PrometheusMetrics,
)

from conftest import Env, plain_config, wait_until

import topologies  # tests/harness, on sys.path through conftest

class Recorder:
    """The adapter as a client's sink, keeping every raw report too, and
    any exception the adapter raised (which the binding could only hand to
    sys.unraisablehook)."""

    def __init__(self, adapter):
        self.adapter = adapter
        self.reports = []
        self.errors = []
        self.lock = threading.Lock()

    def __call__(self, name, kind, value, labels):
        with self.lock:
            self.reports.append((name, kind, value, dict(labels)))
        try:
            self.adapter(name, kind, value, labels)
        except BaseException as err:
            self.errors.append(err)
            raise

    def expected(self):
        """What the scrape must show for these reports alone, keyed by
        (sample name, sorted label items) as the scrape is."""
        out = {}
        for name, kind, value, labels in self.reports:
            labelnames = METRICS[name][1]
            full = tuple(sorted((n, labels.get(n, "")) for n in labelnames))
            if kind == "counter":
                out[(name, full)] = out.get((name, full), 0.0) + value
            elif kind == "gauge":
                out[(name, full)] = value
            else:
                count = (name + "_count", full)
                out[count] = out.get(count, 0.0) + 1
                total = (name + "_sum", full)
                out[total] = out.get(total, 0.0) + value
        return out


def expected_from(recorders):
    """What the scrape must show for the reports of these recorders
    (clients sharing one registry): counters and histograms add up, pool
    gauges are summed, any other gauge is its last value."""
    expected = {}
    for r in recorders:
        for (name, labels), value in r.expected().items():
            if name.startswith("redis_pool_") or name not in METRICS or (
                    METRICS[name][0] != "gauge"):
                expected[(name, labels)] = expected.get((name, labels), 0.0) + value
            else:
                expected[(name, labels)] = value
    return expected


class Scrape:
    """generate_latest(registry), as text and as samples; with recorders,
    also what their reports so far say it must hold (check())."""

    def __init__(self, registry, recorders=(), prefix=""):
        self.recorders = recorders
        self.prefix = prefix
        self.expected = expected_from(recorders)
        self.text = prometheus_client.generate_latest(registry).decode()
        self.samples = {}
        self.types = {}
        for family in text_string_to_metric_families(self.text):
            self.types[family.name] = family.type
            for s in family.samples:
                self.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def value(self, name, **labels):
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def names(self):
        return {name for name, _ in self.samples}

    def check(self):
        """The scrape agrees with every raw report, and the adapter raised nothing."""
        assert [err for r in self.recorders for err in r.errors] == []
        assert self.expected, "the workload reported nothing"
        for (name, labels), value in self.expected.items():
            got = self.samples.get((self.prefix + name, labels))
            assert got == pytest.approx(value, rel=1e-9, abs=1e-9), (name, labels, got, value)


def type_line(name, kind):
    return "# TYPE %s %s" % (name, kind)


def client_with(registry, address=None, namespace="", **kwargs):
    recorder = Recorder(PrometheusMetrics(registry=registry, namespace=namespace))
    return recorder, plain_config(address, metrics=recorder, **kwargs)


# ---- a workload -----------------------------------------------------------------

def test_workload_is_scraped_with_types_labels_and_values(key):
    registry = prometheus_client.CollectorRegistry()
    recorder, cfg = client_with(registry)
    n = 25
    hold = 0.05
    with vkclient.Client(cfg) as c:
        for i in range(n):
            assert c.set(key, i) is True
        for _ in range(n):
            assert c.get(key) == str(n - 1).encode()
        with pytest.raises(vkclient.ResponseError, match="WRONGTYPE"):
            c.execute("HGET", key, "field")                 # a failed command
        locks = vkclient.LockManager(c)
        with locks.lock(key + ":lock"):
            time.sleep(hold)                                # a lock held and released
        p = c.pipeline()
        p.execute("INCR", key + ":n").execute("INCR", key + ":n").execute("GET", key + ":n")
        assert p.run() == [1, 2, b"2"]
        c.delete(key, key + ":n")
        open_scrape = Scrape(registry, [recorder])
    closed_scrape = Scrape(registry, [recorder])

    s = open_scrape
    # Every known metric is registered with its type at once.
    for name, (kind, _, _) in METRICS.items():
        assert type_line(name, kind) in s.text, name
    assert s.types["redis_command_duration_seconds"] == "histogram"
    assert s.types["redis_lock_hold_seconds"] == "histogram"
    assert s.types["redis_pool_connections"] == "gauge"
    assert s.types["redis_lock_acquisitions"] == "counter"   # the parser drops _total

    # Commands: one observation each, by lower-case command name.
    h = "redis_command_duration_seconds"
    assert s.value(h + "_count", command="set") == n
    assert s.value(h + "_count", command="get") == n
    assert s.value(h + "_count", command="hget") == 1      # failed commands are timed too
    assert s.value(h + "_count", command="del") == 1
    assert s.value(h + "_bucket", command="get", le="+Inf") == n
    assert 0 < s.value(h + "_sum", command="get") < n * 5.0
    # The buckets are the sub-millisecond-first ones, cumulative.
    bounds = [float(b) for b in COMMAND_DURATION_BUCKETS]
    counts = [s.value(h + "_bucket", command="get", le=prometheus_client.utils.floatToGoString(b))
              for b in bounds]
    assert None not in counts and counts == sorted(counts) and counts[-1] <= n
    assert 'le="5e-05"' in s.text and 'le="0.00025"' in s.text
    # Exactly the commands the core timed, no more (it times a pipeline's
    # commands, if at all, as it reports them).
    reported = {labels["command"] for name, _, _, labels in recorder.reports if name == h}
    scraped = {dict(labels)["command"] for name, labels in s.samples if name == h + "_count"}
    assert scraped == reported and {"set", "get", "hget", "del"} <= scraped

    # The lock: one acquisition, one release, one hold of at least `hold`.
    assert s.value("redis_lock_acquisitions_total", result="acquired") == 1
    assert s.value("redis_lock_release_total", result="released") == 1
    assert s.value("redis_lock_hold_seconds_count") == 1
    assert hold <= s.value("redis_lock_hold_seconds_sum") < 30
    assert s.value("redis_lock_hold_seconds_bucket", le="0.025") == 0
    assert s.value("redis_lock_hold_seconds_bucket", le="600.0") == 1
    assert len([b for b in LOCK_HOLD_BUCKETS if b > 10]) >= 3   # multi-second holds too

    # The pool, while the client is open and idle: node is "" outside Cluster.
    assert s.value("redis_pool_connections", state="in_use", node="") == 0
    assert s.value("redis_pool_connections", state="idle", node="") >= 1
    assert s.value("redis_pool_waiters", node="") == 0
    assert 'redis_pool_connections{node="",state="idle"}' in s.text

    # Metrics nothing reported stay without samples (labelled) or at 0.
    assert s.value("redis_cluster_slot_refreshes_total") == 0
    assert not [k for k in s.samples if k[0] == "redis_iam_token_expiry_seconds"]
    assert not [k for k in s.samples if k[0] == "redis_connection_failures_total"]

    s.check()
    # Closed: the pool gave its connections back and reported it.
    closed_scrape.check()
    assert closed_scrape.value("redis_pool_connections", state="idle", node="") == 0
    assert closed_scrape.value("redis_pool_connections", state="in_use", node="") == 0


def test_connection_failures_and_reconnections(own_server, harness, key):
    registry = prometheus_client.CollectorRegistry()
    refused, cfg = client_with(registry, "127.0.0.1:%d" % harness.free_port())
    with pytest.raises(vkclient.ConnectionError):
        vkclient.Client(cfg)
    s = Scrape(registry, [refused])
    assert s.value("redis_connection_failures_total", operation="connect") == 1
    s.check()

    recorder, cfg = client_with(registry, own_server.address)
    with vkclient.Client(cfg) as c:
        c.set(key, "v")
        own_server.kill()
        with pytest.raises(vkclient.Error):
            c.get(key)
        with pytest.raises(vkclient.Error):
            c.get(key)
        own_server.restart()

        def back():
            try:
                c.get(key)
                return True
            except (vkclient.ConnectionError, vkclient.ReconnectRateLimitedError):
                return False
        assert wait_until(back, timeout=30, step=0.05) is not None
        s = Scrape(registry, [refused, recorder])
    assert s.value("redis_reconnections_total", result="success") >= 1
    assert s.value("redis_reconnections_total", result="failure") >= 1
    assert s.value("redis_connection_failures_total", operation="reconnect") >= 1
    # The refused client's connect failure is still there, next to these.
    assert s.value("redis_connection_failures_total", operation="connect") == 1
    s.check()


def test_lock_contention_and_not_held(key):
    registry = prometheus_client.CollectorRegistry()
    recorder, cfg = client_with(registry)
    with vkclient.Client(cfg) as c:
        locks = vkclient.LockManager(c)
        held = locks.try_lock(key)
        assert held is not None
        assert locks.try_lock(key) is None                  # contended
        c.delete(key)                                       # the lock is gone meanwhile
        with pytest.raises(vkclient.LockNotHeldError):
            held.unlock()
        s = Scrape(registry, [recorder])
    assert s.value("redis_lock_acquisitions_total", result="acquired") == 1
    assert s.value("redis_lock_acquisitions_total", result="contended") == 1
    assert s.value("redis_lock_release_total", result="not_held") == 1
    assert s.value("redis_lock_hold_seconds_count") == 1
    s.check()


# ---- namespace, sharing, errors ---------------------------------------------------

def test_namespace_prefixes_every_name(key):
    registry = prometheus_client.CollectorRegistry()
    recorder, cfg = client_with(registry, namespace="shop")
    with vkclient.Client(cfg) as c:
        for _ in range(7):
            c.get(key)
        s = Scrape(registry, [recorder], prefix="shop_")
    for name, (kind, _, _) in METRICS.items():
        assert type_line("shop_" + name, kind) in s.text, name
    assert s.value("shop_redis_command_duration_seconds_count", command="get") == 7
    assert all(name.startswith("shop_") for name in s.names())
    s.check()

    # Another namespace on the same registry is another set of metrics.
    other = PrometheusMetrics(registry=registry, namespace="billing")
    with vkclient.Client(plain_config(metrics=other)) as c:
        c.get(key)
    s = Scrape(registry)
    assert s.value("billing_redis_command_duration_seconds_count", command="get") == 1
    assert s.value("shop_redis_command_duration_seconds_count", command="get") == 7

    with pytest.raises(ValueError, match="namespace must match"):
        PrometheusMetrics(registry=registry, namespace="1bad-name")
    with pytest.raises(TypeError, match="namespace must be a str, not int"):
        PrometheusMetrics(registry=registry, namespace=3)


def test_two_clients_share_one_registry(key):
    registry = prometheus_client.CollectorRegistry()
    first, cfg_a = client_with(registry)
    second, cfg_b = client_with(registry)                   # no duplicate registration
    a = vkclient.Client(cfg_a)
    b = vkclient.Client(cfg_b)
    try:
        for _ in range(5):
            a.get(key)
        for _ in range(8):
            b.get(key)
        s = Scrape(registry, [first, second])
        # Counters and histograms add up; the pool gauges are summed.
        assert s.value("redis_command_duration_seconds_count", command="get") == 13
        idle_a = [v for n, _, v, l in first.reports
                  if n == "redis_pool_connections" and l["state"] == "idle"][-1]
        idle_b = [v for n, _, v, l in second.reports
                  if n == "redis_pool_connections" and l["state"] == "idle"][-1]
        assert idle_a >= 1 and idle_b >= 1
        assert s.value("redis_pool_connections", state="idle", node="") == idle_a + idle_b
        s.check()
        a.close()
        s = Scrape(registry, [first, second])
        s.check()
        assert s.value("redis_pool_connections", state="idle", node="") == idle_b
    finally:
        a.close()
        b.close()
    assert Scrape(registry).value("redis_pool_connections", state="idle", node="") == 0

    # A third adapter, made later, and the default registry work too.
    PrometheusMetrics(registry=registry)
    assert PrometheusMetrics().registry is prometheus_client.REGISTRY
    assert PrometheusMetrics().registry is prometheus_client.REGISTRY


def test_a_foreign_metric_of_the_same_name_is_refused_at_construction():
    registry = prometheus_client.CollectorRegistry()
    prometheus_client.Counter("redis_lock_release_total", "someone else's", registry=registry)
    with pytest.raises(ValueError, match="cannot register redis_lock_release_total"):
        PrometheusMetrics(registry=registry)
    # Nothing was left half-registered: a namespace avoids the clash.
    names = set(registry._names_to_collectors)
    assert not [n for n in names if n.startswith("redis_") and "lock_release" not in n]
    PrometheusMetrics(registry=registry, namespace="app")


def test_buckets_can_be_chosen_and_must_agree_on_a_registry(key):
    registry = prometheus_client.CollectorRegistry()
    adapter = PrometheusMetrics(registry=registry,
                                buckets={"redis_command_duration_seconds": [0.001, 1]})
    with vkclient.Client(plain_config(metrics=adapter)) as c:
        c.get(key)
    s = Scrape(registry)
    les = {dict(labels)["le"] for name, labels in s.samples
           if name == "redis_command_duration_seconds_bucket"}
    assert les == {"0.001", "1.0", "+Inf"}
    with pytest.raises(ValueError, match="already has other buckets"):
        PrometheusMetrics(registry=registry, buckets={"redis_command_duration_seconds": [2]})
    PrometheusMetrics(registry=registry)                    # None: takes what is there
    with pytest.raises(ValueError, match="is a counter, not a histogram"):
        PrometheusMetrics(buckets={"redis_lock_release_total": [1]})
    with pytest.raises(ValueError, match="increasing"):
        PrometheusMetrics(buckets={"redis_lock_hold_seconds": [2, 1]})


def test_unknown_metrics_and_labels():
    """A metric of a newer core is made on first sight; a label the core
    leaves out is "", one it adds later is dropped."""
    registry = prometheus_client.CollectorRegistry()
    m = PrometheusMetrics(registry=registry)
    m("redis_future_things_total", "counter", 2.0, {"kind": "a"})
    m("redis_future_things_total", "counter", 1.0, {"kind": "a", "extra": "x"})
    m("redis_future_level", "gauge", 4.0, {})
    m("redis_future_wait_seconds", "histogram", 0.0003, {"op": "x"})
    m("redis_pool_waiters", "gauge", 3.0, {"node": "10.0.0.1:7000"})
    s = Scrape(registry)
    assert type_line("redis_future_things_total", "counter") in s.text
    assert s.value("redis_future_things_total", kind="a") == 3
    assert s.value("redis_future_level") == 4
    assert s.value("redis_future_wait_seconds_count", op="x") == 1
    assert s.value("redis_pool_waiters", node="10.0.0.1:7000") == 3


# ---- threads ------------------------------------------------------------------------

def test_concurrent_commands_from_threads(key):
    registry = prometheus_client.CollectorRegistry()
    recorder, cfg = client_with(registry, options=vkclient.ConnectionOptions(pool_size=4))
    threads, rounds = 8, 150
    errors = []
    done = threading.Event()
    scrapes = [0]

    def work(c, i):
        try:
            for j in range(rounds):
                c.set("%s:%d" % (key, i), j)
                c.get("%s:%d" % (key, i))
        except Exception as err:  # checked below
            errors.append(err)

    def scrape_meanwhile():
        while not done.is_set():
            Scrape(registry)
            scrapes[0] += 1

    with vkclient.Client(cfg) as c:
        scraper = threading.Thread(target=scrape_meanwhile)
        scraper.start()
        workers = [threading.Thread(target=work, args=(c, i)) for i in range(threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        done.set()
        scraper.join()
        c.delete(*["%s:%d" % (key, i) for i in range(threads)])
        s = Scrape(registry, [recorder])
    assert errors == []
    assert scrapes[0] >= 1
    h = "redis_command_duration_seconds"
    assert s.value(h + "_count", command="set") == threads * rounds
    assert s.value(h + "_count", command="get") == threads * rounds
    assert s.value(h + "_bucket", command="get", le="+Inf") == threads * rounds
    assert s.value("redis_pool_connections", state="in_use", node="") == 0
    assert s.value("redis_pool_waiters", node="") == 0
    assert 1 <= s.value("redis_pool_connections", state="idle", node="") <= 4
    s.check()


# ---- pool gauges read when scraped -------------------------------------------------------

class CountingMetrics(PrometheusMetrics):
    """The adapter itself as the sink (so the client attaches to it and
    stops reporting pool gauges at each change), counting reports by name."""

    __slots__ = ("counts",)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.counts = {}

    def __call__(self, name, kind, value, labels):
        self.counts[name] = self.counts.get(name, 0) + 1
        super().__call__(name, kind, value, labels)


def test_pool_gauges_are_read_when_scraped(key):
    registry = prometheus_client.CollectorRegistry()
    metrics = CountingMetrics(registry=registry)
    with vkclient.Client(plain_config(metrics=metrics)) as c:
        for i in range(100):
            c.set(key, i)
        # A command costs the sink one call, its latency: the pool's
        # gauges wait for the scrape.
        assert metrics.counts.get("redis_pool_connections", 0) == 0
        assert metrics.counts["redis_command_duration_seconds"] == 100
        s = Scrape(registry)
        assert s.value("redis_pool_connections", state="idle", node="") >= 1
        assert s.value("redis_pool_connections", state="in_use", node="") == 0
        assert s.value("redis_pool_waiters", node="") == 0
        # A connection held by a blocking command is in use while scraped.
        waiter = threading.Thread(target=c.execute, args=("BLPOP", key + ":none", "1"))
        waiter.start()
        wait_until(lambda: Scrape(registry).value(
            "redis_pool_connections", state="in_use", node="") == 1)
        waiter.join()
        assert Scrape(registry).value("redis_pool_connections", state="in_use", node="") == 0
    closed = Scrape(registry)
    assert closed.value("redis_pool_connections", state="idle", node="") == 0
    assert closed.value("redis_pool_connections", state="in_use", node="") == 0


# ---- Cluster: per-node gauges and slot map refreshes ---------------------------------

@pytest.fixture(scope="module")
def cluster_addresses():
    if os.environ.get("VK_TEST_CLUSTER_ADDRS"):
        yield os.environ["VK_TEST_CLUSTER_ADDRS"].split(",")
        return
    with topologies.Cluster(Env.server, masters=3, replicas=0) as started:
        yield started.masters


def test_cluster_node_labels_and_slot_refreshes(cluster_addresses):
    registry = prometheus_client.CollectorRegistry()
    recorder = Recorder(PrometheusMetrics(registry=registry))
    cfg = vkclient.Config(cluster=vkclient.Cluster(cluster_addresses), metrics=recorder)
    keys = ["vkpy:prom:%d" % i for i in range(30)]          # spread over the masters
    with vkclient.Client(cfg) as c:
        for k in keys:
            c.set(k, "v")
        for k in keys:
            c.delete(k)
        s = Scrape(registry, [recorder])
    assert s.value("redis_cluster_slot_refreshes_total") >= 1
    assert s.value("redis_command_duration_seconds_count", command="set") == len(keys)
    nodes = {dict(labels)["node"] for name, labels in s.samples
             if name == "redis_pool_connections"}
    assert len(nodes) >= 2 and "" not in nodes
    for node in nodes:
        assert s.value("redis_pool_connections", state="in_use", node=node) == 0
    s.check()


# ---- importing ------------------------------------------------------------------------

def run_python(program):
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60)


def test_vkclient_imports_without_prometheus_client():
    out = run_python(
        "import sys\n"
        "sys.modules['prometheus_client'] = None   # as if not installed\n"
        "import vkclient\n"
        "print(vkclient.__version__)\n"
        "try:\n"
        "    import vkclient.prometheus\n"
        "except ImportError as err:\n"
        "    print('ImportError', err.name, '|', err)\n")
    assert out.returncode == 0, out.stderr
    version, error = out.stdout.splitlines()
    assert version == vkclient.__version__
    assert error.startswith("ImportError prometheus_client | ")
    assert "python3-prometheus-client" in error
    # And vkclient alone never imports it.
    out = run_python("import sys, vkclient\nprint('prometheus_client' in sys.modules)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
