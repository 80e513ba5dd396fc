"""Checks of the test harness itself, against real servers: the suites of
every language rely on what it promises (ports, TLS names, ACL, restart)."""
import base64
import os
import socket
import ssl
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vkharness  # noqa: E402

HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vkharness.py")
SERVERS = ["valkey-server", "redis-server"]


@pytest.mark.parametrize("binary", SERVERS)
def test_plain_server_answers_and_stops_by_pid(binary):
    s = vkharness.Server(binary).start()
    try:
        assert s.address == "127.0.0.1:%d" % s.port
        assert s.cli("SET", "k", b"\xff\x00v") == "OK"
        assert s.cli("GET", "k") == b"\xff\x00v"
        assert s.cli("GET", "missing") is None
        assert s.cli("INCR", "n") == 1
        with pytest.raises(vkharness.ReplyError):
            s.cli("NOSUCHCOMMAND")
        pid = s.pid
    finally:
        s.stop()
    assert not s.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_kill_then_restart_keeps_the_port():
    s = vkharness.Server().start()
    try:
        port, pid = s.port, s.pid
        s.kill()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        s.restart()
        assert s.port == port and s.pid != pid
        assert s.cli("PING") == "PONG"
    finally:
        s.stop()


def test_tls_certificate_names_and_ca():
    ca = vkharness.default_ca()
    s = vkharness.Server(tls=True).start()
    try:
        ctx = ssl.create_default_context(cadata=base64.b64decode(ca["ca_b64"]).decode())
        for host, name in (("127.0.0.1", "127.0.0.1"), ("127.0.0.1", "localhost"), ("::1", "::1")):
            with ctx.wrap_socket(socket.create_connection((host, s.port), timeout=5),
                                 server_hostname=name) as tls:
                tls.sendall(b"PING\r\n")
                assert tls.recv(16) == b"+PONG\r\n"
        # Plain text is not served on the TLS port.
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as plain:
            try:
                plain.sendall(b"PING\r\n")
                answer = plain.recv(16)
            except ConnectionResetError:
                answer = b""
            assert answer != b"+PONG\r\n"
        other = vkharness.make_ca(vkharness._temp_dir("vkharness-test-"), name="other")
        other_ctx = ssl.create_default_context(cafile=other["ca_cert"])
        with pytest.raises(ssl.SSLCertVerificationError):
            other_ctx.wrap_socket(socket.create_connection(("127.0.0.1", s.port), timeout=5),
                                  server_hostname="localhost")
    finally:
        s.stop()


def test_password_and_acl_user():
    s = vkharness.Server(requirepass="pw-default", acl_users={"app": "pw-app"}).start()
    try:
        assert s.cli("ACL", "WHOAMI") == "default"
        with s.connect(auth=False) as raw:
            raw.sendall(b"*1\r\n$4\r\nPING\r\n")
            assert raw.recv(64).startswith(b"-NOAUTH")
        with s.connect(auth=False) as raw:
            raw.sendall(b"*3\r\n$4\r\nAUTH\r\n$3\r\napp\r\n$6\r\npw-app\r\n")
            assert raw.recv(64) == b"+OK\r\n"
    finally:
        s.stop()


def test_run_exports_the_documented_variables():
    script = (
        "import os, sys\n"
        "names = ['VK_TEST_SERVER', 'VK_TEST_ADDR', 'VK_TEST_PORT', 'VK_TEST_TLS_ADDR',\n"
        "         'VK_TEST_CA_B64', 'VK_TEST_CA_FILE', 'VK_TEST_OTHER_CA_B64', 'VK_TEST_ACL_ADDR',\n"
        "         'VK_TEST_DEFAULT_PASS', 'VK_TEST_ACL_USER', 'VK_TEST_ACL_PASS',\n"
        "         'VK_TEST_QUORUM_ADDRS', 'VK_TEST_HARNESS']\n"
        "missing = [n for n in names if not os.environ.get(n)]\n"
        "assert not missing, missing\n"
        "assert os.environ['VK_TEST_ADDR'].endswith(':' + os.environ['VK_TEST_PORT'])\n"
        "assert len(os.environ['VK_TEST_QUORUM_ADDRS'].split(',')) == 3\n"
        "print(os.environ['VK_TEST_SERVER'])\n"
        "sys.exit(7)\n")
    out = subprocess.run([sys.executable, HARNESS, "run", "--server", "redis-server", "--",
                          sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 7, out.stderr
    assert out.stdout.strip() == "redis-server"
