#!/usr/bin/env python3
"""The driver of the vkclient.prometheus test in nginx (run_metrics.sh
starts nginx and runs this): runs a workload in both workers through
metrics_app.lua's handlers (vkclient.ngx commands, server errors and
with_lock calls; the blocking client's commands), scrapes /metrics and
checks the text against what it did: types, help texts and labels of the
Python adapter, exact counts, cumulative buckets, gauges combined over the
workers, label escaping, a full dict; and that prometheus_client's parser
reads it.

Debian's /usr/bin/python3 with python3-prometheus-client.
Environment: NGX_URL (http://127.0.0.1:port), NGX_ERROR_LOG.
"""

import importlib.util
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

RUN = uuid.uuid4().hex[:8]
FAILURES = []

# The Python adapter (bindings/python/vkclient/prometheus.py), loaded from
# its file (it needs prometheus_client only, not the binding): METRICS is
# name -> (type, label names, help), and its buckets.
_ADAPTER_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                             "bindings", "python", "vkclient", "prometheus.py")
_spec = importlib.util.spec_from_file_location("vkclient_prometheus_adapter", _ADAPTER_FILE)
adapter = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(adapter)
METRICS = adapter.METRICS


class Reply:
    """One handler's answer: HTTP status, "ok"/"FAIL", key=value fields."""

    def __init__(self, status, body):
        self.status = status
        self.body = body
        lines = body.splitlines()
        self.ok = status == 200 and bool(lines) and lines[0] == "ok"
        self.fields = dict(line.split("=", 1) for line in lines[1:] if "=" in line)

    def __getitem__(self, key):
        return self.fields[key]


def fetch(path, params=None):
    url = os.environ["NGX_URL"] + path
    if params is not None:
        url += "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode("utf-8")
    except urllib.error.HTTPError as err:
        return err.code, "", err.read().decode("utf-8", "replace")


def request(path, **params):
    params.setdefault("run", RUN)
    status, _, body = fetch(path, params)
    return Reply(status, body)


def check(cond, what, detail=""):
    if cond:
        print("  ok   " + what)
        return True
    FAILURES.append(what + (": " + detail if detail else ""))
    print("  FAIL %s%s" % (what, (": " + detail) if detail else ""))
    return False


def expect_ok(reply, what):
    return check(reply.ok, what, "HTTP %d\n%s" % (reply.status, reply.body.rstrip()))


def section(title):
    print("-- " + title, flush=True)


