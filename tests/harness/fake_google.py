#!/usr/bin/python3
"""A local stand-in for the Google endpoints that GCP IAM auth talks to.

It plays three parts on one HTTP (or HTTPS) port on 127.0.0.1:

* the OAuth2 token endpoint (``POST /token``): checks the JWT bearer grant,
  the assertion's RS256 signature against the test key's public key, and
  its claims (iss, scope, aud, iat/exp), then mints a random OAuth token;
* the IAM Credentials API (``POST /v1/projects/-/serviceAccounts/<sa>:
  generateAccessToken``): checks the Bearer OAuth token it minted, the
  service account, the scope and the lifetime, then mints a random access
  token and installs it as a password of the ``default`` user of a real
  Valkey/Redis server (``ACL SETUSER default on >token``), removing it again
  when it expires (``<token``), so expiry and rotation are real;
* the GCE metadata server (``GET /computeMetadata/v1/instance/
  service-accounts/default/token`` with ``Metadata-Flavor: Google``).

Failures on demand come from a JSON control file, read on every request:
``{"status": 500, "message": "...", "stall_ms": 0, "drop": false,
"delay_ms": 0, "endpoints": ["token", "iam", "metadata"]}`` (every key
optional; an empty or missing file means "behave"; delay_ms answers late). A stalled request is never answered: the
connection is closed after stall_ms. Every request is appended to a JSON-lines
log with its time, the endpoint and the status answered, never a secret.
Tests that scan a client's output for leaked secrets need the tokens
themselves: with --issued-file every minted token (OAuth and access) is
appended there as a JSON line {"kind": "oauth"|"access", "token": "..."}.

Once listening it writes ``{"port": N, "pid": N}`` to --ready-file (via a
rename, so readers never see half a file). Python tests can use the
FakeGoogle class below instead of the command line; the C tests use
tests/c/support/fake_google.h. Standard library plus python3-cryptography;
run it with Debian's /usr/bin/python3.
"""

import argparse
import base64
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
IAM_PREFIX = "/v1/projects/-/serviceAccounts/"
IAM_SUFFIX = ":generateAccessToken"
METADATA_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
OAUTH_LIFETIME_S = 3600


CLIENT_EMAIL = "caller@vk-test.iam.gserviceaccount.com"
SERVICE_ACCOUNT = "redis-user@vk-test.iam.gserviceaccount.com"


# -- use from Python tests -----------------------------------------------------

