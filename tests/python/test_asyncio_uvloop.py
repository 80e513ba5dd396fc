"""The basic vkclient.asyncio suite again, on uvloop (Debian's
python3-uvloop): the loop integration only uses the public loop API
(add_reader/add_writer/call_later), which uvloop implements natively."""

import asyncio

import pytest
import uvloop

import vkclient.asyncio as vka

# Collected here again, run with this module's event_loop (uvloop).
from test_asyncio import (  # noqa: F401  (pytest collects the imported tests)
    aclient, alocks, blocking, test_cancel_a_task_waiting_on_blpop,
    test_cancelled_tasks_leave_the_client_in_step,
    test_close_fails_what_is_in_flight_and_the_client_stays_usable, test_commands_and_replies,
    test_lock_context_manager_and_auto_renew, test_lock_mutual_exclusion_between_50_tasks,
    test_no_io_until_first_use_then_connect_close_reuse, test_pipeline,
    test_replies_and_errors_match_the_blocking_client, test_thousand_tasks_each_get_their_own_reply,
    test_try_lock_handle_unlock_extend, test_wait_for_timeout_on_blpop_forever,
    test_with_lock_result_exception_and_contention,
)

from conftest import plain_config


@pytest.fixture
def event_loop():
    loop = uvloop.new_event_loop()
    yield loop
    loop.close()


@pytest.mark.asyncio
async def test_runs_on_uvloop():
    loop = asyncio.get_running_loop()
    assert isinstance(loop, uvloop.Loop)
    async with vka.Client(plain_config()) as client:
        assert await client.ping()
        results = await asyncio.gather(*(client.execute("ECHO", i) for i in range(100)))
        assert results == [str(i).encode() for i in range(100)]
