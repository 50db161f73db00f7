"""IMAP IDLE (``watch``) against the real stack: Postfix delivery seen fast, recovery after a cut, the CLI."""

from __future__ import annotations

import asyncio
import imaplib
import json
import os
import select
import signal
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest

import mailkit
from mailkit.imap import Change, ChangeKind
from tests.faults.proxy import FaultProxy
from tests.integration.mailstack import REPO_ROOT, MailStack

ALICE = "alice@example.test"


def _account(ms: MailStack, url: str) -> mailkit.AsyncAccount:
    return mailkit.AsyncAccount(
        ALICE, password="alicepw", imap=url, ca_file=str(ms.ca_file), test_environment=True
    )


def _smtp_deliver(ms: MailStack, raw: bytes) -> None:
    with smtplib.SMTP(ms.host, ms.smtp_port, timeout=10) as smtp:
        smtp.sendmail("bob@example.test", [ALICE], raw)


async def _next(it: object, timeout: float) -> Change:
    return await asyncio.wait_for(it.__anext__(), timeout)  # type: ignore[attr-defined]


async def test_watch_sees_postfix_delivery_within_a_second(clean_mailstack: MailStack) -> None:
    ms = clean_mailstack
    async with _account(ms, ms.url("imaps")) as acct, acct.imap() as imap:
        it = imap.watch("INBOX")
        pending = asyncio.ensure_future(_next(it, 30))
        await asyncio.sleep(1.0)  # baseline taken, IDLE running
        assert not pending.done()

        def send() -> float:
            _smtp_deliver(ms, b"Subject: idle test\r\n\r\nhi\r\n")
            return time.monotonic()

        sent_at = await asyncio.to_thread(send)
        change = await pending
        seen_at = time.monotonic()
        assert change.kind is ChangeKind.NEW and change.mailbox == "INBOX"
        assert seen_at - sent_at < 1.0, f"IDLE saw the delivery after {seen_at - sent_at:.2f} s"

        # flags set by another client arrive as a flags change
        async with acct.imap("INBOX") as other:
            pending = asyncio.ensure_future(_next(it, 10))
            await asyncio.sleep(0.3)
            await other.add_flags([change.uid or 0], "\\Seen")
            flagged = await pending
        assert flagged.kind is ChangeKind.FLAGS and "\\Seen" in flagged.flags
        await it.aclose()


async def test_watch_recovers_after_connection_cut(clean_mailstack: MailStack) -> None:
    ms = clean_mailstack
    with FaultProxy((ms.host, ms.imaps_port)) as proxy:
        async with _account(ms, f"imaps://127.0.0.1:{proxy.port}") as acct, acct.imap() as imap:
            it = imap.watch("INBOX", backoff=(0.2, 2.0), heartbeat=3.0)
            pending = asyncio.ensure_future(_next(it, 30))
            await asyncio.sleep(1.0)
            assert proxy.connection_count == 1
            proxy.reset_all()
            # delivered while the connection is down: caught up after reconnecting
            ms.deliver(ALICE, b"Subject: during outage\r\n\r\nx\r\n")
            change = await pending
            assert change.kind is ChangeKind.NEW
            assert proxy.connection_count >= 2
            # IDLE runs again on the new connection. (Dovecot does not always notify an IDLE
            # session opened right after a doveadm save; the 3 s heartbeat re-checks anyway.)
            await asyncio.sleep(0.5)
            await asyncio.to_thread(_smtp_deliver, ms, b"Subject: after reconnect\r\n\r\ny\r\n")
            again = await _next(it, 10)
            assert again.kind is ChangeKind.NEW and again.uid is not None and again.uid > (change.uid or 0)
            await it.aclose()


# pytest started in the background without job control (`pytest ... &`, some CI runners) has SIGINT
# ignored, and children inherit that: Python then installs no KeyboardInterrupt handler. The child
# restores it itself (a preexec_fn would do it between fork and exec, unsafe with the test's threads).
_MAILKIT_WITH_CTRL_C = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from mailkit.cli import main; main(sys.argv[1:])"
)


