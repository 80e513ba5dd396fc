"""The cross-language example: examples/python/lock_demo.py and the C
lock_demo increment one counter under one lock key at the same time, and
no increment is lost."""

import os
import subprocess
import sys

import vkclient

from conftest import ROOT, build_dir, plain_config

ROUNDS = 5
COUNTER_KEY = "vkclient:demo:counter"


def python_demo(address):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "examples", "python", "lock_demo.py"),
                             address, str(ROUNDS)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def c_demo(address):
    binary = os.path.join(build_dir(), "examples", "c", "lock_demo")
    assert os.access(binary, os.X_OK), "the C example is not built: %s" % binary
    return subprocess.Popen([binary, address, str(ROUNDS)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def counter(client):
    return int(client.get(COUNTER_KEY) or 0)


def test_python_example_alone(env):
    with vkclient.Client(plain_config()) as client:
        before = counter(client)
        demo = python_demo(env.addr)
        out, _ = demo.communicate(timeout=60)
        assert demo.returncode == 0, out
        assert counter(client) == before + ROUNDS
    assert "[Python] holds vkclient:demo:lock" in out
    assert "StaticPasswordAuth" not in out and "Config{Topology:Standalone" in out
    assert "try_lock: acquired" in out


def test_python_and_c_examples_share_the_lock(env):
    with vkclient.Client(plain_config()) as client:
        before = counter(client)
        demos = [python_demo(env.addr), c_demo(env.addr), python_demo(env.addr)]
        outputs = [d.communicate(timeout=120)[0] for d in demos]
        for demo, out in zip(demos, outputs):
            assert demo.returncode == 0, out
        assert counter(client) == before + ROUNDS * len(demos)
    assert "[C] holds" in outputs[1]
    assert "[Python] holds" in outputs[0]
