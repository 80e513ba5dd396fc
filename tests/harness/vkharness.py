#!/usr/bin/env python3
"""Real Redis/Valkey servers for the vkclient test suites.

Library (standard library only):

    from vkharness import Server, make_ca
    s = Server("valkey-server", requirepass="secret").start()
    s.cli("SET", "k", "v")          # -> "OK"
    s.kill(); s.restart(); s.stop()

Command line: starts a fixed set of servers, exports their addresses to a
command, runs it, stops the servers and exits with the command's status:

    python3 vkharness.py run [--server valkey-server|redis-server] [--topologies] -- CMD ARGS...

Every server runs on a free loopback port in its own temporary folder and is
stopped by its PID; whatever is still running at interpreter exit is stopped.
"""

import argparse
import atexit
import base64
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import warnings

__all__ = ["Server", "ReplyError", "make_ca", "default_ca", "free_port", "main"]

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0

_live_servers = set()
_temp_dirs = []


def _temp_dir(prefix):
    path = tempfile.mkdtemp(prefix=prefix)
    _temp_dirs.append(path)
    return path


def _cleanup():
    for server in list(_live_servers):
        server.stop()
    for path in _temp_dirs:
        shutil.rmtree(path, ignore_errors=True)


atexit.register(_cleanup)


def free_port():
    """A TCP port that is free on 127.0.0.1 (and ::1 where IPv6 exists)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s4:
            s4.bind(("127.0.0.1", 0))
            port = s4.getsockname()[1]
        if not socket.has_ipv6:
            return port
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s6:
                s6.bind(("::1", port))
            return port
        except OSError as err:
            # No IPv6 loopback at all: the IPv4 port is enough.
            if err.errno in (97, 99):  # EAFNOSUPPORT, EADDRNOTAVAIL
                return port
            # The port is taken on ::1: pick another one.


# ---------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------

def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _issue(directory, name, ca_cert, ca_key, subject, extensions):
    """A P-256 key and a certificate signed by the CA, valid 10 years."""
    key = os.path.join(directory, name + ".key")
    csr = os.path.join(directory, name + ".csr")
    crt = os.path.join(directory, name + ".crt")
    ext = os.path.join(directory, name + ".ext")
    with open(ext, "w") as f:
        f.write(extensions)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key, cwd=directory)
    _openssl("req", "-new", "-key", key, "-subj", subject, "-out", csr, cwd=directory)
    _openssl("x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key,
             "-CAcreateserial", "-days", "3650", "-sha256", "-extfile", ext,
             "-out", crt, cwd=directory)
    return crt, key


def _b64_file(path):
    with open(path, "rb") as f:
        return base64.b64encode(f.read()).decode("ascii")


def make_ca(directory, name="vkclient test CA"):
    """Generates a CA and a server and client certificate signed by it.

    The server certificate is valid for DNS:localhost, IP:127.0.0.1 and
    IP:::1. Returns a dict of paths (ca_cert, ca_key, server_cert,
    server_key, client_cert, client_key) plus base64 of the PEM files
    (ca_b64, client_cert_b64, client_key_b64), the form vkclient takes.
    """
    os.makedirs(directory, exist_ok=True)
    ca_key = os.path.join(directory, "ca.key")
    ca_cert = os.path.join(directory, "ca.crt")
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", ca_key,
             cwd=directory)
    _openssl("req", "-x509", "-new", "-key", ca_key, "-sha256", "-days", "3650",
             "-subj", "/CN=" + name,
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-out", ca_cert, cwd=directory)
    server_cert, server_key = _issue(
        directory, "server", ca_cert, ca_key, "/CN=localhost",
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n")
    client_cert, client_key = _issue(
        directory, "client", ca_cert, ca_key, "/CN=vkclient test client",
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=clientAuth\n")
    return {
        "dir": directory,
        "ca_cert": ca_cert,
        "ca_key": ca_key,
        "server_cert": server_cert,
        "server_key": server_key,
        "client_cert": client_cert,
        "client_key": client_key,
        "ca_b64": _b64_file(ca_cert),
        "client_cert_b64": _b64_file(client_cert),
        "client_key_b64": _b64_file(client_key),
    }


_default_ca = None


def default_ca():
    """The process-wide CA that TLS servers use unless given another."""
    global _default_ca
    if _default_ca is None:
        _default_ca = make_ca(_temp_dir("vkharness-ca-"))
    return _default_ca


# ---------------------------------------------------------------------------
# A minimal RESP2 client for set-up and checks
# ---------------------------------------------------------------------------

class ReplyError(Exception):
    """An error reply from the server (e.g. "WRONGPASS ...")."""


def _encode_command(args):
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class _Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by server")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        """Bulk strings come back as str when they are UTF-8, else bytes;
        an error reply is returned as a ReplyError instance (not raised)."""
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return ReplyError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self._exact(n)
            try:
                return data.decode()
            except UnicodeDecodeError:
                return data
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self.reply() for _ in range(n)]
        raise ConnectionError("unexpected reply line %r" % line)


# ---------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------

class Server:
    """One valkey-server / redis-server process on a free loopback port.

    tls: serve TLS only (port 0 for plain), with `ca` (make_ca() result;
    default: the process-wide default_ca()). requirepass: the default
    user's password. acl_users: {name: password} (or pairs), each with all
    permissions. extra: more config lines, a list of "directive value"
    strings or a dict {directive: value}. tls11_only: serve TLS 1.1 and
    nothing else (for TLS 1.2 floor tests; implies tls).
    """

    def __init__(self, binary="valkey-server", tls=False, requirepass=None,
                 acl_users=None, extra=None, ca=None, tls11_only=False):
        self.binary = binary
        self.tls = tls or tls11_only
        self.tls11_only = tls11_only
        self.requirepass = requirepass
        if isinstance(acl_users, dict):
            acl_users = list(acl_users.items())
        self.acl_users = list(acl_users or [])
        if isinstance(extra, dict):
            extra = ["%s %s" % kv for kv in extra.items()]
        self.extra = list(extra or [])
        self.ca = ca if ca is not None or not self.tls else default_ca()
        self.port = None
        self.dir = None
        self._proc = None

    # -- properties ---------------------------------------------------------

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    @property
    def pid(self):
        return self._proc.pid if self._proc else None

    @property
    def running(self):
        return self._proc is not None and self._proc.poll() is None

    def __repr__(self):
        return "Server(%s, %s, tls=%s, pid=%s)" % (self.binary, self.address if self.port else "-",
                                                   self.tls, self.pid)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- lifecycle ----------------------------------------------------------

    def _config_text(self):
        lines = [
            "bind 127.0.0.1 -::1",
            "protected-mode no",
            "daemonize no",
            "dir %s" % self.dir,
            "logfile %s" % os.path.join(self.dir, "server.log"),
            'save ""',
            "appendonly no",
        ]
        if self.tls:
            lines += [
                "port 0",
                "tls-port %d" % self.port,
                "tls-cert-file %s" % self.ca["server_cert"],
                "tls-key-file %s" % self.ca["server_key"],
                "tls-ca-cert-file %s" % self.ca["ca_cert"],
                "tls-auth-clients optional",
            ]
            if self.tls11_only:
                # OpenSSL 3 offers TLS 1.1 only at security level 0.
                lines += ['tls-protocols "TLSv1.1"', "tls-ciphers DEFAULT:@SECLEVEL=0"]
        else:
            lines.append("port %d" % self.port)
        if self.requirepass is not None:
            lines.append("requirepass %s" % self.requirepass)
        for name, password in self.acl_users:
            lines.append("user %s on >%s ~* &* +@all" % (name, password))
        lines += self.extra
        return "\n".join(lines) + "\n"

    def _spawn(self):
        conf = os.path.join(self.dir, "server.conf")
        with open(conf, "w") as f:
            f.write(self._config_text())
        self._proc = subprocess.Popen([self.binary, conf], cwd=self.dir,
                                      stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        _live_servers.add(self)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                if self.cli("PING", timeout=1.0) == "PONG":
                    return True
            except (OSError, ConnectionError, ssl.SSLError):
                pass
            time.sleep(0.02)
        return False

    def _log_tail(self):
        try:
            with open(os.path.join(self.dir, "server.log")) as f:
                return "".join(f.readlines()[-20:])
        except OSError:
            return "(no log)"

    def start(self):
        """Starts the server and waits until it answers PING. A port taken
        between choosing and binding it is retried with another port."""
        if self.running:
            return self
        if self.dir is None:
            self.dir = _temp_dir("vkharness-%s-" % os.path.basename(self.binary))
        for _ in range(5):
            self.port = free_port()
            if self._spawn():
                return self
            log = self._log_tail()
            self._terminate(signal.SIGKILL)
            if "Address already in use" not in log:
                break
        raise RuntimeError("%s did not start:\n%s" % (self.binary, log))

    def restart(self):
        """Starts the server again on the same port (after kill() or stop())."""
        if self.running:
            self.stop()
        if self.port is None:
            return self.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._spawn():
                return self
            log = self._log_tail()
            self._terminate(signal.SIGKILL)
            # The old socket may linger briefly; keep the port and try again.
            if time.monotonic() > deadline:
                raise RuntimeError("%s did not restart on port %d:\n%s"
                                   % (self.binary, self.port, log))
            time.sleep(0.1)

    def _terminate(self, sig):
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        self._proc = None
        _live_servers.discard(self)

    def kill(self):
        """SIGKILL: a crash. The port stays with this object for restart()."""
        self._terminate(signal.SIGKILL)

    def stop(self):
        """SIGTERM (then SIGKILL after 5 s), by PID."""
        self._terminate(signal.SIGTERM)

    # -- commands -----------------------------------------------------------

    def connect(self, timeout=5.0, auth=True):
        """A raw socket to the server (TLS when the server is TLS-only),
        authenticated as the default user when requirepass is set."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        if self.tls:
            ctx = ssl.create_default_context(cafile=self.ca["ca_cert"])
            if self.tls11_only:
                ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
                with warnings.catch_warnings():  # TLS 1.1 is deprecated: the point here
                    warnings.simplefilter("ignore", DeprecationWarning)
                    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            sock = ctx.wrap_socket(sock, server_hostname="localhost")
        if auth and self.requirepass is not None:
            sock.sendall(_encode_command(["AUTH", self.requirepass]))
            reply = _Reader(sock).reply()
            if isinstance(reply, ReplyError):
                sock.close()
                raise reply
        return sock

    def cli(self, *args, timeout=5.0):
        """Runs one command on a fresh connection and returns the parsed
        reply; an error reply raises ReplyError."""
        with self.connect(timeout=timeout) as sock:
            sock.sendall(_encode_command(args))
            reply = _Reader(sock).reply()
        if isinstance(reply, ReplyError):
            raise reply
        return reply


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def _start_topologies(binary):
    """Starts one Sentinel group and one 3-master Cluster (side by side: each
    spends most of its start waiting for gossip) and returns their
    variables."""
    import threading
    # topologies imports this module by name; when this file runs as a
    # script, give it this instance so that one registry stops everything.
    sys.modules.setdefault("vkharness", sys.modules[__name__])
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import topologies

    group = topologies.SentinelGroup(binary, name="vkmaster")
    cluster = topologies.Cluster(binary, masters=3, replicas=0)
    errors = []

    def start(topology):
        try:
            topology.start()
        except Exception as err:  # reported below, in this thread
            errors.append(err)

    threads = [threading.Thread(target=start, args=(t,)) for t in (group, cluster)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return {
        "VK_TEST_SENTINEL_ADDRS": ",".join(group.sentinel_addresses),
        "VK_TEST_SENTINEL_MASTER": group.name,
        "VK_TEST_CLUSTER_ADDRS": ",".join(cluster.masters),
    }


def _run(args):
    cmd = args.cmd
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        print("vkharness: run needs a command after --", file=sys.stderr)
        return 2
    binary = args.server
    env = dict(os.environ)
    env["VK_TEST_SERVER"] = binary
    env["VK_TEST_HARNESS"] = os.path.abspath(__file__)

    plain = Server(binary).start()
    env["VK_TEST_ADDR"] = plain.address
    env["VK_TEST_PORT"] = str(plain.port)
    if not args.plain_only:
        ca = default_ca()
        other_ca = make_ca(_temp_dir("vkharness-other-ca-"), name="unrelated test CA")
        default_pass = "default-" + secrets.token_hex(8)
        acl_user, acl_pass = "vkuser", "acl-" + secrets.token_hex(8)
        tls = Server(binary, tls=True, ca=ca).start()
        acl = Server(binary, requirepass=default_pass, acl_users=[(acl_user, acl_pass)]).start()
        quorum = [Server(binary).start() for _ in range(3)]
        env.update({
            "VK_TEST_TLS_ADDR": tls.address,
            "VK_TEST_CA_B64": ca["ca_b64"],
            "VK_TEST_CA_FILE": ca["ca_cert"],
            "VK_TEST_OTHER_CA_B64": other_ca["ca_b64"],
            "VK_TEST_ACL_ADDR": acl.address,
            "VK_TEST_DEFAULT_PASS": default_pass,
            "VK_TEST_ACL_USER": acl_user,
            "VK_TEST_ACL_PASS": acl_pass,
            "VK_TEST_QUORUM_ADDRS": ",".join(s.address for s in quorum),
        })
    if args.topologies:
        env.update(_start_topologies(binary))
    if args.verbose:
        for key in sorted(k for k in env if k.startswith("VK_TEST_")):
            print("vkharness: %s=%s" % (key, env[key]), file=sys.stderr)
    try:
        status = subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        status = 130
    except OSError as err:
        print("vkharness: cannot run %s: %s" % (cmd[0], err), file=sys.stderr)
        status = 127
    finally:
        _cleanup()
    return 128 - status if status < 0 else status


def main(argv=None):
    parser = argparse.ArgumentParser(prog="vkharness.py",
                                     description="Real Redis/Valkey servers for tests.")
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="start the test servers, run a command, stop them")
    run.add_argument("--server", default=os.environ.get("VK_TEST_SERVER", "valkey-server"),
                     choices=["valkey-server", "redis-server"])
    run.add_argument("--plain-only", action="store_true",
                     help="start only the plain server (VK_TEST_ADDR, VK_TEST_PORT)")
    run.add_argument("--topologies", action="store_true",
                     help="also start a Sentinel group and a Cluster (VK_TEST_SENTINEL_ADDRS, "
                          "VK_TEST_SENTINEL_MASTER, VK_TEST_CLUSTER_ADDRS)")
    run.add_argument("-v", "--verbose", action="store_true",
                     help="print the exported variables")
    run.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    # SIGTERM (e.g. from a CI timeout) should still stop the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
