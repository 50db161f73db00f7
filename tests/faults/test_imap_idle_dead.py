"""IDLE (``watch``) over links that die silently, re-issued IDLE, and stopping the blocking face.

Real Dovecot IMAPS behind the fault proxy. A *dead* link is a frozen proxy connection: both
sockets stay open and nothing crosses any more, no FIN, no RST (a NAT that forgot the flow, a
pulled cable); only a check that expects an answer can find it.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

import mailkit
from mailkit.config import Timeouts
from mailkit.imap import IMAP, Change, ChangeKind
from tests.faults.proxy import UP, FaultPlan, FaultProxy, queued
from tests.integration.mailstack import MailStack

ALICE = "alice@example.test"
HEARTBEAT = 2.0  # seconds of silence before watch checks the link
COMMAND = 2.0  # the account's connect and command timeouts
# idle_check polls once a second, plus the first reconnect delay and scheduling noise
SLACK = 2.5


@pytest.fixture
def stack(mailstack: MailStack) -> MailStack:
    mailstack.reset(ALICE)
    return mailstack


def _options(ms: MailStack, port: int, *, plaintext: bool = False) -> dict[str, Any]:
    """IMAPS by default; ``plaintext`` (loopback only) when a test reads the commands on the wire."""
    return {
        "password": "alicepw",
        "imap": f"imap+insecure://127.0.0.1:{port}" if plaintext else f"imaps://127.0.0.1:{port}",
        "allow_insecure": plaintext,
        "ca_file": str(ms.ca_file),
        "test_environment": True,
        "timeouts": Timeouts(connect=COMMAND, command=COMMAND),
    }


def _raw(subject: str) -> bytes:
    return f"From: bob@example.test\r\nTo: {ALICE}\r\nSubject: {subject}\r\n\r\n{subject}\r\n".encode()


def _subject(change: Change) -> str:
    """A new message's subject; other changes as "<kind> <uid> <flags>"."""
    if change.kind is not ChangeKind.NEW:
        return f"{change.kind.value} {change.uid} {' '.join(change.flags)}".rstrip()
    assert change.raw is not None
    return str(email.message_from_bytes(change.raw)["Subject"])


def _idles(proxy: FaultProxy, index: int | None = None) -> int:
    """IDLE commands the client sent (on one connection, or on all); plaintext connections only."""
    conns = proxy.connections if index is None else [proxy.connections[index]]
    return sum(bytes(c.up).count(b" IDLE\r\n") for c in conns)


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """``_wait`` off the event loop, which goes on running the watch meanwhile."""
    await asyncio.to_thread(_wait, condition, timeout, what)


class Collector:
    """Consumes a watch in a task, keeping each change with the time it arrived."""

    def __init__(self, changes: AsyncIterator[Change]) -> None:
        self.changes: list[Change] = []
        self.times: list[float] = []
        self.error: BaseException | None = None
        self._task = asyncio.ensure_future(self._run(changes))

    async def _run(self, changes: AsyncIterator[Change]) -> None:
        try:
            async for change in changes:
                self.changes.append(change)
                self.times.append(time.monotonic())
        except Exception as exc:  # noqa: BLE001 - the test reports it
            self.error = exc

    async def wait(self, count: int, timeout: float) -> None:
        def ready() -> bool:
            if self.error is not None:
                raise AssertionError(f"watch failed: {self.error!r}") from self.error
            if self._task.done():
                raise AssertionError("watch ended")
            return len(self.changes) >= count

        await _until(ready, timeout, f"{count} change(s); have {[_subject(c) for c in self.changes]}")

    def finished(self) -> bool:
        return self._task.done()

    def subjects(self) -> list[str]:
        return [_subject(c) for c in self.changes]

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def _deliver(ms: MailStack, subject: str) -> None:
    await asyncio.to_thread(ms.deliver, ALICE, _raw(subject))


@contextlib.asynccontextmanager
async def _watching(
    ms: MailStack, proxy: FaultProxy, *, plaintext: bool = False, **options: object
) -> AsyncIterator[Collector]:
    """A running watch through ``proxy``, which has already reported one message ("before")."""
    account = mailkit.AsyncAccount(ALICE, **_options(ms, proxy.port, plaintext=plaintext))
    async with account as acct, acct.imap() as imap:
        seen = Collector(imap.watch("INBOX", bodies=True, **options))  # type: ignore[arg-type]
        try:
            await asyncio.sleep(0.5)  # the baseline (an empty INBOX) is taken
            await _deliver(ms, "before")
            await seen.wait(1, 10)
            await asyncio.sleep(0.3)  # idling again
            yield seen
        finally:
            await seen.stop()


