"""Fixtures for the Python suite: real servers, clients, unique keys.

Run under the harness (it exports VK_TEST_*), with the package on PYTHONPATH:

    PYTHONPATH=<build>/bindings/python /usr/bin/python3 tests/harness/vkharness.py \
        run --server valkey-server -- /usr/bin/python3 -m pytest -q tests/python

Run without the harness, the same servers are started here through the
harness library, so `pytest tests/python` alone works too.
"""

import os
import sys
import threading
import time
import uuid

import pytest

# Sanitizer runs preload the ASan/UBSan runtime into this interpreter
# (LD_PRELOAD); the servers and programs the tests start must not get it.
if "libasan" in os.environ.get("LD_PRELOAD", ""):
    del os.environ["LD_PRELOAD"]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HARNESS_DIR = os.path.join(ROOT, "tests", "harness")
if HARNESS_DIR not in sys.path:
    sys.path.insert(0, HARNESS_DIR)

import vkharness  # noqa: E402  (the path is set just above)

import vkclient  # noqa: E402


def _start_servers():
    """The servers `vkharness.py run` would start, for a run without it."""
    binary = os.environ.get("VK_TEST_SERVER", "valkey-server")
    ca = vkharness.default_ca()
    other = vkharness.make_ca(vkharness._temp_dir("vkpytest-other-ca-"), name="unrelated test CA")
    default_pass, acl_user, acl_pass = "default-" + uuid.uuid4().hex, "vkuser", uuid.uuid4().hex
    plain = vkharness.Server(binary).start()
    tls = vkharness.Server(binary, tls=True, ca=ca).start()
    acl = vkharness.Server(binary, requirepass=default_pass,
                           acl_users=[(acl_user, acl_pass)]).start()
    quorum = [vkharness.Server(binary).start() for _ in range(3)]
    os.environ.update({
        "VK_TEST_SERVER": binary,
        "VK_TEST_ADDR": plain.address,
        "VK_TEST_PORT": str(plain.port),
        "VK_TEST_TLS_ADDR": tls.address,
        "VK_TEST_CA_B64": ca["ca_b64"],
        "VK_TEST_CA_FILE": ca["ca_cert"],
        "VK_TEST_OTHER_CA_B64": other["ca_b64"],
        "VK_TEST_ACL_ADDR": acl.address,
        "VK_TEST_DEFAULT_PASS": default_pass,
        "VK_TEST_ACL_USER": acl_user,
        "VK_TEST_ACL_PASS": acl_pass,
        "VK_TEST_QUORUM_ADDRS": ",".join(s.address for s in quorum),
        "VK_TEST_HARNESS": os.path.join(HARNESS_DIR, "vkharness.py"),
    })


if "VK_TEST_QUORUM_ADDRS" not in os.environ:
    _start_servers()


class Env:
    """The VK_TEST_* variables, as attributes."""

    server = os.environ["VK_TEST_SERVER"]
    addr = os.environ["VK_TEST_ADDR"]
    tls_addr = os.environ["VK_TEST_TLS_ADDR"]
    ca_b64 = os.environ["VK_TEST_CA_B64"]
    ca_file = os.environ["VK_TEST_CA_FILE"]
    other_ca_b64 = os.environ["VK_TEST_OTHER_CA_B64"]
    acl_addr = os.environ["VK_TEST_ACL_ADDR"]
    default_pass = os.environ["VK_TEST_DEFAULT_PASS"]
    acl_user = os.environ["VK_TEST_ACL_USER"]
    acl_pass = os.environ["VK_TEST_ACL_PASS"]
    quorum_addrs = os.environ["VK_TEST_QUORUM_ADDRS"].split(",")


@pytest.fixture(scope="package")
def env():
    return Env


@pytest.fixture(scope="package")
def harness():
    """The harness library, for tests that start, kill or restart servers."""
    return vkharness


def plain_config(address=None, **kwargs):
    return vkclient.Config(standalone=vkclient.Standalone(Env.addr if address is None else address),
                           **kwargs)


@pytest.fixture
def client():
    with vkclient.Client(plain_config()) as c:
        yield c


@pytest.fixture
def key(request):
    """A key no other test uses."""
    return "vkpy:%s:%s" % (request.node.name, uuid.uuid4().hex[:12])


@pytest.fixture
def own_server():
    """A plain server of this test's own, stopped at the end."""
    server = vkharness.Server(Env.server).start()
    yield server
    server.stop()


# ---- no skips ----------------------------------------------------------------
# The suite runs against real servers only and every test must run: a skipped
# or xfail-marked test (at collection, in a fixture or in the test) fails the
# run, even when everything else passed.

_NOT_RUN = []


def pytest_collectreport(report):
    if report.skipped:
        _NOT_RUN.append((report.nodeid, "skipped at collection"))


def pytest_runtest_logreport(report):
    if hasattr(report, "wasxfail"):
        _NOT_RUN.append((report.nodeid, "xfail" if report.skipped else "xpass"))
    elif report.skipped:
        _NOT_RUN.append((report.nodeid, "skipped"))


def pytest_terminal_summary(terminalreporter):
    if _NOT_RUN:
        terminalreporter.section("tests that did not run (this suite allows none)", red=True)
        for nodeid, why in _NOT_RUN:
            terminalreporter.line("%s: %s" % (why, nodeid))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    if _NOT_RUN and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def build_dir():
    """The build tree: $VK_BUILD_DIR, else found from the imported package
    (<build>/bindings/python/vkclient/__init__.py)."""
    if os.environ.get("VK_BUILD_DIR"):
        return os.environ["VK_BUILD_DIR"]
    package = os.path.dirname(os.path.abspath(vkclient.__file__))
    return os.path.dirname(os.path.dirname(os.path.dirname(package)))


def wait_until(predicate, timeout=5.0, step=0.01):
    """Polls predicate; the monotonic time it first held, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(step)
    return None


# ---- a writer for the failover tests ------------------------------------------

class Writer(threading.Thread):
    """Writes 1, 2, 3... to its own key non-stop through a shared client (the
    failover tests); remembers the last acknowledged value, when, and every
    error. Once asked to stop it still ends on an acknowledged write, so
    that the value on the server is the last one it saw succeed."""

    def __init__(self, client, key):
        super().__init__(daemon=True)
        self.client, self.key = client, key
        self.stop_asked = threading.Event()
        self.last_ok = 0
        self.last_ok_at = 0.0
        self.errors = []   # (monotonic time, exception)

    def run(self):
        n = 0
        give_up = None
        while True:
            if self.stop_asked.is_set():
                if n == self.last_ok:
                    return
                give_up = give_up or time.monotonic() + 10
                if time.monotonic() > give_up:
                    return
            n += 1
            try:
                self.client.set(self.key, n)
            except Exception as err:  # checked by the test: type and timing
                self.errors.append((time.monotonic(), err))
                time.sleep(0.02)   # as an application would before trying again
                continue
            self.last_ok, self.last_ok_at = n, time.monotonic()

    def finish(self):
        self.stop_asked.set()
        self.join(15)
        assert not self.is_alive()
