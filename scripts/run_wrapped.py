#!/usr/bin/env python3
"""Runs every test of a ctest tree under a wrapper command (e.g. valgrind),
with each test's own environment and working directory, a few at a time.

    run_wrapped.py --build DIR [--jobs N] -- WRAPPER ARGS...

Prints one line per test (with its time) and the output of failures; exits
1 if any failed. When ctest has run the tree before, the tests it found
slowest start first (its Testing/Temporary/CTestCostData.txt), so that a
long test does not start last and run on alone. Lines come as tests end.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed


def list_tests(build):
    out = subprocess.run(["ctest", "--test-dir", build, "--show-only=json-v1"],
                         check=True, capture_output=True, text=True).stdout
    tests = []
    for t in json.loads(out).get("tests", []):
        props = {p["name"]: p["value"] for p in t.get("properties", [])}
        env = dict(os.environ)
        for item in props.get("ENVIRONMENT", []):
            key, _, value = item.partition("=")
            env[key] = value
        # ctest lists no command for a test whose program was not built.
        tests.append({"name": t["name"], "command": t.get("command"), "env": env,
                      "cwd": props.get("WORKING_DIRECTORY", build)})
    return tests


def ctest_costs(build):
    """Each test's time in ctest's last runs of build ({} when none)."""
    costs = {}
    try:
        with open(os.path.join(build, "Testing", "Temporary", "CTestCostData.txt")) as f:
            for line in f:
                fields = line.split()
                if fields == ["---"]:
                    break          # the failed tests' names follow
                if len(fields) == 3:
                    try:
                        costs[fields[0]] = float(fields[2])
                    except ValueError:
                        pass
    except OSError:
        pass
    return costs


def run(test, wrapper, timeout):
    if not test["command"]:
        return "not built", "", 0.0
    start = time.monotonic()
    try:
        proc = subprocess.run(wrapper + test["command"], env=test["env"], cwd=test["cwd"],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace", timeout=timeout)
        return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - start
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(errors="replace")
        return "timeout", out, time.monotonic() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", required=True)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=1200)
    parser.add_argument("wrapper", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    wrapper = args.wrapper[1:] if args.wrapper[:1] == ["--"] else args.wrapper
    tests = list_tests(args.build)
    if not tests:
        print("no tests found in %s" % args.build)
        return 1
    costs = ctest_costs(args.build)
    # Submitted slowest first (a stable sort: ctest's order without costs).
    order = sorted(range(len(tests)), key=lambda i: -costs.get(tests[i]["name"], 0.0))
    failed = 0
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(run, tests[i], wrapper, args.timeout): tests[i] for i in order}
        for future in as_completed(futures):
            test = futures[future]
            rc, output, took = future.result()
            ok = rc == 0
            print("%-4s %s%s (%.1f s)" % ("ok" if ok else "FAIL", test["name"],
                                         "" if ok else " (%s)" % rc, took), flush=True)
            if not ok:
                failed += 1
                print(output[-8000:], flush=True)
    print("%d of %d tests passed under %s" % (len(tests) - failed, len(tests), wrapper[0]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
