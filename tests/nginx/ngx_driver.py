#!/usr/bin/env python3
"""The driver of the vkclient.ngx test in nginx (run_ngx.sh starts nginx
and runs this): sends the requests to ngx_app.lua's handlers, many at a
time, and checks what only the outside can see: both workers serving,
timings next to BLPOP, a lock contended by both workers and by a Python
process using the blocking binding, the servers' own view of keys and
connections.

Standard library only (urllib, threads) with Debian's /usr/bin/python3,
except the lock holder (`ngx_driver.py holder ...`), which imports the
Python binding from PYTHONPATH ($VK_BUILD_DIR/bindings/python).

Environment: NGX_URL (http://127.0.0.1:port), the harness's VK_TEST_*.
"""

import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

RUN = uuid.uuid4().hex[:8]
# How long a closed client's connections may stay on the server.
CLOSE_WAIT = int(os.environ.get("NGX_CLOSE_WAIT", "3"))
FAILURES = []

INIT_WORKER_TEXT = ("invalid argument: vkclient.ngx cannot wait in the init_worker phase: "
                    "call it from rewrite, access, content or ngx.timer handlers")
LOG_PHASE_TEXT = ("invalid argument: vkclient.ngx cannot wait in the log phase: "
                  "call it from rewrite, access, content or ngx.timer handlers")


# ---------------------------------------------------------------------------
# Requests and checks
# ---------------------------------------------------------------------------

class Reply:
    """One handler's answer: HTTP status, "ok"/"FAIL", key=value fields."""

    def __init__(self, status, body, elapsed):
        self.status = status
        self.body = body
        self.elapsed = elapsed
        lines = body.splitlines()
        self.ok = status == 200 and bool(lines) and lines[0] == "ok"
        self.fields = {}
        for line in lines[1:]:
            if "=" in line:
                key, value = line.split("=", 1)
                self.fields.setdefault(key, value)
        self.worker = self.fields.get("worker")
        if self.worker is None and lines and lines[0].startswith("FAIL worker="):
            self.worker = lines[0].split("=", 1)[1]

    def __getitem__(self, key):
        return self.fields[key]

    def get(self, key, default=None):
        return self.fields.get(key, default)


def request(path, timeout=60, **params):
    params.setdefault("run", RUN)
    url = "%s%s?%s" % (os.environ["NGX_URL"], path, urllib.parse.urlencode(params))
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read()
    except OSError as err:
        status, body = 0, ("request failed: %s" % err).encode()
    return Reply(status, body.decode("utf-8", "replace"), time.monotonic() - t0)


def check(cond, what, detail=""):
    if cond:
        return True
    FAILURES.append(what + (": " + detail if detail else ""))
    print("  FAIL %s%s" % (what, (": " + detail) if detail else ""))
    return False


def expect_ok(reply, what):
    """The handler's own checks passed."""
    return check(reply.ok, what, "HTTP %d\n%s" % (reply.status, reply.body.rstrip()))


def section(title):
    print("-- " + title, flush=True)


def both_workers(path, attempts=40, **params):
    """The handler's answer from each of the two workers (by PID)."""
    seen = {}
    for _ in range(attempts):
        with ThreadPoolExecutor(4) as pool:
            for reply in pool.map(lambda _: request(path, **params), range(4)):
                if reply.worker is not None and reply.worker not in seen:
                    seen[reply.worker] = reply
        if len(seen) >= 2:
            break
    check(len(seen) == 2, "%s answered from both workers" % path, "workers %s" % sorted(seen))
    return list(seen.values())


def harness():
    sys.path.insert(0, os.path.dirname(os.environ["VK_TEST_HARNESS"]))
    import topologies
    return topologies


# ---------------------------------------------------------------------------
# The lock holder outside nginx (python3 ngx_driver.py holder ...)
# ---------------------------------------------------------------------------

