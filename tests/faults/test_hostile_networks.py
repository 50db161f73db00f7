"""Broken networks between mailkit and the real Dovecot: FaultProxy cuts, resets, stalls, slices.

Needs the local mail stack (scripts/mailstack; MAILSTACK_* / *_PORT variables pick the instance);
skipped when it cannot start. Every call must end within its timeout (+1 s) with a MailkitError,
leave no worker thread behind, and IMAP sync must lose nothing under seeded random cuts.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import warnings
from pathlib import Path

import pytest

from mailkit import errors
from mailkit.account import AsyncAccount
from mailkit.config import Timeouts
from mailkit.tls import InsecureWarning
from tests.faults.proxy import DOWN, UP, FaultPlan, FaultProxy, queued
from tests.integration.mailstack import MailStack

pytestmark = [pytest.mark.faults, pytest.mark.integration]

USER = "carol@example.test"
TIMEOUTS = Timeouts(connect=2, command=2, data=4)
SLACK = 1.0
MESSAGES = 8


@pytest.fixture(scope="module")
def stack(mailstack: MailStack) -> MailStack:
    return mailstack


@pytest.fixture(scope="module")
def mailbox(stack: MailStack) -> list[bytes]:
    """Carol's INBOX with MESSAGES known messages (the fixture returns them)."""
    stack.reset(USER)
    messages = [
        (
            f"From: sender@example.test\r\nTo: {USER}\r\nSubject: sync {i}\r\n"
            f"Message-ID: <sync{i}@faults.example.test>\r\n\r\n".encode()
            + b"".join(f"line {j} of message {i}\r\n".encode() for j in range(50 * (i + 1)))
        )
        for i in range(MESSAGES)
    ]
    for raw in messages:  # deliver() rather than deliver_many(): see the report (root-owned INBOX)
        stack.deliver(USER, raw)
    assert stack.message_count(USER) == MESSAGES
    return messages


def account(stack: MailStack, port: int, scheme: str = "imaps", **kw: object) -> AsyncAccount:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureWarning)
        return AsyncAccount(
            USER,
            password=stack.users[USER],
            ca_file=stack.ca_file,
            timeouts=TIMEOUTS,
            test_environment=True,
            **{scheme.split("+")[0].rstrip("s"): f"{scheme}://127.0.0.1:{port}"},  # type: ignore[arg-type]
            **kw,  # type: ignore[arg-type]
        )


async def sync_once(stack: MailStack, port: int, into: Path, state: Path) -> int:
    async with account(stack, port) as acct, acct.imap() as imap:
        return await imap.sync_with("INBOX", lambda _change: None, into=into, state=state)


def mirrored(into: Path) -> list[bytes]:
    dirs = [into / sub for sub in ("new", "cur") if (into / sub).is_dir()]
    return sorted(f.read_bytes() for d in dirs for f in d.iterdir())


def workers() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("mailkit-imap")]


async def test_imap_sync_loses_nothing_under_random_cuts(
    stack: MailStack, mailbox: list[bytes], fast_dir: Path
) -> None:
    """Seeded: 1-3 cuts or resets per run at random bytes, retried until a run completes."""
    runs, attempts, typed_errors = 40, 0, 0
    async with FaultProxy(("127.0.0.1", stack.imaps_port)) as proxy:
        await sync_once(stack, proxy.port, fast_dir / "measure", fast_dir / "measure.db")
        size = {UP: len(proxy.connections[0].up), DOWN: len(proxy.connections[0].down)}
        expected = mirrored(fast_dir / "measure")
        assert len(expected) == MESSAGES
        for seed in range(runs):
            rng = random.Random(seed)
            faults = [
                FaultPlan(
                    action=rng.choice(["cut", "reset"]),
                    direction=(d := rng.choice([UP, DOWN])),
                    after=rng.randrange(size[d]),
                )
                for _ in range(rng.randint(1, 3))
            ]
            proxy.set_plan(queued(faults))
            into, state = fast_dir / f"run{seed}", fast_dir / f"run{seed}.db"
            for _ in range(6):
                attempts += 1
                start = time.monotonic()
                try:
                    await sync_once(stack, proxy.port, into, state)
                    break
                except errors.MailkitError:
                    typed_errors += 1
                elapsed = time.monotonic() - start
                assert elapsed < 2 + 6 * 2 + 3 + SLACK, f"seed {seed}: an attempt took {elapsed:.1f}s"
            else:
                pytest.fail(f"seed {seed}: sync never completed")
            got = mirrored(into)
            assert got == expected, f"seed {seed}: {len(got)} mirrored, {len(set(got))} distinct"
    print(
        f"\nimap sync random cuts (real Dovecot): {runs} runs, {attempts} attempts, "
        f"{typed_errors} typed errors, 0 lost, 0 duplicates"
    )
    assert typed_errors >= runs * 0.7
    await asyncio.sleep(0.5)
    assert workers() == []


async def run_call(acct: AsyncAccount, scheme: str) -> None:
    async with acct:
        if scheme == "imaps":
            async with acct.imap() as imap:
                await imap.select("INBOX")
                await imap.search(mailbox="INBOX")
        elif scheme == "pop3s":
            await acct.pop3.stat()
        else:
            await acct.send(to="bob@example.test", subject="faults", text="x")


CASES = [
    pytest.param(
        scheme,
        name,
        id=f"{scheme}-{name}",
    )
    for scheme in ("imaps", "pop3s", "smtps")
    for name in ("stall-down", "stall-up", "latency", "fragments")
]


@pytest.mark.parametrize(("scheme", "name"), CASES)
async def test_every_call_ends_in_time_with_a_typed_error_or_succeeds(
    stack: MailStack, mailbox: list[bytes], name: str, scheme: str
) -> None:
    port = {"imaps": stack.imaps_port, "pop3s": stack.pop3s_port, "smtps": stack.submissions_port}[scheme]
    async with FaultProxy(("127.0.0.1", port)) as clean:  # where half-way is, in each direction
        await run_call(account(stack, clean.port, scheme), scheme)
        assert await clean.await_all_closed(5)
        half = {UP: len(clean.connections[0].up) // 2, DOWN: len(clean.connections[0].down) // 2}
    plan = {
        "stall-down": FaultPlan.stall(after=half[DOWN], direction=DOWN),
        "stall-up": FaultPlan.stall(after=half[UP], direction=UP),
        "latency": FaultPlan(latency=0.05),
        "fragments": FaultPlan(fragment=7, fragment_delay=0.0005),
    }[name]
    async with FaultProxy(("127.0.0.1", port), plan) as proxy:
        start = time.monotonic()
        outcome = "ok"
        try:
            await run_call(account(stack, proxy.port, scheme), scheme)
        except errors.MailkitError as exc:
            outcome = type(exc).__name__
        elapsed = time.monotonic() - start
        # IMAP's opening is bounded by connect + 6 x command + 3 s; any other step by its own timeout.
        bound = (2 + 6 * 2 + 3 if scheme == "imaps" else 2 + 2 + 4) + SLACK
        assert elapsed < bound, f"{scheme} {name}: {outcome} after {elapsed:.1f}s"
        if name in ("latency", "fragments"):
            assert outcome == "ok", f"{scheme} {name}: a slow but working network failed ({outcome})"
        else:
            assert outcome != "ok", f"{scheme} {name}: a stalled connection reported success"
        assert await proxy.await_all_closed(5), f"{scheme} {name}: the client left its socket open"
    await asyncio.sleep(0.2)
    assert workers() == []
