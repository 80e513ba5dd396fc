#!/usr/bin/env python3
"""Runs every test of a ctest tree under a wrapper command (e.g. valgrind),
with each test's own environment and working directory, a few at a time.

    run_wrapped.py --build DIR [--jobs N] -- WRAPPER ARGS...

Prints one line per test, as it ends, with its time, and the output of
failures; exits 1 if any failed. Tests start in ctest's order.
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
    failed = 0
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(run, test, wrapper, args.timeout): test for test in tests}
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
