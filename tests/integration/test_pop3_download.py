"""POP3 against the real Dovecot: the client's commands, download-and-delete, keep mode, the CLI."""

from __future__ import annotations

import os
import sqlite3
import ssl
import tracemalloc
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

import mailkit
from mailkit.cli import cli
from mailkit.config import Endpoint, Password
from mailkit.errors import AuthenticationError, MailkitError, PermanentError
from mailkit.pop3 import POP3Client, POP3Session
from mailkit.pop3._protocol import Command
from mailkit.tls import InsecureWarning
from tests.integration.mailstack import MailStack

USER, PASSWORD = "carol@example.test", "carolpw"


def fill(stack: MailStack, messages: list[bytes], user: str = USER) -> None:
    """Empty the user's INBOX and store ``messages`` (the first through doveadm, which creates the
    mailbox with the right owner; the rest in bulk)."""
    stack.reset(user)
    stack.deliver(user, messages[0])
    if len(messages) > 1:
        stack.deliver_many(user, messages[1:])


def message(i: int, extra: bytes = b"") -> bytes:
    return (
        b"From: sender@example.test\r\nTo: carol@example.test\r\nSubject: message %d\r\n"
        b"Message-ID: <%d@pop3.example.test>\r\n\r\nbody of %d\r\n.a line with a dot\r\n..two\r\n"
        % (i, i, i)
        + extra
    )


def maildir_messages(path: Path) -> list[bytes]:
    return sorted(p.read_bytes() for sub in ("new", "cur") for p in (path / sub).glob("*"))


def account(stack: MailStack, name: str, **kw: object) -> mailkit.AsyncAccount:
    return mailkit.AsyncAccount(
        USER,
        password=PASSWORD,
        pop3=stack.url(name),
        ca_file=stack.ca_file,
        test_environment=True,
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("endpoint", ["pop3s", "pop3"])  # implicit TLS on 995-style, STLS on 110-style
async def test_download_and_delete_many_messages_a_20_mb_one_and_a_200_kb_line(
    mailstack: MailStack, tmp_path: Path, endpoint: str
) -> None:
    big = message(10_000, (b"B" * 998 + b"\r\n") * 21_000)  # ~20 MB
    long_line = message(10_001, b"L" * 200_000 + b"\r\n")
    messages = [message(i) for i in range(300)] + [big, long_line]
    fill(mailstack, messages)
    async with account(mailstack, endpoint) as acct:
        report = await acct.pop3.download_and_delete(into=tmp_path / "Maildir")
    assert report.ok, report.errors
    assert len(report.downloaded) == 302 and len(report.deleted) == 302 and report.skipped == ()
    assert maildir_messages(tmp_path / "Maildir") == sorted(messages)  # byte for byte
    assert mailstack.message_count(USER) == 0
    assert (tmp_path / "Maildir" / ".mailkit-pop3.db").exists()
    assert os.listdir(tmp_path / "Maildir" / "tmp") == []  # the big one was streamed through tmp/


def test_keep_mode_fetches_each_message_once_over_several_runs(mailstack: MailStack, tmp_path: Path) -> None:
    fill(mailstack, [message(i) for i in range(20)])
    maildir, state = tmp_path / "Maildir", tmp_path / "state.db"
    with mailkit.Account(
        USER, password=PASSWORD, pop3=mailstack.url("pop3s"), ca_file=mailstack.ca_file, test_environment=True
    ) as acct:
        first = acct.pop3.download_and_delete(into=maildir, keep=True, state=state)
        assert len(first.downloaded) == 20 and first.deleted == ()
        second = acct.pop3.download_and_delete(into=maildir, keep=True, state=state)
        assert second.downloaded == () and len(second.skipped) == 20
        mailstack.deliver(USER, message(99))
        third = acct.pop3.download_and_delete(into=maildir, keep=True, state=state)
        assert [s.size for s in third.downloaded] == [len(message(99))]
        assert mailstack.message_count(USER) == 21
        # Age the records by 8 days: delete_after_days=7 now removes them from the server.
        with sqlite3.connect(state) as db:
            db.execute("UPDATE pop3_saved SET saved_at = saved_at - 8 * 86400")
        fourth = acct.pop3.download_and_delete(into=maildir, keep=True, delete_after_days=7, state=state)
        assert fourth.downloaded == () and len(fourth.deleted) == 21
    assert mailstack.message_count(USER) == 0
    assert maildir_messages(maildir) == sorted([message(i) for i in range(20)] + [message(99)])


async def test_limits_leave_big_messages_on_the_server(mailstack: MailStack, tmp_path: Path) -> None:
    fill(mailstack, [message(1), message(2, b"x" * 50_000 + b"\r\n"), message(3), message(4)])
    async with account(mailstack, "pop3s") as acct:
        report = await acct.pop3.download_and_delete(into=tmp_path / "md", max_size=10_000, max_messages=2)
        assert len(report.downloaded) == 2
        assert sorted(s.reason for s in report.skipped) == ["max_messages", "too large"]
        assert mailstack.message_count(USER) == 2
        assert await acct.pop3.stat() == (2, pytest.approx(50_200, abs=300))


async def test_client_commands_one_by_one(mailstack: MailStack, ssl_context: ssl.SSLContext) -> None:
    fill(mailstack, [message(1), message(2), message(3)])
    endpoint = Endpoint.parse(mailstack.url("pop3"))
    async with POP3Client(endpoint, ssl_context=ssl_context) as pop:
        assert "STLS" not in pop.capabilities  # asked again over TLS
        await pop.login(Password(USER, PASSWORD))
        assert await pop.stat() == (3, sum(len(message(i)) for i in (1, 2, 3)))
        sizes = await pop.list()
        assert sizes == {1: len(message(1)), 2: len(message(2)), 3: len(message(3))}
        uidls = await pop.uidl()
        assert len(set(uidls.values())) == 3
        assert await pop.retr(2) == message(2)
        head = await pop.top(1, 0)
        assert head == message(1).split(b"\r\n\r\n")[0] + b"\r\n\r\n"
        await pop.noop()
        await pop.dele(1)
        with pytest.raises(PermanentError) as info:
            await pop.retr(1)  # deleted in this session
        assert info.value.reply is not None and info.value.reply.code == "-ERR"
        await pop.rset()
        assert (await pop.stat())[0] == 3
        got = [(n, r.body) async for n, r in pop.retr_many([3, 2, 1])]
        assert got == [(3, message(3)), (2, message(2)), (1, message(1))]
    assert mailstack.message_count(USER) == 3  # RSET undid the DELE


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "USER"])
async def test_login_mechanisms_with_a_non_ascii_password(
    mailstack: MailStack, ssl_context: ssl.SSLContext, mechanism: str
) -> None:
    async with POP3Client(Endpoint.parse(mailstack.url("pop3s")), ssl_context=ssl_context) as pop:
        await pop.login(Password("dave@example.test", "pässwörd"), mechanism=mechanism)
        await pop.stat()