# ---------------------------------------------------------------------------
# The exposition text, read line by line (the parser's view is checked too)
# ---------------------------------------------------------------------------

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def unescape(value):
    return re.sub(r'\\(.)', lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


def parse_labels(text):
    labels, pos = [], 0
    while pos < len(text):
        m = LABEL.match(text, pos)
        if m is None:
            raise ValueError("bad label text %r" % text)
        labels.append((m.group(1), unescape(m.group(2))))
        pos = m.end()
    return labels


class Scrape:
    """/metrics: its HELP and TYPE lines and samples, in order."""

    def __init__(self, path="/metrics"):
        status, self.content_type, self.text = fetch(path)
        if status != 200:
            raise RuntimeError("%s: HTTP %d" % (path, status))
        self.help, self.type, self.samples = {}, {}, []
        for line in self.text.splitlines():
            if line.startswith("# HELP "):
                name, _, text = line[7:].partition(" ")
                self.help[name] = text
            elif line.startswith("# TYPE "):
                name, _, kind = line[7:].partition(" ")
                self.type[name] = kind
            elif line:
                m = SAMPLE.match(line)
                if m is None:
                    raise ValueError("bad sample line %r" % line)
                self.samples.append((m.group(1), parse_labels(m.group(2) or ""),
                                     float(m.group(3))))

    def value(self, name, **labels):
        for sname, slabels, value in self.samples:
            if sname == name and dict(slabels) == labels:
                return value
        return None

    def series(self, name):
        return [(labels, value) for sname, labels, value in self.samples if sname == name]


def wait_for(what, want, get, timeout=5.0):
    """Scrapes until get(scrape) == want (events may reach the sink a
    moment after the request answered), then checks it is exactly that."""
    deadline = time.monotonic() + timeout
    while True:
        scrape = Scrape()
        got = get(scrape)
        if got == want or time.monotonic() > deadline:
            return check(got == want, what, "got %r, want %r" % (got, want)), scrape
        time.sleep(0.1)


def both_workers(path, attempts=40, **params):
    """Sends path (4 at a time) until both workers (by PID) answered;
    every answer."""
    seen, replies = set(), []
    for _ in range(attempts):
        with ThreadPoolExecutor(4) as pool:
            for reply in pool.map(lambda _: request(path, **params), range(4)):
                if not reply.ok:
                    expect_ok(reply, path)
                else:
                    seen.add(reply["worker"])
                    replies.append(reply)
        if len(seen) >= 2:
            break
    check(len(seen) == 2, "%s answered from both workers" % path, "workers %s" % sorted(seen))
    return replies


# ---------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------

def check_histogram(scrape, name, bounds, **labels):
    """Buckets in order, cumulative, the configured bounds, +Inf == _count."""
    buckets = [(dict(l), v) for l, v in scrape.series(name + "_bucket")
               if {k: x for k, x in l if k != "le"} == labels]
    les = [b["le"] for b, _ in buckets]
    want_les = [floatToGoString(b) for b in bounds] + ["+Inf"]
    check(les == want_les, "%s%s buckets are the adapter's" % (name, labels),
          "got %s" % les)
    values = [v for _, v in buckets]
    check(all(a <= b for a, b in zip(values, values[1:])),
          "%s%s buckets are cumulative" % (name, labels), "got %s" % values)
    count = scrape.value(name + "_count", **labels)
    check(bool(values) and values[-1] == count, "%s%s +Inf bucket == _count" % (name, labels),
          "+Inf %s, count %s" % (values[-1] if values else None, count))
    total = scrape.value(name + "_sum", **labels)
    check(total is not None and total >= 0, "%s%s has a _sum" % (name, labels), repr(total))
    return count


def main():
    section("the content type and the families before any workload")
    scrape = Scrape()
    check(scrape.content_type.startswith("text/plain; version=0.0.4"),
          "Content-Type text/plain; version=0.0.4", scrape.content_type)
    for name, (kind, _, documentation) in METRICS.items():
        check(scrape.type.get(name) == kind, "# TYPE %s %s" % (name, kind),
              repr(scrape.type.get(name)))
        check(scrape.help.get(name) == documentation, "# HELP %s is the adapter's" % name,
              repr(scrape.help.get(name)))
    check(scrape.type.get("vkclient_metrics_dropped_total") == "counter",
          "# TYPE vkclient_metrics_dropped_total counter")
    check(scrape.value("vkclient_metrics_dropped_total") == 0,
          "nothing dropped", repr(scrape.value("vkclient_metrics_dropped_total")))

    section("what a vkclient.ngx client reports for a GET")
    probe = request("/t/probe")
    expect_ok(probe, "/t/probe")
    check(probe.fields.get("command_durations") == "true",
          "a vkclient.ngx GET reports redis_command_duration_seconds",
          repr(probe.fields.get("seen")))

    section("the workload: vkclient.ngx in both workers, the blocking client in both")
    rounds, requests = 5, 12
    with ThreadPoolExecutor(4) as pool:
        work = list(pool.map(lambda i: request("/t/work", i=i, n=rounds), range(requests)))
    for reply in work:
        expect_ok(reply, "/t/work")
    ngx_gets = sum(int(r.fields.get("gets", 0)) for r in work)
    with_locks = sum(int(r.fields.get("with_lock", 0)) for r in work)
    errors = sum(int(r.fields.get("errors", 0)) for r in work)
    check(ngx_gets == requests * rounds * 2 and with_locks == requests * rounds
          and errors == requests * rounds,
          "every GET, with_lock and refused INCR done",
          "gets %d, with_lock %d, errors %d" % (ngx_gets, with_locks, errors))
    check(len({r.fields.get("worker") for r in work if r.ok}) == 2,
          "both workers ran the workload",
          "workers %s" % sorted({r.fields.get("worker") for r in work}))
    blocking = both_workers("/t/blocking", n=3)
    blocking_gets = sum(int(r["gets"]) for r in blocking)
    blocking_echoes = sum(int(r["echoes"]) for r in blocking)

    section("counts")
    want_gets = blocking_gets + ngx_gets
    _, scrape = wait_for('redis_command_duration_seconds_count{command="get"}', want_gets,
                         lambda s: s.value("redis_command_duration_seconds_count",
                                           command="get"))
    check_histogram(scrape, "redis_command_duration_seconds",
                    adapter.COMMAND_DURATION_BUCKETS, command="get")
    check(scrape.value("redis_command_duration_seconds_count", command="echo")
          == blocking_echoes,
          'redis_command_duration_seconds_count{command="echo"} == the ECHOs',
          "got %r, want %d" % (scrape.value("redis_command_duration_seconds_count",
                                            command="echo"), blocking_echoes))
    # Per round: the INCR the server refuses, the one in the with_lock
    # function, and the lock's own (its fencing counter): the core
    # times every command it sends, a lock's included.
    incrs = scrape.value("redis_command_duration_seconds_count", command="incr")
    check(incrs == requests * rounds * 3,
          'redis_command_duration_seconds_count{command="incr"}: refused ones and the '
          "lock's fencing counter too",
          "got %r, want %d" % (incrs, requests * rounds * 3))
    _, scrape = wait_for('redis_lock_acquisitions_total{result="acquired"} == with_lock calls',
                         float(with_locks),
                         lambda s: s.value("redis_lock_acquisitions_total", result="acquired"))
    check(scrape.value("redis_lock_release_total", result="released") == with_locks,
          'redis_lock_release_total{result="released"} == with_lock calls',
          repr(scrape.value("redis_lock_release_total", result="released")))
    count = check_histogram(scrape, "redis_lock_hold_seconds", adapter.LOCK_HOLD_BUCKETS)
    check(count == with_locks, "redis_lock_hold_seconds_count == with_lock calls",
          "got %r, want %d" % (count, with_locks))

    section("pool gauges: the blocking clients' pools, summed over the workers")
    # vkclient.ngx reports no pool gauges (its connections are the
    # driver's); each worker's blocking client holds one idle connection.
    check(scrape.value("redis_pool_connections", state="idle", node="") == 2,
          'redis_pool_connections{state="idle",node=""} == 2 (one per worker)',
          repr(scrape.series("redis_pool_connections")))
    check(scrape.value("redis_pool_connections", state="in_use", node="") == 0,
          'redis_pool_connections{state="in_use",node=""} == 0',
          repr(scrape.series("redis_pool_connections")))
    check(scrape.value("redis_pool_waiters", node="") == 0, 'redis_pool_waiters{node=""} == 0',
          repr(scrape.series("redis_pool_waiters")))

    section("labels: the adapter's names, in its order")
    for name, (kind, labelnames, _) in METRICS.items():
        sample_names = {"histogram": [name + "_bucket", name + "_count", name + "_sum"]}.get(
            kind, [name])
        seen, wrong = 0, []
        for sname in sample_names:
            for labels, _ in scrape.series(sname):
                names = [k for k, _ in labels if not (sname.endswith("_bucket") and k == "le")]
                seen += 1
                if names != list(labelnames):
                    wrong.append((sname, names))
        if seen:
            check(not wrong, "%s: %d samples, labels %s" % (name, seen, list(labelnames)),
                  "got %s" % wrong)

    section("gauges reported by each worker: summed, and the IAM expiry's minimum")
    both_workers("/t/report", name="redis_pool_waiters", kind="gauge", worker_value="10",
                 **{"l.node": "10.0.0.1:7000"})
    both_workers("/t/report", name="redis_iam_token_expiry_seconds", kind="gauge",
                 worker_value="100")
    scrape = Scrape()
    check(scrape.value("redis_pool_waiters", node="10.0.0.1:7000") == 30,
          'redis_pool_waiters{node="10.0.0.1:7000"} == 10 + 20 (worker 0 + worker 1)',
          repr(scrape.series("redis_pool_waiters")))
    check(scrape.value("redis_iam_token_expiry_seconds") == 100,
          "redis_iam_token_expiry_seconds == min(100, 200)",
          repr(scrape.series("redis_iam_token_expiry_seconds")))

    section("escaping, labels the table does not name, metrics it does not know")
    odd = 'a\\b"c\nd\u00e9\tz'
    for _ in range(3):
        expect_ok(request("/t/report", name="vk_test_odd_total", kind="counter", value="1",
                          **{"l.path": odd, "l.empty": "", "l.9bad-name": "x"}),
                  "/t/report vk_test_odd_total")
    expect_ok(request("/t/report", name="redis_sentinel_failovers_total", kind="counter",
                      value="1", **{"l.extra": "dropped"}),
              "/t/report redis_sentinel_failovers_total without its label")
    expect_ok(request("/t/report", name="vk_test_gauge", kind="gauge", value="2.5"),
              "/t/report vk_test_gauge")
    expect_ok(request("/t/report", name="vk_test_seconds", kind="histogram", value="0.003",
                      **{"l.op": "x"}), "/t/report vk_test_seconds")
    expect_ok(request("/t/report", name="vk_test_other", kind="summary", value="7"),
              "/t/report vk_test_other (a kind of its own)")
    scrape = Scrape()
    want_line = ('vk_test_odd_total{_9bad_name="x",empty="",path="a\\\\b\\"c\\nd\u00e9\tz"} 3.0')
    check(want_line in scrape.text.splitlines(), "the odd labels escaped: " + want_line,
          "\n".join(l for l in scrape.text.splitlines() if "odd" in l))
    check(scrape.value("vk_test_odd_total", _9bad_name="x", empty="", path=odd) == 3,
          "the odd label value reads back")
    check(scrape.type.get("vk_test_odd_total") == "counter", "an unknown counter: counter")
    check(scrape.help.get("vk_test_odd_total")
          == "vkclient metric vk_test_odd_total (reported by the core).",
          "an unknown metric's help", repr(scrape.help.get("vk_test_odd_total")))
    check(scrape.value("redis_sentinel_failovers_total", master="") == 1,
          'a missing label is "" and an unknown one dropped',
          repr(scrape.series("redis_sentinel_failovers_total")))
    check(scrape.type.get("vk_test_gauge") == "gauge"
          and scrape.value("vk_test_gauge") == 2.5, "an unknown gauge")
    check(scrape.type.get("vk_test_seconds") == "histogram", "an unknown histogram")
    check(check_histogram(scrape, "vk_test_seconds", adapter.COMMAND_DURATION_BUCKETS,
                          op="x") == 1, "an unknown histogram has the command buckets")
    check(scrape.type.get("vk_test_other") == "untyped"
          and scrape.value("vk_test_other") == 7, "a kind of its own: untyped")

    section("prometheus_client's parser reads the text")
    try:
        families = {f.name: f for f in text_string_to_metric_families(scrape.text)}
    except Exception as err:  # the parser's own error says what it refused
        families = {}
        check(False, "the text parses", repr(err))
    for name, (kind, labelnames, _) in METRICS.items():
        fname = name[:-len("_total")] if kind == "counter" and name.endswith("_total") else name
        f = families.get(fname)
        check(f is not None and f.type == kind, "parsed %s: %s" % (fname, kind),
              repr(f and f.type))
    f = families.get("redis_command_duration_seconds")
    gets = [s for s in (f.samples if f else [])
            if s.name == "redis_command_duration_seconds_count" and s.labels == {"command": "get"}]
    check(len(gets) == 1 and gets[0].value == want_gets, "parsed get count", repr(gets))
    f = families.get("vk_test_odd")
    odd_samples = [s for s in (f.samples if f else []) if s.name == "vk_test_odd_total"]
    check(len(odd_samples) == 1 and odd_samples[0].labels.get("path") == odd,
          "the parser unescapes the odd label", repr(odd_samples))

    section("a full dict: nothing evicted, the rest dropped and counted")
    full = request("/t/full")
    expect_ok(full, "/t/full")
    small = Scrape("/metrics/small")
    dropped = small.value("small_vkclient_metrics_dropped_total")
    check(dropped is not None and dropped >= int(full.fields.get("dropped", 0)) > 0,
          "small_vkclient_metrics_dropped_total counts the lost updates",
          "%r vs %r" % (dropped, full.fields.get("dropped")))
    check(small.value("small_redis_lock_acquisitions_total", result="acquired") == 2,
          "a series made before the dict filled keeps counting",
          repr(small.series("small_redis_lock_acquisitions_total")))
    for labels, _ in small.series("small_redis_command_duration_seconds_count"):
        check_histogram(small, "small_redis_command_duration_seconds",
                        adapter.COMMAND_DURATION_BUCKETS, **dict(labels))
        break
    try:
        list(text_string_to_metric_families(small.text))
        check(True, "the full dict's text parses")
    except Exception as err:
        check(False, "the full dict's text parses", repr(err))
    with open(os.environ["NGX_ERROR_LOG"], encoding="utf-8", errors="replace") as f:
        warnings = [l for l in f if "vkclient.prometheus: metric updates are being lost" in l]
    check(len(warnings) == 1, "the full dict logged once", "%d lines" % len(warnings))

    section("what new() refuses")
    expect_ok(request("/t/misuse"), "/t/misuse")
    return report()


def example():
    """examples/lua/openresty_prometheus.conf: locked increments from both
    workers, then its /metrics."""
    section("the example: /counter from both workers, then /metrics")
    n = 20
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: fetch("/counter"), range(n)))
    values = sorted(int(body) for status, _, body in replies if status == 200)
    check(values == list(range(values[0], values[0] + n)) if values else False,
          "%d locked increments, each seen once" % n, repr(values))
    scrape = Scrape()
    check(scrape.content_type.startswith("text/plain; version=0.0.4"),
          "Content-Type text/plain; version=0.0.4", scrape.content_type)
    for name, (kind, _, documentation) in METRICS.items():
        check(scrape.type.get(name) == kind and scrape.help.get(name) == documentation,
              "# TYPE and # HELP of %s" % name)
    check(scrape.value("redis_lock_acquisitions_total", result="acquired") == n,
          'redis_lock_acquisitions_total{result="acquired"} == the /counter requests',
          repr(scrape.series("redis_lock_acquisitions_total")))
    check(check_histogram(scrape, "redis_lock_hold_seconds", adapter.LOCK_HOLD_BUCKETS) == n,
          "redis_lock_hold_seconds_count == the /counter requests")
    try:
        names = {f.name for f in text_string_to_metric_families(scrape.text)}
        check("redis_lock_acquisitions" in names, "the text parses")
    except Exception as err:
        check(False, "the text parses", repr(err))
    return report()


def report():
    if FAILURES:
        print("%d check(s) failed:" % len(FAILURES))
        for f in FAILURES:
            print("  " + f)
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(example() if sys.argv[1:] == ["example"] else main())