async def test_dead_link_is_found_within_heartbeat_plus_timeout_and_nothing_is_lost(stack: MailStack) -> None:
    ms = stack
    with FaultProxy((ms.host, ms.imaps_port)) as proxy:
        async with _watching(ms, proxy, heartbeat=HEARTBEAT, backoff=(0.1, 1.0)) as seen:
            frozen_at = time.monotonic()
            proxy.freeze()
            # Meanwhile (Dovecot's EXISTS and FETCH for these vanish on the dead link): a new
            # message, and another client (not through the proxy) marks the first one seen.
            await _deliver(ms, "during the outage")
            first = seen.changes[0].uid or 0
            direct = mailkit.AsyncAccount(ALICE, **_options(ms, ms.imaps_port))
            async with direct as other, other.imap("INBOX") as imap:
                await imap.add_flags([first], "\\Seen")
            await seen.wait(3, HEARTBEAT + COMMAND + SLACK + 10)

            dead, fresh = proxy.connections[0], proxy.connections[1]
            found = fresh.opened_at - frozen_at
            assert found <= HEARTBEAT + COMMAND + SLACK, f"dead link replaced after {found:.1f} s"
            # Found by a check that got no answer (DONE went into the void), not by a FIN or RST:
            assert dead.dropped[UP] > 0 and not dead.closed.is_set()
            assert proxy.connection_count == 2

            await _deliver(ms, "after")
            await seen.wait(4, 10)
            # Several quiet heartbeats on the new link: each re-checks and catches up, none repeats.
            await asyncio.sleep(2 * HEARTBEAT + 1)
            got = seen.subjects()
            assert got[0] == "before" and got[3] == "after"
            assert sorted(got[1:3]) == sorted(["during the outage", f"flags {first} \\Seen"]), got
            assert len(got) == 4
            news = [c.uid or 0 for c in seen.changes if c.kind is ChangeKind.NEW]
            assert len(set(news)) == 3 and news == sorted(news)
            assert proxy.connection_count == 2


async def test_outage_longer_than_detection_is_retried_with_backoff(stack: MailStack) -> None:
    ms = stack
    with FaultProxy((ms.host, ms.imaps_port)) as proxy:
        async with _watching(ms, proxy, heartbeat=HEARTBEAT, backoff=(0.5, 2.0)) as seen:
            proxy.freeze(new_connections=True)  # new connections die too: the outage lasts
            await _deliver(ms, "while down")
            # detection, then reconnects that get no TLS handshake, each a connect timeout apart
            await _until(lambda: proxy.connection_count >= 4, HEARTBEAT + COMMAND + SLACK + 12, "3 retries")
            opened = [c.opened_at for c in proxy.connections[1:4]]
            gaps = [b - a for a, b in itertools.pairwise(opened)]
            assert gaps[1] > gaps[0] + 0.5, f"no backoff between retries: {gaps}"
            assert len(seen.changes) == 1
            proxy.thaw()
            await seen.wait(2, COMMAND + 2.0 + SLACK + 10)
            await asyncio.sleep(1.0)
            assert seen.subjects() == ["before", "while down"]


async def test_servers_that_hang_up_during_reconnect_are_retried(stack: MailStack) -> None:
    ms = stack
    with FaultProxy((ms.host, ms.imaps_port)) as proxy:
        async with _watching(ms, proxy, heartbeat=HEARTBEAT, backoff=(0.1, 0.5)) as seen:
            # the next two connections are closed before the TLS handshake ends, in both ways
            proxy.set_plan(queued([FaultPlan.cut(after=0), FaultPlan.reset(after=0)]))
            proxy.freeze()
            await _deliver(ms, "across hang-ups")
            await seen.wait(2, HEARTBEAT + COMMAND + SLACK + 10)
            assert seen.subjects() == ["before", "across hang-ups"]
            assert proxy.connection_count == 4
            assert proxy.connections[1].fired and proxy.connections[2].fired


