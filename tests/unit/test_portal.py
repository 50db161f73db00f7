"""The portal: the sync face runs coroutines and async iterators on one background loop."""

import asyncio
import threading
import time

import pytest

from mailkit._portal import Portal
from mailkit.errors import MailkitError


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


def test_close_ends_calls_still_running_in_other_threads():
    portal = Portal()
    unwound = threading.Event()
    outcome: list[BaseException | str] = []

    async def long_call() -> str:
        try:
            await asyncio.sleep(100)
        finally:
            unwound.set()  # cleanup in the coroutine ran (a `finally` closing a socket, say)
        return "finished"

    def caller() -> None:
        try:
            outcome.append(portal.call(long_call()))
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            outcome.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    deadline = time.monotonic() + 5
    while portal._loop is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # the call is now waiting on the loop
    portal.close()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the caller was left waiting on a stopped loop"
    assert unwound.is_set()
    assert len(outcome) == 1 and isinstance(outcome[0], MailkitError)
    assert "closed while the call was running" in str(outcome[0])


@pytest.fixture
def ctrl_c():
    """``ctrl_c(seconds)``: SIGINT to this process, as a terminal would send it; raised as
    KeyboardInterrupt in the main thread even when the tests run with SIGINT ignored (a
    background job)."""
    import os
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timers = []

    def send(seconds: float) -> None:
        timers.append(threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT)))
        timers[-1].start()

    yield send
    for timer in timers:
        timer.cancel()
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_returns_only_after_the_coroutine_unwound(ctrl_c):
    portal = Portal()
    unwound = []

    async def slow_to_unwind():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.3)  # e.g. leaving IDLE, closing a socket
            unwound.append(True)
            raise

    ctrl_c(0.2)
    with pytest.raises(KeyboardInterrupt):
        portal.call(slow_to_unwind())
    assert unwound == [True]  # before call() gave the interrupt back, not after
    portal.close()


def test_ctrl_c_while_iterating_closes_the_generator_after_it_unwound(ctrl_c):
    portal = Portal()
    events = []

    async def watch():
        try:
            yield 1
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                await asyncio.sleep(0.3)
                events.append("unwound")
                raise
            yield 2
        finally:
            events.append("closed")

    ctrl_c(0.2)
    with pytest.raises(KeyboardInterrupt):  # not "aclose(): asynchronous generator is already running"
        for _ in portal.iterate(watch()):
            pass
    assert events == ["unwound", "closed"]
    portal.close()