def holder_main(addr, lock_key, counter_key, rounds):
    """Takes the lock `rounds` times and increments the counter under it by
    GET, sleep 5 ms, SET; prints "pair <token> <seen>" for each."""
    import vkclient
    with vkclient.Client(vkclient.Config(standalone=vkclient.Standalone(addr))) as client:
        locks = vkclient.LockManager(client)
        options = vkclient.LockOptions(expiry=10, tries=1000, retry_delay=0.02)
        client.get(counter_key)
        print("ready", flush=True)
        sys.stdin.readline()   # "go"
        for _ in range(rounds):
            with locks.lock(lock_key, options=options) as handle:
                seen = int(client.get(counter_key) or 0)
                time.sleep(0.005)
                client.set(counter_key, seen + 1)
                print("pair %d %d" % (handle.fencing_token, seen), flush=True)
        locks.close()
    print("done", flush=True)


class Holder:
    """The holder process; start() returns once it is connected, go() lets
    it run, finish() waits and returns its (token, seen) pairs."""

    def __init__(self, lock, counter, rounds):
        prefix = "ngxt:%s:" % RUN
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "holder", os.environ["VK_TEST_ADDR"],
             prefix + lock, prefix + counter, str(rounds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            raise RuntimeError("the lock holder did not start: %r %s" % (line, self.proc.stderr.read()))

    def go(self):
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self, timeout=120):
        out, err = self.proc.communicate(timeout=timeout)
        pairs = [(int(t), int(s)) for _, t, s in (line.split() for line in out.splitlines()
                                                    if line.startswith("pair "))]
        check(self.proc.returncode == 0 and "done" in out.split(),
              "the Python lock holder finished", "exit %s\n%s" % (self.proc.returncode, err))
        return pairs


def check_lock_order(holders, expected_total, counter):
    """holders: {name: [(token, seen), ...] in that holder's order}. The
    counter is exact, every value was seen once (no lost or doubled
    increment), tokens rise with the counter across every holder, and rise
    within each holder."""
    check(counter == str(expected_total), "the counter is exact",
          "expected %d, got %s" % (expected_total, counter))
    everything = sorted((seen, token, name) for name, pairs in holders.items()
                        for token, seen in pairs)
    seen_values = [s for s, _, _ in everything]
    check(seen_values == list(range(expected_total)), "each increment saw the previous one",
          "seen values (sorted) %s" % seen_values[:10] + "...")
    tokens = [t for _, t, _ in everything]
    regressions = [(everything[i - 1], everything[i]) for i in range(1, len(everything))
                   if tokens[i] <= tokens[i - 1]]
    check(not regressions, "fencing tokens rise with the counter across all holders",
          "%d regressions, first %s" % (len(regressions), regressions[:3]))
    for name, pairs in holders.items():
        ordered = [t for t, _ in sorted(pairs, key=lambda p: p[1])]
        check(all(b > a for a, b in zip(ordered, ordered[1:])),
              "fencing tokens strictly increasing for holder %s" % name)


# ---------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------

def check_api():
    section("the surface of require \"vkclient\", lock handles and managers, parity of results")
    expect_ok(request("/t/surface"), "/t/surface")
    expect_ok(request("/t/lock_api"), "/t/lock_api")
    reply = request("/t/parity")
    expect_ok(reply, "/t/parity (the same cases through require \"vkclient\")")
    cases = [k for k in reply.fields if k.startswith("case ")]
    differ = [line for line in reply.body.splitlines() if line.startswith("parity ")]
    print("  %d cases through both modules, %d differ" % (len(cases), len(differ)))
    for key, value in reply.fields.items():
        if key.startswith("raise_text_differs"):
            print("  note: misuse message differs (%s): %s" % (key.split(" ", 1)[1], value))


def check_concurrent_commands():
    section("(1) 200 requests, 20 at a time: own keys, binary values, errors, vk.null, pipelines, status")
    t0 = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(lambda i: request("/t/basic", id=i), range(200)))
    took = time.monotonic() - t0
    bad = [r for r in replies if not r.ok]
    for r in bad[:3]:
        expect_ok(r, "/t/basic")
    check(not bad, "every /t/basic request passed its checks", "%d of 200 failed" % len(bad))
    workers = {}
    for r in replies:
        workers[r.worker] = workers.get(r.worker, 0) + 1
    print("  200 requests in %.2f s; per worker: %s; status keys: %s"
          % (took, workers, replies[0].get("status_keys")))
    check(len(workers) == 2 and min(workers.values()) >= 20, "both workers served /t/basic",
          str(workers))
    values = {r.get("value") for r in replies if r.ok}
    check(len(values) == len([r for r in replies if r.ok]), "each request got its own value back")


