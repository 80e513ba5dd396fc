"""GCP IAM auth in Sentinel mode, end to end, against real servers.

Each test starts its own Sentinel group (one master, two replicas, three
sentinels, everything over TLS) and the harness's stand-in for Google
(tests/harness/fake_google.py), which installs every token it issues as a
password of the `default` user on all three data nodes and removes it when
the token expires. `default` needs a password on the data nodes: the
tokens, plus a bootstrap password that only the stand-in's admin
connection and the test's own checks use. Replication and the sentinels
log in as a user of their own ("replicator", a fixed password), so they
keep working while `default`'s passwords rotate every second.

The client only has the sentinels' addresses, the CA and the IAM settings:
it finds the master through the sentinels, logs in as `default` with the
current token, keeps refreshing it, and follows a failover.
"""

import datetime
import secrets
import time
import uuid

import pytest

import fake_google
import topologies  # tests/harness, on sys.path through conftest
import vkclient

from conftest import Env, Writer, wait_until

ACL_USER = "replicator"
TOKEN_LIFETIME_S = 3.0
REFRESH_EVERY_S = 1.0


def unique(prefix):
    return "vkpy:sentinel-iam:%s:%s" % (prefix, uuid.uuid4().hex[:10])


class IAMGroup:
    """A TLS Sentinel group whose data nodes take the fake's tokens."""

    def __init__(self, group, google, ca_b64):
        self.group, self.google, self.ca_b64 = group, google, ca_b64

    def config(self, **options):
        return vkclient.Config(
            sentinel=vkclient.Sentinel(self.group.sentinel_addresses,
                                       master_name=self.group.name),
            tls=vkclient.TLS(self.ca_b64),
            gcp_iam=vkclient.GCPIAM(
                credentials_base64=self.google.credentials_b64(),
                service_account=fake_google.SERVICE_ACCOUNT,
                token_lifetime=TOKEN_LIFETIME_S, refresh_every=REFRESH_EVERY_S,
                refresh_check_interval=0.1, iam_endpoint=self.google.url),
            options=vkclient.ConnectionOptions(**options) if options else None)

    def issued(self):
        """generateAccessToken calls answered with a token, oldest first."""
        return [r for r in self.google.requests("iam") if r["status"] == 200]

    def expired(self):
        """Tokens the fake removed from every data node on expiry."""
        return [r for r in self.google.requests("expiry") if r["status"] == 0]

    def tokens(self):
        return self.google.issued_tokens("access")

    def named_master(self):
        """The master every sentinel names (they must agree)."""
        named = {tuple(s.cli("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.group.name))
                 for s in self.group.sentinels}
        assert len(named) == 1, named
        host, port = named.pop()
        return "%s:%s" % (host, port)

    def logs_in(self, node, token):
        """True when `default` logs in on node with token (a client of its
        own, standalone, over TLS); False when the node refuses it."""
        cfg = vkclient.Config(standalone=vkclient.Standalone(node.address),
                              tls=vkclient.TLS(self.ca_b64),
                              static_password=vkclient.StaticPassword(token, username="default"))
        try:
            with vkclient.Client(cfg) as c:
                return c.execute("ACL", "WHOAMI") == b"default"
        except vkclient.AuthenticationError:
            return False


def connections(node):
    """node's CLIENT LIST as dicts, without the connection that asks."""
    out = []
    for line in node.cli("CLIENT", "LIST").splitlines():
        fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        if fields.get("cmd") != "client|list":
            out.append(fields)
    return out


def client_logins(node):
    """The ids of the normal connections logged in as `default` on node: the
    client's (the test's own admin connections come and go at once)."""
    return sorted(int(c["id"]) for c in connections(node)
                  if c.get("user") == "default" and "N" in c.get("flags", ""))


def drop_client_connections(node):
    """CLIENT KILL of every normal connection of `default` on node, from an
    admin connection (which the server spares); the number dropped."""
    return node.cli("CLIENT", "KILL", "TYPE", "normal", "USER", "default")


@pytest.fixture
def iam_group(harness, tmp_path, monkeypatch):
    # Credentials come from the config only.
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.delenv("GCE_METADATA_HOST", raising=False)
    # Servers started here use this process's test CA.
    ca = harness.default_ca()
    group = topologies.SentinelGroup(Env.server, name="vkiam", tls=True,
                                     acl_user=(ACL_USER, "repl-" + secrets.token_hex(12)),
                                     default_password="bootstrap-" + secrets.token_hex(12))
    group.start()
    google = None
    try:
        # Every token goes to all three data nodes; the fake administers them
        # as `default` with the bootstrap password, over TLS with the CA.
        google = fake_google.FakeGoogle(str(tmp_path), redis=group.nodes).start()
        yield IAMGroup(group, google, ca["ca_b64"])
    finally:
        if google is not None:
            google.stop()
        group.stop()


def test_sentinel_iam_connects_as_default_on_the_named_master(iam_group):
    group = iam_group.group
    before = datetime.datetime.now(datetime.timezone.utc)
    with vkclient.Client(iam_group.config()) as c:
        assert c.execute("ACL", "WHOAMI") == b"default"
        key, value = unique("connect"), uuid.uuid4().hex
        assert c.set(key, value) is True
        assert c.get(key) == value.encode()

        # The write is on the master every sentinel names, which says so.
        master_address = iam_group.named_master()
        m = group.master()
        master = group.nodes[m]
        assert master.address == master_address
        assert master.cli("ROLE")[0] == "master"
        assert master.cli("GET", key) == value
        status = c.status()
        assert status.mode == "sentinel"
        assert status.connected is True
        assert status.master_address == master_address
        assert status.master_switches == 0
        assert status.refresh_loop_running is True
        assert status.last_refresh_error is None
        assert before - datetime.timedelta(seconds=1) <= status.last_refresh_at
        assert status.last_refresh_at <= datetime.datetime.now(datetime.timezone.utc)

        # The client is logged in on the master as `default`, with a token:
        # it never saw the bootstrap password.
        assert client_logins(master)
        # Every issued token works on every data node, not only the master.
        token = iam_group.tokens()[-1]
        assert [iam_group.logs_in(n, token) for n in group.nodes] == [True] * 3
        assert not iam_group.logs_in(master, "vkiam-not-issued-" + secrets.token_hex(8))

        # Replication and the sentinels log in as the ACL user of their own,
        # and the replicas have the write.
        links = connections(master)
        assert sorted(x["user"] for x in links if "S" in x["flags"]) == [ACL_USER] * 2
        sentinel_links = [x for x in links if x.get("name", "").startswith("sentinel-")]
        assert len(sentinel_links) >= 3
        assert {x["user"] for x in sentinel_links} == {ACL_USER}
        assert wait_until(lambda: all(n.cli("GET", key) == value for n in group.nodes), 5.0)
        for i, node in enumerate(group.nodes):
            if i != m:
                with pytest.raises(topologies.ReplyError, match="^READONLY"):
                    node.cli("SET", key, "on a replica")
    assert c.status().refresh_loop_running is False
    assert len(iam_group.issued()) >= 1
    assert [r["status"] for r in iam_group.google.requests("token")][:1] == [200]


def test_sentinel_iam_tokens_rotate_under_load(iam_group):
    group = iam_group.group
    with vkclient.Client(iam_group.config()) as c:
        first_at = c.status().last_refresh_at
        first_token = iam_group.tokens()[0]
        master = group.nodes[group.master()]
        writer = Writer(c, unique("rotate"))
        writer.start()
        # Several refreshes; the first token expired and was removed from
        # every data node, all while the writer kept going.
        assert wait_until(lambda: len(iam_group.issued()) >= 5 and iam_group.expired(),
                          5 * REFRESH_EVERY_S + TOKEN_LIFETIME_S + 10)
        assert [iam_group.logs_in(n, first_token) for n in group.nodes] == [False] * 3
        time.sleep(0.3)
        writer.finish()
        assert writer.errors == []
        assert writer.last_ok > 50
        assert master.cli("GET", writer.key) == str(writer.last_ok)
        status = c.status()
        assert status.last_refresh_at > first_at
        assert status.last_refresh_error is None
        assert status.refresh_loop_running is True

        # Every connection of the client goes; the next command logs in
        # again, with the token in service now (the expired ones are gone).
        # A read first: the pool may hand out a connection the server just
        # closed, and only a command that cannot have had an effect is
        # retried after its reply was lost (a SET would report the loss).
        before = client_logins(master)
        assert before
        assert drop_client_connections(master) >= len(before)
        assert client_logins(master) == []
        assert c.get(writer.key) == str(writer.last_ok).encode()
        key = unique("after-kill")
        assert c.set(key, "fresh login") is True
        assert master.cli("GET", key) == "fresh login"
        after = client_logins(master)
        assert after and min(after) > max(before)
        assert c.execute("ACL", "WHOAMI") == b"default"
        # The client never left the master or lost its token.
        status = c.status()
        assert (status.master_address, status.master_switches) == (master.address, 0)
        assert status.last_refresh_error is None
        # Only the latest tokens are in service: the first is refused.
        assert not iam_group.logs_in(master, first_token)
        assert iam_group.logs_in(master, iam_group.tokens()[-1])


def test_sentinel_iam_failover_under_rotation(iam_group):
    group = iam_group.group
    with vkclient.Client(iam_group.config(dial_timeout=0.5, read_timeout=1.0)) as c:
        old = group.master()
        assert old == 0 and c.status().master_address == group.nodes[0].address
        writers = [Writer(c, unique("failover-%d" % i)) for i in range(2)]
        for w in writers:
            w.start()
        # Tokens rotate while the writers go.
        assert wait_until(lambda: all(w.last_ok > 10 for w in writers)
                          and len(iam_group.issued()) >= 3, 15.0)
        assert [w.errors for w in writers] == [[], []]

        started = time.monotonic()
        group.failover()
        new = group.wait_new_master(old, 20.0)
        named = time.monotonic()
        assert new > 0
        new_master = group.nodes[new]
        # The client follows the sentinels to the new master, and every writer's
        # writes succeed again within 5 s of the sentinels naming it.
        resumed = wait_until(lambda: all(w.last_ok_at > named for w in writers), 5.0)
        assert resumed is not None, (named - started, [w.errors[-3:] for w in writers])
        switched = wait_until(lambda: c.status().master_address == new_master.address, 5.0)
        assert switched is not None, c.status()
        # Every sentinel names it soon (the others learn of it from the one
        # that ran the failover).
        assert group.wait_agreed_master(old, 10.0) == new
        assert iam_group.named_master() == new_master.address
        assert client_logins(new_master)

        # Keep writing until every token issued before the switch has
        # expired and was removed: the client lives on newer ones there.
        tokens_at_switch = len(iam_group.issued())
        assert wait_until(lambda: len(iam_group.expired()) >= tokens_at_switch
                          and len(iam_group.issued()) >= tokens_at_switch + 2,
                          TOKEN_LIFETIME_S + 3 * REFRESH_EVERY_S + 10)
        for w in writers:
            w.finish()

        # What each writer saw acknowledged last is on the new master.
        for w in writers:
            assert w.last_ok_at > switched
            assert new_master.cli("GET", w.key) == str(w.last_ok)
        # Errors only while the master changed, never an auth failure, and
        # few: at most one per writer per pause between its attempts.
        errors = [e for w in writers for e in w.errors]
        window_end = max(resumed, switched) + 1.0
        summary = "named after %.3f s, resumed after %.3f s, %d errors: %s" % (
            named - started, resumed - started, len(errors),
            sorted({repr(e) for _, e in errors})[:5])
        for at, err in errors:
            assert isinstance(err, vkclient.Error), summary
            assert not isinstance(err, (vkclient.AuthenticationError, vkclient.IAMError)), summary
            assert started <= at <= window_end, (at - started, summary)
        assert len(errors) <= 2 * ((window_end - started) / 0.02 + 5), summary

        # The new master takes new logins with the current token: drop the
        # client's connections there and write again.
        before = client_logins(new_master)
        assert before
        assert drop_client_connections(new_master) >= len(before)
        assert client_logins(new_master) == []
        assert c.get(writers[0].key) == str(writers[0].last_ok).encode()
        key = unique("after-failover")
        assert c.set(key, "on the new master") is True
        assert new_master.cli("GET", key) == "on the new master"
        after = client_logins(new_master)
        assert after and min(after) > max(before)
        assert c.execute("ACL", "WHOAMI") == b"default"
        status = c.status()
        assert (status.master_address, status.master_switches) == (new_master.address, 1), \
            (status, summary)
        assert status.last_refresh_error is None
        assert status.refresh_loop_running is True

        # Replication to the other replica goes on under its own user.
        other = next(i for i in range(3) if i not in (old, new))
        assert wait_until(lambda: group.nodes[other].cli("GET", key) == "on the new master",
                          10.0)
        assert {x["user"] for x in connections(group.nodes[other])
                if x.get("name", "").startswith("sentinel-")} == {ACL_USER}
        assert {x["user"] for x in connections(new_master)
                if "S" in x["flags"]} == {ACL_USER}