def _cli_watch(tmp_path: Path, *options: str) -> subprocess.Popen[bytes]:
    """``mailkit imap watch`` for alice in a child process; ``options`` name the server."""
    pw = tmp_path / "pw"
    pw.write_text("alicepw\n")
    env = {**os.environ, "MAILKIT_TEST_ENVIRONMENT": "1", "PYTHONPATH": str(REPO_ROOT)}
    args = [sys.executable, "-c", _MAILKIT_WITH_CTRL_C, "imap", "watch", "--mailbox", "INBOX",
            "--address", ALICE, "--password-file", str(pw), *options]  # fmt: skip
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def test_a_change_sent_together_with_the_idle_go_ahead_is_seen_at_once(
    clean_mailstack: MailStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Mail that arrives after the baseline and before IDLE is reported by Dovecot in the same write
    # as "+ idling"; imaplib reads both at once, and a poll() on the socket never sees the second.
    ms = clean_mailstack
    send_command = imaplib.IMAP4._command
    delivered = threading.Event()

    def command(self: imaplib.IMAP4, name: str, *args: object) -> object:
        if name == "IDLE" and not delivered.is_set():
            _smtp_deliver(ms, b"Subject: just before IDLE\r\n\r\nhi\r\n")
            ms.wait_for_messages(ALICE, 1)
            delivered.set()
        return send_command(self, name, *args)

    monkeypatch.setattr(imaplib.IMAP4, "_command", command)
    async with _account(ms, ms.url("imaps")) as acct, acct.imap() as imap:
        it = imap.watch("INBOX", heartbeat=60.0)  # no heartbeat comes to the rescue in time
        change = await _next(it, 5)
        assert delivered.is_set()
        assert change.kind is ChangeKind.NEW and change.mailbox == "INBOX"
        await it.aclose()


def _wait_for_line(stream: IO[bytes], needle: bytes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0 and select.select([stream], [], [], left)[0], f"no {needle!r} within {timeout} s"
        line = stream.readline()
        assert line, f"the stream ended before {needle!r}"
        if needle in line:
            return


def test_cli_watch_prints_one_json_line_per_change(clean_mailstack: MailStack, tmp_path: Path) -> None:
    ms = clean_mailstack
    proc = _cli_watch(tmp_path, "-v", "--imap", ms.url("imap"), "--ca-file", str(ms.ca_file))
    with proc:  # closes the pipes
        try:
            assert proc.stdout is not None and proc.stderr is not None
            _wait_for_line(proc.stderr, b" IDLE'", 15)  # the trace: baseline taken, idling
            _smtp_deliver(ms, b"Subject: cli watch\r\n\r\nhi\r\n")
            ready, _, _ = select.select([proc.stdout], [], [], 10)
            assert ready, "no JSON line from mailkit imap watch within 10 s"
            doc = json.loads(proc.stdout.readline())
            assert doc["kind"] == "new" and doc["mailbox"] == "INBOX" and isinstance(doc["uid"], int)
        finally:
            proc.terminate()
            proc.wait(10)


def test_cli_watch_stops_on_ctrl_c(clean_mailstack: MailStack, tmp_path: Path) -> None:
    ms = clean_mailstack
    with FaultProxy((ms.host, ms.imap_port)) as proxy:  # plaintext on loopback: the test sees IDLE start
        proc = _cli_watch(tmp_path, "--imap", f"imap+insecure://127.0.0.1:{proxy.port}", "--allow-insecure")
        try:
            deadline = time.monotonic() + 15
            while not (proxy.connections and b" IDLE\r\n" in bytes(proxy.connections[0].up)):
                assert time.monotonic() < deadline, "mailkit imap watch did not start IDLE within 15 s"
                time.sleep(0.05)
            started = time.monotonic()
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=10)
            took = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert took < 3.0, f"Ctrl-C took {took:.1f} s"
        assert b"Traceback" not in err, err.decode()
        assert proc.returncode in (1, 130, -signal.SIGINT), (proc.returncode, err)
        assert proxy.wait_all_closed(5)  # the connection was closed, not left to the server