@pytest.mark.filterwarnings("ignore::mailkit.tls.InsecureWarning")
async def test_idle_is_reissued_and_no_change_is_lost_across_reissues(stack: MailStack) -> None:
    ms = stack
    reissue = 1.5
    with FaultProxy((ms.host, ms.imap_port)) as proxy:  # plaintext: the proxy counts IDLE commands
        async with _watching(ms, proxy, plaintext=True, reissue_after=reissue, heartbeat=60.0) as seen:
            start, quiet = _idles(proxy), 4 * reissue + 0.5
            await asyncio.sleep(quiet)
            reissued = _idles(proxy) - start
            # once per reissue_after while quiet (every IDLE ends with DONE first), never spinning
            assert 3 <= reissued <= 5, reissued
            assert bytes(proxy.connections[0].up).count(b"DONE\r\n") >= reissued

            # deliveries spread over several re-issues, some landing between DONE and the next IDLE
            subjects = [f"m{i}" for i in range(12)]
            for subject in subjects:
                await _deliver(ms, subject)
                await asyncio.sleep(reissue / 4)
            await seen.wait(1 + len(subjects), 15)
            await asyncio.sleep(reissue * 2)
            assert seen.subjects() == ["before", *subjects]
            assert len({c.uid for c in seen.changes}) == 1 + len(subjects)
            assert proxy.connection_count == 1


async def test_async_watch_ends_when_its_session_is_closed(stack: MailStack) -> None:
    ms = stack
    with FaultProxy((ms.host, ms.imaps_port)) as proxy:
        async with mailkit.AsyncAccount(ALICE, **_options(ms, proxy.port)) as acct:
            imap = acct.imap()
            await imap.connect()
            seen = Collector(imap.watch("INBOX", heartbeat=60.0))
            await asyncio.sleep(1.0)  # idling
            started = time.monotonic()
            await imap.aclose()
            await _until(seen.finished, 5, "the watch to end")
            assert time.monotonic() - started < 3.0
            assert seen.error is None, seen.error
            assert seen.changes == []
        assert await proxy.await_all_closed(5)


def test_reissue_after_beyond_29_minutes_is_refused(stack: MailStack) -> None:
    account = mailkit.Account(ALICE, **_options(stack, stack.imaps_port))
    with account as acct, acct.imap() as imap, pytest.raises(mailkit.ConfigError):
        next(iter(imap.watch("INBOX", reissue_after=30 * 60)))


# --- the blocking face -----------------------------------------------------------------------------


@contextlib.contextmanager
def _consuming(
    imap: IMAP, **options: object
) -> Iterator[tuple[list[Change], list[BaseException], threading.Thread]]:
    got: list[Change] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            for change in imap.watch("INBOX", **options):
                got.append(change)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    yield got, errors, thread


@pytest.mark.filterwarnings("ignore::mailkit.tls.InsecureWarning")
@pytest.mark.parametrize("closing", ["imap", "account"])
def test_blocking_watch_ends_cleanly_when_closed_from_another_thread(stack: MailStack, closing: str) -> None:
    ms = stack
    with FaultProxy((ms.host, ms.imap_port)) as proxy:  # plaintext: the test reads DONE and LOGOUT
        acct = mailkit.Account(ALICE, **_options(ms, proxy.port, plaintext=True))
        imap = acct.imap()
        imap.__enter__()
        with _consuming(imap, heartbeat=60.0) as (got, errors, thread):
            _wait(lambda: _idles(proxy) >= 1, 10, "IDLE")
            ms.deliver(ALICE, _raw("one"))
            _wait(lambda: len(got) == 1, 10, "the change")
            _wait(lambda: _idles(proxy) >= 2, 10, "IDLE again")
            started = time.monotonic()
            if closing == "imap":
                imap.close()
            else:
                acct.close()
            thread.join(10)
            took = time.monotonic() - started
        assert not thread.is_alive(), "the consumer still waits for a change"
        assert errors == [], errors  # the loop just ends: no error for an intended stop
        assert took < 3.0, f"stopping took {took:.1f} s"
        up = bytes(proxy.connections[0].up)
        assert up.endswith(b" LOGOUT\r\n") and b"DONE\r\n" in up  # left IDLE, logged out
        assert proxy.wait_all_closed(5)
        acct.close()


def test_blocking_watch_left_by_break_keeps_the_connection_usable(stack: MailStack) -> None:
    ms = stack
    with FaultProxy((ms.host, ms.imaps_port)) as proxy:
        with mailkit.Account(ALICE, **_options(ms, proxy.port)) as acct, acct.imap() as imap:
            threading.Timer(1.0, ms.deliver, (ALICE, _raw("one"))).start()
            for change in imap.watch("INBOX"):
                assert change.kind is ChangeKind.NEW
                break
            assert [f.name for f in imap.folders() if f.name == "INBOX"] == ["INBOX"]
            assert imap.search(mailbox="INBOX") == [change.uid]
        assert proxy.connection_count == 1
