"""The portal: the sync face runs coroutines and async iterators on one background loop."""

import asyncio
import threading

import pytest

from mailkit._portal import Portal


def test_calls_run_on_one_background_loop():
    portal = Portal()

    async def where():
        return threading.current_thread().name, id(asyncio.get_running_loop())

    first, second = portal.call(where()), portal.call(where())
    assert first == second
    assert first[0] == "mailkit-portal"
    portal.close()


def test_exceptions_propagate_unchanged():
    portal = Portal()

    async def boom():
        raise KeyError("x")

    with pytest.raises(KeyError):
        portal.call(boom())
    portal.close()


def test_iterate_drives_async_generator_and_closes_it_early():
    portal = Portal()
    closed = []

    async def numbers():
        try:
            for i in range(10):
                yield i
        finally:
            closed.append(True)

    seen = []
    for number in portal.iterate(numbers()):
        seen.append(number)
        if number == 2:
            break
    assert seen == [0, 1, 2]
    assert closed == [True]
    portal.close()


def test_close_runs_final_coroutine_and_stops_thread():
    portal = Portal()
    ran = []

    async def final():
        ran.append(True)

    portal.call(asyncio.sleep(0))
    thread = portal._thread
    portal.close(final())
    assert ran == [True]
    assert thread is not None and not thread.is_alive()
