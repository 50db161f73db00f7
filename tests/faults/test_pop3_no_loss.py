"""No message is lost or duplicated when the connection is cut anywhere, or the sink fails.

Against the real Dovecot (plaintext port, through tests/faults/pop3_proxy.py so cuts fall on exact
command boundaries and bytes). Each test repeats download-and-delete until a run completes; in the
end the Maildir holds every original message exactly once, byte for byte, and the server is empty.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import mailkit
from mailkit.errors import MailkitError
from mailkit.pop3 import MessageInfo, Sink
from mailkit.tls import InsecureWarning
from tests.faults.pop3_proxy import CutPlan, CuttingProxy
from tests.integration.mailstack import MailStack, MailStackError

USER, PASSWORD = "bob@example.test", "bobpw"


@pytest.fixture(scope="module")
def stack() -> MailStack:
    try:
        return MailStack.start()
    except MailStackError as exc:
        pytest.fail(str(exc), pytrace=False)


def originals() -> list[bytes]:
    small = [
        b"From: s@example.test\r\nSubject: %d\r\nMessage-ID: <%d@cut.example.test>\r\n\r\n"
        b".dot line\r\nbody %d\r\n" % (i, i, i)
        for i in range(7)
    ]
    big = b"From: s@example.test\r\nSubject: big\r\n\r\n" + (b"Z" * 990 + b"\r\n") * 300
    return [*small[:3], big, *small[3:]]


def fill(stack: MailStack, messages: list[bytes]) -> None:
    stack.reset(USER)
    stack.deliver(USER, messages[0])
    stack.deliver_many(USER, messages[1:])


def saved(maildir: Path) -> list[bytes]:
    return sorted(p.read_bytes() for sub in ("new", "cur") for p in (maildir / sub).glob("*"))


def account(port: int) -> mailkit.AsyncAccount:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureWarning)
        return mailkit.AsyncAccount(
            USER,
            password=PASSWORD,
            pop3=f"pop3+insecure://127.0.0.1:{port}",
            allow_insecure=True,
            test_environment=True,
            timeouts=mailkit.Timeouts(connect=5, command=5, data=10),
        )


async def run_until_complete(
    stack: MailStack, proxy: CuttingProxy, maildir: Path, plans: Iterator[CutPlan], total: int
) -> tuple[int, list[str]]:
    """Download through the proxy with each plan in turn until a run is not cut; returns the
    number of cut runs and their error texts. Checks the no-loss invariant after every run."""
    cuts, texts = 0, []
    for plan in plans:
        proxy.arm(plan)
        async with account(proxy.port) as acct:
            error: MailkitError | None = None
            try:
                await acct.pop3.download_and_delete(into=maildir)
            except MailkitError as exc:
                error = exc
        if error is None and not proxy.fired:
            return cuts, texts
        if error is not None:
            assert proxy.fired, f"failed without a cut: {error!r}"
            cuts += 1
            texts.append(str(error))
        got = saved(maildir)
        assert len(got) == len(set(got)), f"duplicate after {plan}"
        assert len(set(got)) + stack.message_count(USER) >= total, f"lost mail after {plan}"
    pytest.fail("no run completed")


def assert_exactly_once(stack: MailStack, maildir: Path, messages: list[bytes]) -> None:
    assert saved(maildir) == sorted(messages)
    assert stack.message_count(USER) == 0
    assert list((maildir / "tmp").iterdir()) == []


async def test_cut_at_every_command_boundary_across_repeated_runs(stack: MailStack, tmp_path: Path) -> None:
    """Run k cuts after the k-th command line the client sends; runs go on until one completes."""
    messages = originals()
    fill(stack, messages)
    maildir = tmp_path / "Maildir"
    plans = (CutPlan(cut_after_line=k) for k in range(0, 500))
    async with CuttingProxy((stack.host, stack.pop3_port)) as proxy:
        cuts, texts = await run_until_complete(stack, proxy, maildir, plans, len(messages))
    assert_exactly_once(stack, maildir, messages)
    assert cuts >= 10
    assert any("RETR" in t for t in texts) and any("DELE" in t for t in texts)


async def test_each_boundary_of_a_full_session_then_recovery(stack: MailStack, tmp_path: Path) -> None:
    """For every k: a fresh mailbox, a session cut after its k-th command (QUIT included), then a
    clean run. Each time: every message exactly once, the server empty."""
    messages = originals()
    texts: list[str] = []
    cut_lines: list[bytes] = []
    async with CuttingProxy((stack.host, stack.pop3_port)) as proxy:
        for k in range(0, 100):
            fill(stack, messages)
            maildir = tmp_path / f"Maildir{k}"
            proxy.arm(CutPlan(cut_after_line=k))
            error: MailkitError | None = None
            async with account(proxy.port) as acct:
                try:
                    await acct.pop3.download_and_delete(into=maildir)
                except MailkitError as exc:
                    error = exc
            if error is None:
                assert not proxy.fired
                break
            assert proxy.fired, repr(error)
            texts.append(str(error))
            cut_lines.append(proxy.cut_line)
            assert len(set(saved(maildir))) + stack.message_count(USER) >= len(messages), f"lost at {k}"
            proxy.arm(CutPlan())
            async with account(proxy.port) as acct:
                await acct.pop3.download_and_delete(into=maildir)
            assert_exactly_once(stack, maildir, messages)
        else:
            pytest.fail("the session never ran to completion")
    for what in ("greeting", "CAPA", "AUTH", "UIDL", "RETR", "DELE"):
        assert any(f"response to {what}" in t or f"response to the {what}" in t for t in texts), what
    # QUIT leaves in the same write as the last DELEs: the cut right after it, before any answer.
    assert cut_lines[-1] == b"QUIT\r\n", cut_lines[-3:]


async def test_cut_in_the_middle_of_retr_responses(stack: MailStack, tmp_path: Path) -> None:
    messages = originals()
    fill(stack, messages)
    maildir = tmp_path / "Maildir"
    # Small steps through the first replies and the small messages, then through the big one.
    offsets = [*range(40, 2000, 60), *range(2000, 400_000, 7919)]
    plans = (CutPlan(cut_down_at=n) for n in offsets)
    async with CuttingProxy((stack.host, stack.pop3_port)) as proxy:
        _, texts = await run_until_complete(stack, proxy, maildir, plans, len(messages))
    assert_exactly_once(stack, maildir, messages)
    assert sum("RETR" in t for t in texts) >= 3, texts


def streamed_originals() -> list[bytes]:
    """Small messages around one over the streaming threshold (1 MB) whose lines are dot-stuffed
    on the wire, so cuts fall inside a streamed RETR, on stuffed dots and line ends."""
    lines = [b".", b"..x", b"plain line", b"", b".\t", b"Y" * 500]
    body = b"\r\n".join(lines[i % len(lines)] for i in range(14_000)) + b"\r\n"
    big = b"From: s@example.test\r\nSubject: streamed\r\n\r\n" + body * 1  # ~1.2 MB
    assert len(big) > 1024 * 1024
    return [*originals()[:2], big, *originals()[4:6]]


async def test_cut_inside_a_streamed_retr_leaves_no_partial_file_and_loses_nothing(
    stack: MailStack, tmp_path: Path
) -> None:
    """For each cut offset: a fresh mailbox, a run cut there, then a clean run. The big message is
    streamed into tmp/ as it arrives; a cut must leave no file in tmp/ nor a partial one in new/."""
    messages = streamed_originals()
    big = max(messages, key=len)
    # The big message's reply starts after ~1.3 KB of listings and small replies: cut all through it.
    offsets = [*range(1100, 1700, 43), *range(1700, len(big), 99_991), len(big) - 7]
    inside = 0
    async with CuttingProxy((stack.host, stack.pop3_port)) as proxy:
        for n in offsets:
            fill(stack, messages)
            maildir = tmp_path / f"Maildir{n}"
            proxy.arm(CutPlan(cut_down_at=n))
            async with account(proxy.port) as acct:
                with pytest.raises(MailkitError) as info:
                    await acct.pop3.download_and_delete(into=maildir)
            assert proxy.fired
            inside += "RETR 3" in str(info.value)
            # No partial message anywhere: tmp/ is clean and everything in new/ is an original.
            assert list((maildir / "tmp").iterdir()) == [], f"partial file left after a cut at {n}"
            got = saved(maildir)
            assert set(got) <= set(messages) and len(got) == len(set(got)), f"bad Maildir after {n}"
            assert big not in got, f"the cut big message counted as saved at {n}"
            assert stack.message_count(USER) == len(messages), "deleted before QUIT"
            proxy.arm(CutPlan())
            async with account(proxy.port) as acct:
                await acct.pop3.download_and_delete(into=maildir)
            assert_exactly_once(stack, maildir, messages)
    assert inside >= 12, f"only {inside} cuts fell inside the streamed RETR"


class Refusing(Sink):
    """Keeps messages in memory, refusing those whose body mentions one of ``refuse``."""

    def __init__(self, refuse: tuple[bytes, ...], error: Exception) -> None:
        self.refuse = refuse
        self.error = error
        self.kept: list[bytes] = []

    async def save(self, raw: bytes, info: MessageInfo) -> str:
        if any(word in raw for word in self.refuse):
            raise self.error
        self.kept.append(raw)
        return "memory"


@pytest.mark.parametrize(
    "error",
    [RuntimeError("sink bug"), OSError(errno.ENOSPC, "No space left on device")],
    ids=["raise", "enospc"],
)
async def test_a_failing_sink_deletes_nothing_it_refused(stack: MailStack, error: Exception) -> None:
    messages = originals()
    fill(stack, messages)
    sink = Refusing((b"body 1\r\n", b"Subject: big"), error)
    async with account(stack.pop3_port) as acct:
        report = await acct.pop3.download_and_delete(into=sink)
    assert len(report.errors) == 2 and all(e.error is error for e in report.errors)
    assert len(report.deleted) == len(messages) - 2 == len(sink.kept)
    assert stack.message_count(USER) == 2
    # The refused ones are still there and come on the next run once the sink accepts them.
    sink.refuse = ()
    async with account(stack.pop3_port) as acct:
        again = await acct.pop3.download_and_delete(into=sink)
    assert len(again.downloaded) == 2 and stack.message_count(USER) == 0
    assert sorted(sink.kept) == sorted(messages)


@contextlib.contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A real small filesystem at ``mount`` (unmounted afterwards): a disk that fills up."""
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True, check=False
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "tiny", "64k") as mount:
        yield mount