def check_blpop_next_to_gets():
    section("(2) 4 request loops of BLPOP k 0.2 (timeouts) while other requests GET")
    key, value = "slow:get", "v-" + RUN
    expect_ok(request("/t/set", key=key, value=value), "/t/set")
    blpops, gets = [], []
    guard = threading.Lock()
    stop = threading.Event()

    def blpop_loop(n):
        for i in range(10):
            r = request("/t/blpop", key="%d:%d" % (n, i))
            with guard:
                blpops.append((time.monotonic(), r))

    def get_loop():
        while not stop.is_set():
            t0 = time.monotonic()
            r = request("/t/get", key=key, want=value)
            with guard:
                gets.append((t0, time.monotonic(), r))

    get_threads = [threading.Thread(target=get_loop) for _ in range(2)]
    blpop_threads = [threading.Thread(target=blpop_loop, args=(n,)) for n in range(4)]
    for t in get_threads:
        t.start()
    time.sleep(0.1)
    window_start = time.monotonic()
    for t in blpop_threads:
        t.start()
    for t in blpop_threads:
        t.join()
    window_end = time.monotonic()
    stop.set()
    for t in get_threads:
        t.join()

    bad = [r for _, r in blpops if not r.ok]
    for r in bad[:3]:
        expect_ok(r, "/t/blpop")
    check(len(blpops) == 40 and not bad, "40 BLPOP k 0.2 timed out with vk.null",
          "%d answers, %d failed" % (len(blpops), len(bad)))
    elapsed = [float(r["elapsed"]) for _, r in blpops if r.ok]
    if elapsed:
        print("  BLPOP k 0.2 took %.3f..%.3f s (in the handler); window %.2f s"
              % (min(elapsed), max(elapsed), window_end - window_start))
        check(min(elapsed) >= 0.19 and max(elapsed) < 1.0, "each BLPOP waited for its 0.2 s timeout",
              "%.3f..%.3f s" % (min(elapsed), max(elapsed)))

    in_window = [(t0, t1, r) for t0, t1, r in gets if t0 >= window_start and t1 <= window_end]
    bad = [r for _, _, r in gets if not r.ok]
    for r in bad[:3]:
        expect_ok(r, "/t/get")
    check(not bad, "every GET returned the value", "%d failed" % len(bad))
    # The bound: a GET queued behind a BLPOP on its connection would wait
    # for the rest of that BLPOP (up to 0.2 s; each BLPOP loop keeps one in
    # flight all the time, so most GETs would meet one). Alone, a GET's
    # call takes ~1 ms (at most ~10 ms seen with two CPU hogs and a second
    # run of this test on 2 cores); 0.15 s leaves a loaded machine over 10
    # times that, and is still below the 0.2 s one BLPOP would add. Every
    # GET's call, timed in its handler (ngx.update_time), must stay below.
    # Over HTTP the time also holds the TCP connect and this driver's
    # Python threads, which a loaded machine stalls whatever nginx does
    # (up to ~0.11 s seen under the load above): there, 99 % of the GETs
    # must stay below 0.15 s.
    slow_inside = [r for _, _, r in in_window if r.ok and float(r["elapsed"]) >= 0.15]
    inside = sorted(float(r["elapsed"]) for _, _, r in in_window if r.ok)
    http = sorted(t1 - t0 for t0, t1, _ in in_window)
    if inside:
        print("  %d GETs inside the BLPOP window: in the handler max %.3f s (median %.3f), "
              "over HTTP max %.3f s (median %.3f, 99th percentile %.3f)"
              % (len(in_window), inside[-1], inside[len(inside) // 2], http[-1],
                 http[len(http) // 2], http[int(len(http) * 0.99)]))
    check(not slow_inside, "each GET's call returned in < 0.15 s (in its handler) during BLPOPs",
          "%d slower: %s" % (len(slow_inside), [r["elapsed"] for r in slow_inside[:5]]))
    check(http and http[int(len(http) * 0.99)] < 0.15,
          "99 %% of the GETs answered over HTTP in < 0.15 s during BLPOPs",
          "slowest: %s" % ["%.3f" % x for x in http[-5:]])
    # Non-blocking, 2 loops do hundreds of GETs in the ~2 s window (~1000
    # under the load above); behind the BLPOPs they could do about 2 per
    # 0.2 s, 20 in all. 60 separates the two with room for a slow machine.
    check(len(in_window) >= 60, "at least 60 GETs completed during the BLPOP window",
          "%d" % len(in_window))

    # Same workers: GETs a worker served while that worker had a BLPOP in
    # flight (server-side times): a worker that a BLPOP blocked could serve
    # none of them.
    spans = {}
    for _, r in blpops:
        if r.ok:
            spans.setdefault(r.worker, []).append((float(r["start"]), float(r["end"])))
    overlapped = {}
    for _, _, r in in_window:
        if not r.ok:
            continue
        start, end = float(r["start"]), float(r["end"])
        if any(a <= start and end <= b for a, b in spans.get(r.worker, [])):
            overlapped[r.worker] = overlapped.get(r.worker, 0) + 1
    print("  BLPOPs per worker %s; GETs served by a worker during its own BLPOP %s"
          % ({w: len(s) for w, s in spans.items()}, overlapped))
    for worker in spans:
        check(overlapped.get(worker, 0) >= 10,
              "worker %s served GETs while its own BLPOPs waited" % worker,
              "%d" % overlapped.get(worker, 0))


def check_locks_from_requests():
    section("(3a) 100 concurrent requests over 2 workers and a Python process: one lock, "
            "yielding increments")
    holder = Holder("lock:http", "counter:http", 30)
    holder.go()
    t0 = time.monotonic()
    with ThreadPoolExecutor(100) as pool:
        replies = list(pool.map(lambda _: request("/t/locked_incr", lock="lock:http",
                                                  counter="counter:http"), range(100)))
    pairs = holder.finish()
    took = time.monotonic() - t0
    bad = [r for r in replies if not r.ok]
    for r in bad[:3]:
        expect_ok(r, "/t/locked_incr")
    check(not bad, "every locked increment succeeded", "%d of 100 failed" % len(bad))
    per_worker = {}
    for r in replies:
        if r.ok:
            per_worker.setdefault(r.worker, []).append((int(r["token"]), int(r["seen"])))
    print("  %.2f s; increments per worker %s, by Python %d"
          % (took, {w: len(p) for w, p in per_worker.items()}, len(pairs)))
    check(len(per_worker) == 2 and min(len(p) for p in per_worker.values()) >= 20,
          "both workers contended", str({w: len(p) for w, p in per_worker.items()}))
    holders = dict(("nginx worker " + w, p) for w, p in per_worker.items())
    holders["python"] = pairs
    counter = request("/t/counter", key="counter:http").get("counter")
    check_lock_order(holders, 100 + 30, counter)
    seen_python = sorted(s for _, s in pairs)
    seen_nginx = sorted(s for p in per_worker.values() for _, s in p)
    check(seen_python and seen_nginx and seen_python[0] < seen_nginx[-1]
          and seen_nginx[0] < seen_python[-1],
          "the Python holder's increments interleave with nginx's")


def check_locks_from_timers():
    section("(3b) each worker runs 50 light threads in an ngx.timer at once, and a Python "
            "process: one lock")
    holder = Holder("lock:burst", "counter:burst", 20)
    job = "job" + RUN
    holder.go()
    t0 = time.monotonic()
    expect_ok(request("/t/burst_arm", job=job, n=50, lock="lock:burst", counter="counter:burst"),
              "/t/burst_arm")
    result = None
    while time.monotonic() - t0 < 90:
        result = request("/t/burst_result", job=job)
        if result.status != 202:
            break
        time.sleep(0.1)
    pairs = holder.finish()
    took = time.monotonic() - t0
    if not check(result is not None and result.status == 200, "both workers ran the burst",
                 result.body if result else "no answer"):
        return
    holders, failures = {}, []
    worker = None
    for line in result.body.splitlines():
        if line.startswith("pid="):
            worker = line[4:]
        elif line.startswith("pairs="):
            holders["nginx worker " + worker] = [tuple(int(x) for x in p.split(":"))
                                                 for p in line[6:].split(",") if p]
        elif line.startswith("failures=") and line != "failures=":
            failures.append("worker %s: %s" % (worker, line[9:]))
    check(not failures, "every timer thread's locked increment succeeded", "; ".join(failures))
    print("  %.2f s; increments per worker %s, by Python %d"
          % (took, {w: len(p) for w, p in holders.items()}, len(pairs)))
    check(len(holders) == 2 and all(len(p) == 50 for p in holders.values()),
          "2 workers x 50 increments", str({w: len(p) for w, p in holders.items()}))
    holders["python"] = pairs
    counter = request("/t/counter", key="counter:burst").get("counter")
    check_lock_order(holders, 100 + 20, counter)


def check_renewal_and_sinks():
    section("(3c) auto-renewal on the worker's timers; logger and metrics functions")
    expect_ok(request("/t/renewal"), "/t/renewal (expiry 1 s, auto_renew, held 2.5 s)")
    expect_ok(request("/t/sinks"), "/t/sinks (the lock's metric reaches the metrics function)")
    print("  renewal and sinks: %s" % ("ok" if not FAILURES else "see above"))


def check_phases():
    section("(4) calls from init_worker and from the log phase: nil, err")
    request("/log_phase")
    time.sleep(0.2)
    for reply in both_workers("/t/init_error"):
        if not expect_ok(reply, "/t/init_error"):
            continue
        for name in ("call", "pipeline", "try_lock", "acquire"):
            check(reply.get(name + "_value") == "nil", "init_worker %s: nil" % name,
                  reply.get(name + "_value"))
            check(reply.get(name + "_code") == "INVALID_ARGUMENT",
                  "init_worker %s: code INVALID_ARGUMENT" % name, reply.get(name + "_code"))
            check(reply.get(name + "_text") == INIT_WORKER_TEXT,
                  "init_worker %s: the text naming the phase" % name, repr(reply.get(name + "_text")))
        check(reply.get("status_connected") == "false", "status() works in init_worker (no I/O)",
              reply.get("status_connected"))
    reply = request("/t/init_error")
    print("  init_worker: %s: %s" % (reply.get("call_code"), reply.get("call_text")))
    print("  log phase:   %s: %s" % (reply.get("log_code"), reply.get("log_text")))
    check(reply.get("log_code") == "INVALID_ARGUMENT", "log phase: code INVALID_ARGUMENT",
          reply.get("log_code"))
    check(reply.get("log_text") == LOG_PHASE_TEXT, "log phase: the text naming the phase",
          repr(reply.get("log_text")))


def check_closed():
    section("(5) a closed client: nil, err; what was in flight is cancelled; its sockets go")
    topologies = harness()
    addr = os.environ["VK_TEST_ADDR"]
    reply = request("/t/closed")
    expect_ok(reply, "/t/closed")
    print("  in flight at close: %s" % reply.get("in_flight_text"))
    print("  handle:unlock() after close: %s" % reply.get("unlock_after_close"))
    print("  vk.lock_manager(closed client): %s" % reply.get("lock_manager_of_closed"))
    client_id = reply.get("client_id")
    if client_id is None:
        return

    def connections():
        listing = topologies.cli(addr, "CLIENT", "LIST")
        if isinstance(listing, bytes):
            listing = listing.decode(errors="replace")
        own = [line for line in listing.splitlines() if line.startswith("id=%s " % client_id)]
        blocked = [line for line in listing.splitlines() if " cmd=blpop" in line and "flags=b" in line]
        return own, blocked

    t0 = time.monotonic()
    own, blocked = connections()
    while (own or blocked) and time.monotonic() - t0 < CLOSE_WAIT:
        time.sleep(0.1)
        own, blocked = connections()
    gone_after = time.monotonic() - t0
    check(not own, "the closed client's connection left the server within %d s" % CLOSE_WAIT,
          "\n".join(own))
    check(not blocked, "the closed client's BLPOP connection left the server within %d s" % CLOSE_WAIT,
          "\n".join(blocked))
    if not own and not blocked:
        print("  both connections gone from CLIENT LIST %.1f s after the answer" % gone_after)
    check(reply.get("lock_manager_of_closed", "").startswith("err{NIL_CLIENT"),
          "vk.lock_manager(closed client) answers nil, err NIL_CLIENT as require \"vkclient\" does",
          reply.get("lock_manager_of_closed"))


def check_tls():
    section("(6) TLS: the TLS-only server through lua_ssl_trusted_certificate; CAs in the config refused")
    for which, what in (("refused", "tls.ca_file / ca_cert_base64 refused with INVALID_CONFIG"),
                        ("name", "tls = { use_system_ca = true, server_name = \"localhost\" }"),
                        ("url", "from_url(\"rediss://...\")"),
                        ("address", "tls = { use_system_ca = true } to the IP address %s refused "
                         "(nginx verifies DNS names only)" % os.environ["VK_TEST_TLS_ADDR"])):
        replies = both_workers("/t/tls", which=which)
        passed = all(expect_ok(r, "/t/tls %s" % what) for r in replies)
        print("  %s: %s" % (what, "ok" if passed else "FAILED"))
        if which == "refused" and replies:
            print("    %s" % replies[0].get("ca_file_error"))
    reply = request("/t/wrong_ca")
    expect_ok(reply, "/t/wrong_ca (a location trusting an unrelated CA)")
    print("  with an unrelated CA: %s (%s s)" % (reply.get("error"), reply.get("elapsed")))


def check_topologies():
    if not os.environ.get("VK_TEST_SENTINEL_ADDRS") or not os.environ.get("VK_TEST_CLUSTER_ADDRS"):
        section("(7) Sentinel and Cluster: not run (run the harness with --topologies)")
        return
    section("(7) Sentinel and Cluster: SET/GET across keys, pipelines, a lock in the Cluster")
    topologies = harness()
    sentinels = os.environ["VK_TEST_SENTINEL_ADDRS"].split(",")
    name = os.environ["VK_TEST_SENTINEL_MASTER"]
    host, port = topologies.cli(sentinels[0], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", name)
    master = "%s:%s" % (host.decode() if isinstance(host, bytes) else host,
                        port.decode() if isinstance(port, bytes) else port)
    for reply in both_workers("/t/sentinel"):
        if not expect_ok(reply, "/t/sentinel"):
            continue
        check(reply.get("master_address") == master, "status().master_address is the named master",
              "%s vs %s" % (reply.get("master_address"), master))
        keys = reply["keys"].split(",")
        on_master = [topologies.cli(master, "GET", k) for k in keys]
        check(on_master == ["v%d" % i for i in range(1, len(keys) + 1)],
              "the Sentinel keys are on the master", str(on_master[:3]))
    print("  Sentinel master %s" % master)

    cluster = os.environ["VK_TEST_CLUSTER_ADDRS"].split(",")
    slots = [(r[0], r[1], "%s:%d" % (r[2][0].decode() if isinstance(r[2][0], bytes) else r[2][0],
                                     r[2][1]))
             for r in topologies.cli(cluster[0], "CLUSTER", "SLOTS")]

    def owner(key):
        slot = topologies.key_slot(key)
        return next(a for first, last, a in slots if first <= slot <= last)

    for reply in both_workers("/t/cluster"):
        if not expect_ok(reply, "/t/cluster"):
            continue
        keys = reply["keys"].split(",")
        owners = {owner(k) for k in keys}
        misplaced = [k for i, k in enumerate(keys, 1)
                     if topologies.cli(owner(k), "GET", k) != "v%d" % i]
        check(not misplaced, "each Cluster key is on its slot's owner", str(misplaced[:3]))
        check(len(owners) == 3, "the keys spread over the 3 masters", str(owners))
    print("  Cluster masters %s" % ",".join(cluster))


def main():
    started = time.monotonic()
    print("vkclient.ngx in nginx (2 workers) against %s, run %s" % (os.environ.get("VK_TEST_SERVER"), RUN))
    for step in (check_api, check_concurrent_commands, check_blpop_next_to_gets,
                 check_locks_from_requests, check_locks_from_timers, check_renewal_and_sinks,
                 check_phases, check_closed,
                 check_tls, check_topologies):
        try:
            step()
        except Exception as err:  # reported as a failure of that step
            import traceback
            traceback.print_exc()
            check(False, "%s raised" % step.__name__, repr(err))
    print("-- %.1f s, %d failed check(s)" % (time.monotonic() - started, len(FAILURES)))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "holder":
        holder_main(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        sys.exit(0)
    sys.exit(main())