async def test_wrong_password_is_an_authentication_error(
    mailstack: MailStack, ssl_context: ssl.SSLContext
) -> None:
    async with POP3Client(Endpoint.parse(mailstack.url("pop3s")), ssl_context=ssl_context) as pop:
        with pytest.raises(AuthenticationError) as info:
            await pop.login(Password(USER, "wrong"))
    assert info.value.reply is not None and "wrong" not in str(info.value)


async def test_plaintext_endpoint_with_allow_insecure(mailstack: MailStack, tmp_path: Path) -> None:
    fill(mailstack, [message(1)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureWarning)
        acct = mailkit.AsyncAccount(
            USER, password=PASSWORD, pop3=mailstack.url("pop3", insecure=True), allow_insecure=True,
            test_environment=True,
        )  # fmt: skip
    async with acct:
        report = await acct.pop3.download_and_delete(into=tmp_path / "md")
    assert len(report.deleted) == 1


def test_cli_fetch_keep_then_delete(mailstack: MailStack, tmp_path: Path) -> None:
    fill(mailstack, [message(i) for i in range(5)])
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    args = [
        "--address", USER, "--password-file", str(pw), "--pop3", mailstack.url("pop3"),
        "--ca-file", str(mailstack.ca_file), "--maildir", str(tmp_path / "Maildir"),
    ]  # fmt: skip
    env = {"MAILKIT_TEST_ENVIRONMENT": "1"}
    runner = CliRunner()
    keep = runner.invoke(cli, ["pop3", "fetch", "--keep", *args], env=env)
    assert keep.exit_code == 0, keep.output
    assert "5 downloaded" in keep.output and "0 deleted" in keep.output
    assert mailstack.message_count(USER) == 5
    fetch = runner.invoke(cli, ["pop3", "fetch", *args], env=env)
    assert fetch.exit_code == 0, fetch.output
    assert "0 downloaded" in fetch.output and "5 deleted" in fetch.output
    assert mailstack.message_count(USER) == 0
    assert len(os.listdir(tmp_path / "Maildir" / "new")) == 5
    bad = runner.invoke(cli, ["pop3", "fetch", "--delete-after-days", "3", *args], env=env)
    assert bad.exit_code == 2


def dotted_big_message(megabytes: int) -> bytes:
    """Lines that are dot-stuffed on the wire (".", "..", ".x") all through a big body, so chunk
    edges fall on stuffed dots and line ends in every way."""
    lines = [b".", b"..", b".x", b"plain", b"", b"...three", b"x" * 997]
    body = b"\r\n".join(lines[i % len(lines)] for i in range(megabytes * 1024 * 1024 // 150)) + b"\r\n"
    return b"From: sender@example.test\r\nSubject: dotted\r\n\r\n" + body


async def test_a_big_message_streams_into_the_maildir_without_being_held_whole(
    mailstack: MailStack, tmp_path: Path
) -> None:
    big = dotted_big_message(12)
    messages = [message(1), big, message(2)]
    fill(mailstack, messages)
    async with account(mailstack, "pop3s") as acct:
        await acct.endpoint("pop3")
        tracemalloc.start()
        try:
            report = await acct.pop3.download_and_delete(into=tmp_path / "Maildir")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert report.ok, report.errors
    assert sorted(s.size for s in report.downloaded) == sorted(len(m) for m in messages)
    assert maildir_messages(tmp_path / "Maildir") == sorted(messages)  # unstuffed exactly
    assert mailstack.message_count(USER) == 0
    assert os.listdir(tmp_path / "Maildir" / "tmp") == []
    # Held whole, the body alone would be 12 MB (and twice that while joined). Streamed, the peak is
    # the read buffers plus a 1 MB write piece and its joined copy: 2-5 MB depending on how far the
    # socket reads ahead of the disk on a loaded machine.
    assert peak < len(big) / 2, f"peak {peak} bytes of Python memory for a {len(big)} byte message"


def test_the_blocking_session_offers_every_client_command(mailstack: MailStack) -> None:
    fill(mailstack, [message(1), message(2), message(3)])
    with mailkit.Account(
        USER, password=PASSWORD, pop3=mailstack.url("pop3"), ca_file=mailstack.ca_file, test_environment=True
    ) as acct:
        assert acct.pop3.limits is acct.async_account.pop3.limits  # one set of caps for both faces
        with acct.pop3.session() as pop:
            assert isinstance(pop, POP3Session)
            assert "UIDL" in pop.capabilities and pop.pipelining and "Dovecot" in pop.greeting
            assert pop.stat() == (3, sum(len(message(i)) for i in (1, 2, 3)))
            assert pop.list() == {1: len(message(1)), 2: len(message(2)), 3: len(message(3))}
            uidls = pop.uidl()
            assert sorted(uidls) == [1, 2, 3] and len(set(uidls.values())) == 3
            assert pop.retr(2) == message(2)
            assert pop.top(1, 0) == message(1).split(b"\r\n\r\n")[0] + b"\r\n\r\n"
            pop.noop()
            pop.dele(1)
            with pytest.raises(PermanentError) as info:
                pop.retr(1)  # marked deleted in this session
            assert info.value.reply is not None and info.value.reply.code == "-ERR"
            pop.rset()
            assert [(n, r.body) for n, r in pop.retr_many([3, 1])] == [(3, message(3)), (1, message(1))]
            assert pop.execute(Command("NOOP")).ok
            assert [r.ok for r in pop.execute_many([Command("NOOP"), Command("STAT")])] == [True, True]
            pop.dele(3)
        assert mailstack.message_count(USER) == 2  # leaving the block sent QUIT: DELE 3 committed

        def fail_inside_a_session() -> None:
            with acct.pop3.session() as pop:
                pop.dele(1)
                raise RuntimeError("the caller fails: no QUIT")

        with pytest.raises(RuntimeError):
            fail_inside_a_session()
        assert mailstack.message_count(USER) == 2  # dropped without QUIT: nothing deleted

        session = acct.pop3.connect()
        assert session.stat()[0] == 2
        session.dele(1)
        session.quit()
        with pytest.raises(MailkitError):
            session.noop()  # a closed session refuses reuse
    assert mailstack.message_count(USER) == 1


async def test_the_async_session_quits_on_a_clean_exit(mailstack: MailStack) -> None:
    fill(mailstack, [message(1), message(2)])
    async with account(mailstack, "pop3s") as acct:
        async with acct.pop3.session() as pop:
            assert await pop.uidl() != {}
            await pop.dele(2)
        assert await acct.pop3.stat() == (1, len(message(1)))