async def test_a_full_disk_deletes_nothing_that_was_not_saved(
    stack: MailStack, tiny_tmpfs: Path, tmp_path: Path
) -> None:
    messages = [b"Subject: %d\r\n\r\n" % i + b"F" * 20_000 + b"\r\n" for i in range(8)]
    fill(stack, messages)
    maildir = tiny_tmpfs / "Maildir"
    async with account(stack.pop3_port) as acct:
        report = await acct.pop3.download_and_delete(into=maildir, state=tmp_path / "state.db")
    on_disk = saved(maildir)
    assert 0 < len(on_disk) < len(messages)
    assert all(isinstance(e.error, OSError) and e.error.errno == errno.ENOSPC for e in report.errors)
    assert len(report.errors) == len(messages) - len(on_disk)
    assert stack.message_count(USER) == len(messages) - len(on_disk)
    assert list((maildir / "tmp").iterdir()) == []  # no partial files left behind
    # With room again (a bigger Maildir), the rest arrives and nothing is fetched twice.
    bigger = tmp_path / "Maildir"
    async with account(stack.pop3_port) as acct:
        rest = await acct.pop3.download_and_delete(into=bigger, state=tmp_path / "state.db")
    assert len(rest.downloaded) == len(report.errors) and stack.message_count(USER) == 0
    assert sorted(on_disk + saved(bigger)) == sorted(messages)


