"""Wire's per-connection read timer (moved, not re-created, per read) and its reply cache."""

from __future__ import annotations

import asyncio

import pytest

from mailkit.errors import TimeoutError
from mailkit.smtp._wire import REPLY_CACHE, Wire


class _Transport:
    def __init__(self) -> None:
        self.closed = False

    def set_protocol(self, protocol: object) -> None:
        pass

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def abort(self) -> None:
        self.closed = True

    close = abort


def _wire() -> tuple[Wire, _Transport]:
    transport = _Transport()
    return Wire(transport, "test"), transport  # type: ignore[arg-type]


def _later(delay: float, wire: Wire, data: bytes) -> None:
    asyncio.get_running_loop().call_later(delay, wire.data_received, data)


async def test_a_shorter_timeout_after_a_longer_one_still_fires_on_time() -> None:
    wire, transport = _wire()
    _later(0.01, wire, b"250 ok\r\n")
    await wire.read(1, timeout=30)  # leaves a timer 30 s out
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(TimeoutError):
        await wire.read(1, timeout=0.05)
    assert loop.time() - start < 1.0
    assert transport.closed and not wire.usable


async def test_an_earlier_timer_re_arms_for_a_later_deadline() -> None:
    wire, transport = _wire()
    _later(0.01, wire, b"250 ok\r\n")
    await wire.read(1, timeout=0.1)  # a timer at ~0.1 s stays armed
    # This read may take 0.3 s: the old timer fires first and must not end it.
    _later(0.2, wire, b"250 late\r\n")
    (reply,) = await wire.read(1, timeout=0.3)
    assert reply.text == "late" and not transport.closed and wire.usable


async def test_no_timeout_read_survives_a_leftover_timer() -> None:
    wire, transport = _wire()
    _later(0.01, wire, b"250 ok\r\n")
    await wire.read(1, timeout=0.05)
    _later(0.15, wire, b"250 done\r\n")
    (reply,) = await wire.read(1, timeout=None)
    assert reply.text == "done" and not transport.closed


async def test_close_cancels_the_timer() -> None:
    wire, _ = _wire()
    _later(0.01, wire, b"250 ok\r\n")
    await wire.read(1, timeout=30)
    assert wire._timer is not None
    wire.close()
    assert wire._timer is None


async def test_repeated_replies_are_shared_and_the_cache_is_bounded() -> None:
    wire, _ = _wire()
    wire.data_received(b"250 2.1.0 Ok\r\n250 2.1.0 Ok\r\n250-a\r\n250 2.1.0 Ok\r\n")
    first, second, multi = await wire.read(3, timeout=1)
    assert first is second and (first.code, first.enhanced, first.text) == (250, "2.1.0", "Ok")
    assert multi.text == "a\n2.1.0 Ok" and multi.enhanced is None  # multi-line: parsed as a whole
    for i in range(REPLY_CACHE * 2):
        wire.data_received(b"250 2.0.0 Ok: queued as %d\r\n" % i)
        (reply,) = await wire.read(1, timeout=1)
        assert reply.text == f"Ok: queued as {i}"
    assert len(wire._parsed) <= REPLY_CACHE
