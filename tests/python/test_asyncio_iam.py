"""vkclient.asyncio with GCP IAM auth over TLS: tokens rotated every second
(the harness's stand-in for Google's endpoints installs each in the
server's ACL and removes it when it expires) while tasks keep commands in
flight on the client's one connection: none fails."""

import asyncio
import datetime

import pytest

import vkclient
import vkclient.asyncio as vka

from test_iam import iam, iam_config, issued  # noqa: F401  (iam is a fixture)


@pytest.mark.asyncio
async def test_tokens_rotate_under_async_load_with_no_failed_command(iam):  # noqa: F811
    server, google, _ = iam
    cfg = iam_config(iam, token_lifetime=3.0, refresh_every=1.0, refresh_check_interval=0.1)
    client = vka.Client(cfg)   # the first token is fetched on first use
    assert await client.execute("ACL", "WHOAMI") == b"default"
    first_tokens = len(issued(google))
    done = asyncio.Event()
    counts, failures = [0] * 16, []

    async def writer(i):
        while not done.is_set():
            try:
                await client.execute("INCR", "vkpy:async-iam:%d" % i)
                counts[i] += 1
            except vkclient.Error as err:  # counted: there must be none
                failures.append(err)

    tasks = [asyncio.ensure_future(writer(i)) for i in range(16)]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while len(issued(google)) < first_tokens + 5 and loop.time() < deadline:
        await asyncio.sleep(0.05)
    done.set()
    await asyncio.gather(*tasks)
    assert len(issued(google)) >= first_tokens + 5   # five rotations and more
    assert failures == []
    for i, n in enumerate(counts):
        assert n > 0
        assert await client.execute("GET", "vkpy:async-iam:%d" % i) == str(n).encode()
    status = client.status()
    assert status.connected is True and status.mode == "standalone"
    assert status.refresh_loop_running is True
    assert status.last_refresh_error is None and client.last_refresh_error() is None
    assert status.last_refresh_at is not None
    # A new connection logs in with the token in service (the first expired).
    await client.close()
    assert await client.ping() is True
    await client.close()


@pytest.mark.asyncio
async def test_refresh_state_is_reported(iam):  # noqa: F811
    """status() and last_refresh_error() report the token refresh as the
    blocking client's do: a failure while the old token stays in service,
    then the recovery."""
    server, google, _ = iam
    cfg = iam_config(iam, token_lifetime=60.0, refresh_every=0.5, refresh_check_interval=0.1)
    client = vka.Client(cfg)
    assert client.status().connected is False and client.last_refresh_error() is None
    before = datetime.datetime.now(datetime.timezone.utc)
    assert await client.ping() is True
    status = client.status()
    assert status.refresh_loop_running is True and status.last_refresh_error is None
    assert before - datetime.timedelta(seconds=1) <= status.last_refresh_at
    google.control(status=503, message="unavailable")
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while client.last_refresh_error() is None and loop.time() < deadline:
            await asyncio.sleep(0.05)
        error = client.status().last_refresh_error
        assert isinstance(error, str) and error
        assert google.key["private_pem"].splitlines()[1] not in error
        assert await client.ping() is True   # still in service with the old token
    finally:
        google.control()
    deadline = loop.time() + 20
    while client.last_refresh_error() is not None and loop.time() < deadline:
        await asyncio.sleep(0.05)
    assert client.status().last_refresh_error is None
    await client.close()


@pytest.mark.asyncio
async def test_first_token_is_fetched_without_blocking_the_loop(iam):  # noqa: F811
    """The client fetches its first token on the refresh thread: the loop
    keeps running while Google answers slowly, and a failed first fetch
    fails the waiting command with the blocking client's error."""
    server, google, _ = iam
    google.control(delay_ms=300)
    try:
        client = vka.Client(iam_config(iam))
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        beat = asyncio.ensure_future(ticker())
        assert await client.ping() is True
        beat.cancel()
        assert ticks >= 20   # the loop ran while the token was on its way
        await client.close()
    finally:
        google.control()

    google.control(status=503, message="unavailable")
    try:
        config = iam_config(iam, refresh_operation_timeout=2.0)
        with pytest.raises(vkclient.IAMError) as blocking:
            vkclient.Client(config)
        client = vka.Client(config)
        with pytest.raises(vkclient.IAMError) as info:
            await client.ping()
        assert str(info.value) == str(blocking.value)
        assert str(info.value).startswith("GCP IAM token request failed")
        await client.close()
    finally:
        google.control()