async def test_a_full_disk_while_streaming_a_big_message_keeps_it_on_the_server(
    stack: MailStack, tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "small", "1m") as mount:
        messages = streamed_originals()  # the big one (> 1 MB) cannot fit; the small ones can
        fill(stack, messages)
        maildir = mount / "Maildir"
        async with account(stack.pop3_port) as acct:
            report = await acct.pop3.download_and_delete(into=maildir, state=tmp_path / "state.db")
        assert [len(e.error.args) and e.error.errno for e in report.errors] == [errno.ENOSPC]  # type: ignore[attr-defined]
        assert report.errors[0].size > 1024 * 1024
        assert stack.message_count(USER) == 1  # only the big one stays
        assert list((maildir / "tmp").iterdir()) == []  # the partial file was removed
        assert saved(maildir) == sorted(m for m in messages if len(m) < 1024 * 1024)
        # With room, the next run streams it and deletes it.
        async with account(stack.pop3_port) as acct:
            rest = await acct.pop3.download_and_delete(into=tmp_path / "Maildir", state=tmp_path / "state.db")
        assert [s.size for s in rest.downloaded] == [max(len(m) for m in messages)]
        assert saved(tmp_path / "Maildir") == [max(messages, key=len)]
        assert stack.message_count(USER) == 0


async def test_a_full_disk_under_the_state_file_aborts_without_deleting(
    stack: MailStack, tiny_tmpfs: Path
) -> None:
    messages = [b"Subject: %d\r\n\r\n" % i + b"G" * 15_000 + b"\r\n" for i in range(8)]
    fill(stack, messages)
    maildir = tiny_tmpfs / "Maildir"  # the state file lives here too, by default

    async def three_runs() -> None:
        async with account(stack.pop3_port) as acct:
            for _ in range(3):
                await acct.pop3.download_and_delete(into=maildir)

    with pytest.raises(MailkitError):
        await three_runs()
    on_disk = saved(maildir)
    # Whatever happened, nothing that is not on disk was deleted from the server.
    assert len(set(on_disk)) + stack.message_count(USER) >= len(messages)
    assert set(on_disk) <= set(messages)
    assert os.path.ismount(tiny_tmpfs)
