"""Checks of the fake Google endpoints (fake_google.py) that the IAM tests
of every language rely on: the JWT is really verified, minted tokens really
become (and stop being) passwords of a real server, failures come on
demand and every request is logged."""
import base64
import json
import os
import shutil
import socket
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fake_google  # noqa: E402
import vkharness  # noqa: E402

SCOPE = "https://www.googleapis.com/auth/cloud-platform"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_for(private_pem, aud, iss=fake_google.CLIENT_EMAIL, now=None, scope=SCOPE):
    now = int(now or time.time())
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    claims = b64url(json.dumps({"iss": iss, "scope": scope, "aud": aud,
                                "iat": now, "exp": now + 3600}).encode())
    signature = key.sign((header + "." + claims).encode(), padding.PKCS1v15(), hashes.SHA256())
    return header + "." + claims + "." + b64url(signature)


def post(url, data, headers=None):
    request = urllib.request.Request(url, data=data, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def oauth_token(fake, assertion, grant_type=fake_google.JWT_GRANT):
    form = urllib.parse.urlencode({"grant_type": grant_type,
                                   "assertion": assertion}).encode()
    return post(fake.url + "/token", form,
                {"Content-Type": "application/x-www-form-urlencoded"})


def generate(fake, bearer, account=fake_google.SERVICE_ACCOUNT, lifetime="2s", scope=SCOPE):
    url = "%s/v1/projects/-/serviceAccounts/%s:generateAccessToken" % (
        fake.url, urllib.parse.quote(account))
    body = json.dumps({"scope": [scope], "lifetime": lifetime}).encode()
    return post(url, body, {"Authorization": "Bearer " + bearer,
                            "Content-Type": "application/json"})


def auth_works(server, token):
    """AUTH default <token> on a fresh TLS connection to server."""
    context = ssl.create_default_context(cafile=server.ca["ca_cert"])
    with context.wrap_socket(socket.create_connection(("127.0.0.1", server.port), timeout=5),
                             server_hostname="127.0.0.1") as sock:
        sock.sendall(b"*3\r\n$4\r\nAUTH\r\n$7\r\ndefault\r\n$%d\r\n%s\r\n"
                     % (len(token), token.encode()))
        return sock.recv(1024).startswith(b"+OK")


@pytest.fixture(scope="module")
def setup():
    directory = tempfile.mkdtemp(prefix="vk-fake-google-test")
    server = vkharness.Server(tls=True, requirepass="bootstrap-" + os.urandom(8).hex()).start()
    fake = fake_google.FakeGoogle(directory, redis=server).start()
    yield fake, server
    fake.stop()
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


def test_flow_installs_and_expires_tokens(setup):
    fake, server = setup
    status, body = oauth_token(fake, jwt_for(fake.key["private_pem"], fake.url + "/token"))
    assert status == 200 and body["token_type"] == "Bearer"
    oauth = body["access_token"]
    status, body = generate(fake, oauth)
    assert status == 200
    assert body["expireTime"].endswith("Z")
    token = body["accessToken"]
    # The fake records what it minted (for the leak scans of the clients' tests).
    assert fake.issued_tokens("oauth")[-1] == oauth
    assert fake.issued_tokens("access")[-1] == token
    assert {oauth, token} <= set(fake.issued_tokens())
    assert auth_works(server, token)
    time.sleep(2.5)                        # the 2 s lifetime passed
    assert not auth_works(server, token)
    iam = fake.requests("iam")
    assert iam[-1]["status"] == 200 and iam[-1]["lifetime_s"] == 2.0
    assert token not in open(fake.log_path).read()


def test_bad_assertions_are_refused(setup):
    fake, _ = setup
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_pem = other.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    assert oauth_token(fake, jwt_for(other_pem, fake.url + "/token")) == (
        400, {"error": "invalid_grant", "error_description": "invalid JWT signature"})
    assert oauth_token(fake, jwt_for(fake.key["private_pem"], "https://elsewhere/token"))[1][
        "error_description"] == "unexpected aud"
    assert oauth_token(fake, jwt_for(fake.key["private_pem"], fake.url + "/token",
                                     iss="intruder@x"))[1]["error_description"] == "unexpected iss"
    assert oauth_token(fake, jwt_for(fake.key["private_pem"], fake.url + "/token",
                                     scope="https://www.googleapis.com/auth/other"))[1][
        "error_description"] == "unexpected scope"
    assert oauth_token(fake, jwt_for(fake.key["private_pem"], fake.url + "/token",
                                     now=time.time() - 4000))[1][
        "error_description"] == "iat/exp out of range"
    good = jwt_for(fake.key["private_pem"], fake.url + "/token")
    assert oauth_token(fake, good, grant_type="client_credentials") == (
        400, {"error": "unsupported_grant_type", "error_description": "bad grant_type"})


def test_iam_checks_bearer_and_account(setup):
    fake, _ = setup
    assert generate(fake, "ya29.never-minted")[0] == 401
    _, body = oauth_token(fake, jwt_for(fake.key["private_pem"], fake.url + "/token"))
    assert generate(fake, body["access_token"], account="other@x")[0] == 403
    assert generate(fake, body["access_token"], lifetime="forever")[0] == 400
    status, refused = generate(fake, body["access_token"],
                               scope="https://www.googleapis.com/auth/other")
    assert (status, refused["error"]["message"]) == (400, "Invalid scope.")


def test_failures_on_demand_and_metadata(setup):
    fake, _ = setup
    fake.control(status=500, message="backend unavailable", endpoints=["token"])
    status, body = oauth_token(fake, jwt_for(fake.key["private_pem"], fake.url + "/token"))
    assert status == 500 and body["error_description"] == "backend unavailable"
    fake.control()
    # Without the header a metadata server refuses (a guard against SSRF).
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(fake.url + fake_google.METADATA_PATH, timeout=10)
    assert refused.value.code == 403
    request = urllib.request.Request(fake.url + fake_google.METADATA_PATH,
                                     headers={"Metadata-Flavor": "Google"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["access_token"].startswith("ya29.")
    assert fake.requests("metadata")[-1]["status"] == 200
    assert all("t" in entry for entry in fake.requests())