def make_test_key(directory, client_email=CLIENT_EMAIL):
    """Generates an RSA test key with the openssl CLI (keys are never
    committed). Returns a dict: private_pem, public_path, client_email."""
    private_path = os.path.join(directory, "sa-key.pem")
    public_path = os.path.join(directory, "sa-public.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", private_path],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    subprocess.run(["openssl", "pkey", "-in", private_path, "-pubout", "-out", public_path],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with open(private_path) as f:
        private_pem = f.read()
    return {"private_pem": private_pem, "public_path": public_path,
            "client_email": client_email}


def key_json(key, token_uri):
    """A service-account key JSON for the test key and token_uri."""
    return json.dumps({
        "type": "service_account", "project_id": "vk-test",
        "private_key_id": "0123456789abcdef", "private_key": key["private_pem"],
        "client_email": key["client_email"], "client_id": "100000000000000000001",
        "token_uri": token_uri,
    })


class FakeGoogle:
    """The fake as a child process, for Python tests:

        fake = FakeGoogle(directory, redis=server).start()   # a vkharness.Server
        cfg credentials: fake.credentials_b64(), endpoint: fake.url
        fake.control(status=500, message="down"); fake.control()  # behave again
        fake.requests("iam")     # logged requests to that endpoint (dicts)
        fake.issued_tokens()     # every token minted so far (OAuth and access)
        fake.stop()

    redis: the server whose default user receives the tokens (its
    requirepass is used to administer it; TLS is followed with its CA), or
    a list of servers that share one password and CA (every node of a
    cluster), each of which receives every token."""

    def __init__(self, directory, redis=None, key=None, https_cert=None, https_key=None,
                 service_account=SERVICE_ACCOUNT, port=0):
        self.dir = directory
        self.key = key or make_test_key(directory)
        self.redis = redis
        self.https = (https_cert, https_key) if https_cert else None
        self.service_account = service_account
        self.port = port
        self.proc = None
        self.log_path = os.path.join(directory, "fake-google-requests.jsonl")
        self.control_path = os.path.join(directory, "fake-google-control.json")
        self.ready_path = os.path.join(directory, "fake-google-ready.json")
        self.issued_path = os.path.join(directory, "fake-google-issued.jsonl")

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % ("https" if self.https else "http", self.port)

    @property
    def host(self):
        """For GCE_METADATA_HOST."""
        return "127.0.0.1:%d" % self.port

    def credentials_b64(self):
        return base64.b64encode(key_json(self.key, self.url + "/token").encode()).decode()

    def start(self, timeout=10.0):
        if os.path.exists(self.ready_path):
            os.unlink(self.ready_path)
        args = ["/usr/bin/python3", os.path.abspath(__file__),
                "--public-key", self.key["public_path"],
                "--client-email", self.key["client_email"],
                "--service-account", self.service_account,
                "--port", str(self.port), "--log", self.log_path,
                "--control-file", self.control_path, "--ready-file", self.ready_path,
                "--issued-file", self.issued_path]
        targets = [] if self.redis is None else (
            list(self.redis) if isinstance(self.redis, (list, tuple)) else [self.redis])
        for server in targets:
            args += ["--redis-addr", server.address]
        if targets:
            if targets[0].requirepass is not None:
                args += ["--redis-password", targets[0].requirepass]
            if targets[0].tls:
                args += ["--redis-tls-ca", targets[0].ca["ca_cert"]]
        if self.https:
            args += ["--tls-cert", self.https[0], "--tls-key", self.https[1]]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(self.ready_path):
                with open(self.ready_path) as f:
                    self.port = json.load(f)["port"]
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("fake_google did not start")

    def stop(self):
        """SIGTERM (then SIGKILL) by PID; the port is kept for start()."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def control(self, **switches):
        tmp = self.control_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(switches, f)
        os.rename(tmp, self.control_path)

    def requests(self, endpoint=None):
        try:
            with open(self.log_path) as f:
                entries = [json.loads(line) for line in f if line.strip()]
        except OSError:
            return []
        return [e for e in entries if endpoint is None or e["endpoint"] == endpoint]

    def issued_tokens(self, kind=None):
        """The tokens minted so far, oldest first: kind "oauth" (the token
        endpoint's and the metadata server's), "access" (generateAccessToken's),
        or None for both."""
        try:
            with open(self.issued_path) as f:
                entries = [json.loads(line) for line in f if line.strip()]
        except OSError:
            return []
        return [e["token"] for e in entries if kind is None or e["kind"] == kind]


# -- a minimal RESP client for the ACL updates ---------------------------------

class RedisAdmin:
    """Runs one command per connection on the server whose default user
    receives the minted tokens (TCP, TCP+TLS or a unix socket)."""

    def __init__(self, addr=None, unix=None, password=None, tls_ca=None):
        self.addr = addr
        self.unix = unix
        self.password = password
        self.tls_ca = tls_ca
        self.lock = threading.Lock()

    def _connect(self):
        if self.unix:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(5)
            sock.connect(self.unix)
            return sock
        host, port = self.addr.rsplit(":", 1)
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=5)
        if self.tls_ca:
            context = ssl.create_default_context(cafile=self.tls_ca)
            sock = context.wrap_socket(sock, server_hostname=host.strip("[]"))
        return sock

    @staticmethod
    def _encode(args):
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg.encode() if isinstance(arg, str) else arg
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        return b"".join(out)

    @staticmethod
    def _read_line(stream):
        line = stream.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        return line.rstrip(b"\r\n")

    def command(self, *args):
        with self.lock, self._connect() as sock:
            payload = b""
            expected = 1
            if self.password is not None:
                payload += self._encode(["AUTH", self.password])
                expected = 2
            payload += self._encode(list(args))
            sock.sendall(payload)
            stream = sock.makefile("rb")
            lines = [self._read_line(stream) for _ in range(expected)]
            for line in lines:
                if line.startswith(b"-"):
                    raise RuntimeError("redis: " + line[1:].decode(errors="replace"))
            return lines[-1]


# -- the fake -------------------------------------------------------------------

def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def rfc3339(unix_s):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(unix_s)) + ".%03dZ" % (
        int(unix_s * 1000) % 1000)


class Fake:
    def __init__(self, args):
        self.args = args
        with open(args.public_key, "rb") as f:
            self.public_key = serialization.load_pem_public_key(f.read())
        # Every server that receives the tokens (one, or each node of a cluster).
        self.redis = [RedisAdmin(addr, None, args.redis_password, args.redis_tls_ca)
                      for addr in args.redis_addr or []]
        if args.redis_unix:
            self.redis.append(RedisAdmin(None, args.redis_unix, args.redis_password, None))
        self.oauth_tokens = {}      # token -> expiry (unix s)
        self.access_tokens = {}     # token -> expiry (unix s)
        self.lock = threading.Lock()
        self.log_lock = threading.Lock()
        self.base_url = None        # set once listening

    # -- control and log ---------------------------------------------------

    def control(self):
        path = self.args.control_file
        if not path:
            return {}
        try:
            with open(path) as f:
                text = f.read().strip()
            return json.loads(text) if text else {}
        except (OSError, ValueError):
            return {}

    def log(self, endpoint, method, path, status, **extra):
        if not self.args.log:
            return
        entry = {"t": time.time(), "endpoint": endpoint, "method": method,
                 "path": path, "status": status}
        entry.update(extra)
        with self.log_lock, open(self.args.log, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()

    def record_issued(self, kind, token):
        """Appends a minted token to --issued-file (never to the request log)."""
        if not self.args.issued_file:
            return
        with self.log_lock, open(self.args.issued_file, "a") as f:
            f.write(json.dumps({"kind": kind, "token": token}) + "\n")
            f.flush()

    # -- tokens ----------------------------------------------------------------

    def mint_oauth_token(self):
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        with self.lock:
            self.oauth_tokens[token] = time.time() + OAUTH_LIFETIME_S
        self.record_issued("oauth", token)
        return token

    def oauth_token_valid(self, token):
        with self.lock:
            expiry = self.oauth_tokens.get(token)
        return expiry is not None and expiry > time.time()

    def mint_access_token(self, lifetime_s):
        token = "vkiam-" + secrets.token_urlsafe(32)
        expiry = time.time() + lifetime_s
        with self.lock:
            self.access_tokens[token] = expiry
        self.record_issued("access", token)
        if self.redis:
            for admin in self.redis:
                admin.command("ACL", "SETUSER", "default", "on", ">" + token)
            timer = threading.Timer(lifetime_s, self.expire_access_token, args=(token,))
            timer.daemon = True
            timer.start()
        return token, expiry

    def expire_access_token(self, token):
        with self.lock:
            self.access_tokens.pop(token, None)
        try:
            for admin in self.redis:
                admin.command("ACL", "SETUSER", "default", "<" + token)
            self.log("expiry", "-", "-", 0)
        except (OSError, ConnectionError, RuntimeError) as e:
            self.log("expiry", "-", "-", -1, error=str(e))

    # -- checks -------------------------------------------------------------------

    def verify_assertion(self, assertion):
        """Returns None when the JWT is valid for this endpoint, else why not."""
        parts = assertion.split(".")
        if len(parts) != 3:
            return "assertion is not a JWT"
        try:
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            signature = b64url_decode(parts[2])
        except (ValueError, TypeError):
            return "assertion does not decode"
        if header.get("alg") != "RS256" or header.get("typ") != "JWT":
            return "assertion header is not RS256/JWT"
        try:
            self.public_key.verify(signature, (parts[0] + "." + parts[1]).encode(),
                                   padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return "invalid JWT signature"
        if self.args.client_email and claims.get("iss") != self.args.client_email:
            return "unexpected iss"
        if claims.get("scope") != SCOPE:
            return "unexpected scope"
        if claims.get("aud") != self.base_url + "/token":
            return "unexpected aud"
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int):
            return "iat/exp missing"
        if abs(iat - now) > 300 or exp - iat != 3600:
            return "iat/exp out of range"
        return None


def make_handler(fake):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "fake-google"

        def log_message(self, fmt, *args):   # the JSON log is the record
            pass

        def reply(self, endpoint, status, body, **extra):
            # Logged before answering, so a client that has its answer
            # always finds the request in the log.
            fake.log(endpoint, self.command, self.path.split("?")[0], status, **extra)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def read_body(self):
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length > 0 else b""

        def endpoint(self):
            path = self.path.split("?")[0]
            if self.command == "POST" and path == "/token":
                return "token"
            if self.command == "POST" and path.startswith(IAM_PREFIX) and \
                    path.endswith(IAM_SUFFIX):
                return "iam"
            if self.command == "GET" and path == METADATA_PATH:
                return "metadata"
            return None

        def injected_failure(self, endpoint):
            """Applies the control file; True when the request was answered."""
            control = fake.control()
            if endpoint not in control.get("endpoints", ["token", "iam", "metadata"]):
                return False
            if control.get("delay_ms"):
                # A slow Google: the answer comes, late (the request is
                # logged when it is answered).
                time.sleep(control["delay_ms"] / 1000.0)
            if control.get("stall_ms"):
                # Logged on arrival; then no answer at all, so a request the
                # client gave up on never shows up later in the log.
                fake.log(endpoint, self.command, self.path.split("?")[0], 0, stalled=True)
                time.sleep(control["stall_ms"] / 1000.0)
                self.close_connection = True
                return True
            if control.get("drop"):
                fake.log(endpoint, self.command, self.path.split("?")[0], 0, dropped=True)
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return True
            status = control.get("status")
            if status:
                message = control.get("message", "injected failure")
                if endpoint == "token":
                    body = {"error": "server_error", "error_description": message}
                else:
                    body = {"error": {"code": status, "message": message,
                                      "status": "INTERNAL"}}
                self.reply(endpoint, status, body, injected=True)
                return True
            return False

        def handle_token(self):
            form = urllib.parse.parse_qs(self.read_body().decode(errors="replace"))
            if form.get("grant_type") != [JWT_GRANT]:
                return self.reply("token", 400, {"error": "unsupported_grant_type",
                                                 "error_description": "bad grant_type"})
            why = fake.verify_assertion((form.get("assertion") or [""])[0])
            if why is not None:
                return self.reply("token", 400, {"error": "invalid_grant",
                                                 "error_description": why})
            self.reply("token", 200, {"access_token": fake.mint_oauth_token(),
                                      "expires_in": OAUTH_LIFETIME_S - 1,
                                      "token_type": "Bearer"})

        def iam_error(self, status, message, state):
            self.reply("iam", status, {"error": {"code": status, "message": message,
                                                 "status": state}})

        def handle_iam(self):
            raw = self.read_body()
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or not fake.oauth_token_valid(auth[7:]):
                return self.iam_error(401, "Request had invalid authentication credentials.",
                                      "UNAUTHENTICATED")
            path = self.path.split("?")[0]
            account = urllib.parse.unquote(path[len(IAM_PREFIX):-len(IAM_SUFFIX)])
            if "/" in account or (fake.args.service_account and
                                  account != fake.args.service_account):
                return self.iam_error(403, "Permission 'iam.serviceAccounts.getAccessToken' "
                                      "denied on resource (or it may not exist).",
                                      "PERMISSION_DENIED")
            try:
                body = json.loads(raw)
                lifetime = body.get("lifetime", "3600s")
                if not (isinstance(lifetime, str) and lifetime.endswith("s")):
                    raise ValueError("lifetime")
                lifetime_s = float(lifetime[:-1])
            except (ValueError, AttributeError):
                return self.iam_error(400, "Invalid request body.", "INVALID_ARGUMENT")
            if body.get("scope") != [SCOPE]:
                return self.iam_error(400, "Invalid scope.", "INVALID_ARGUMENT")
            if not 1 <= lifetime_s <= 43200:
                return self.iam_error(400, "Invalid lifetime.", "INVALID_ARGUMENT")
            try:
                token, expiry = fake.mint_access_token(lifetime_s)
            except (OSError, ConnectionError, RuntimeError) as e:
                return self.iam_error(503, "installing the token failed: %s" % e,
                                      "UNAVAILABLE")
            self.reply("iam", 200, {"accessToken": token, "expireTime": rfc3339(expiry)},
                       lifetime_s=lifetime_s)

        def handle_metadata(self):
            if self.headers.get("Metadata-Flavor") != "Google":
                return self.reply("metadata", 403, {"error": "missing Metadata-Flavor"})
            self.reply("metadata", 200, {"access_token": fake.mint_oauth_token(),
                                         "expires_in": OAUTH_LIFETIME_S - 1,
                                         "token_type": "Bearer"})

        def dispatch(self):
            endpoint = self.endpoint()
            if endpoint is None:
                self.read_body()
                return self.reply("unknown", 404, {"error": {"code": 404,
                                                             "message": "Not Found"}})
            if self.injected_failure(endpoint):
                return None
            return {"token": self.handle_token, "iam": self.handle_iam,
                    "metadata": self.handle_metadata}[endpoint]()

        do_GET = dispatch
        do_POST = dispatch

    return Handler


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # Clients that give up (timeouts, cancellation, stop) are expected.
        if isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--public-key", required=True,
                        help="PEM of the test key's public key (verifies the JWT)")
    parser.add_argument("--client-email", help="expected iss of the assertion")
    parser.add_argument("--service-account", help="expected service account")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate chain")
    parser.add_argument("--tls-key", help="the certificate's key")
    parser.add_argument("--redis-addr", action="append",
                        help="host:port of a server receiving tokens (repeatable)")
    parser.add_argument("--redis-unix", help="unix socket of the server receiving tokens")
    parser.add_argument("--redis-password", help="password of that server's default user")
    parser.add_argument("--redis-tls-ca", help="CA file when --redis-addr is TLS")
    parser.add_argument("--control-file", help="JSON failure switches, read per request")
    parser.add_argument("--log", help="request log, JSON lines")
    parser.add_argument("--issued-file",
                        help="every minted token, JSON lines (for leak checks in tests)")
    parser.add_argument("--ready-file", help='written with {"port", "pid"} once listening')
    args = parser.parse_args(argv)

    fake = Fake(args)
    server = QuietServer(("127.0.0.1", args.port), make_handler(fake))
    scheme = "http"
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        # The handshake runs on the handler's thread (first read), so a
        # client that stalls in it cannot block the accept loop.
        server.socket = context.wrap_socket(server.socket, server_side=True,
                                            do_handshake_on_connect=False)
        scheme = "https"
    port = server.server_address[1]
    fake.base_url = "%s://127.0.0.1:%d" % (scheme, port)

    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"port": port, "pid": os.getpid(), "url": fake.base_url}, f)
        os.rename(tmp, args.ready_file)
    else:
        print(json.dumps({"port": port, "pid": os.getpid(), "url": fake.base_url}), flush=True)
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
