"""POP3 against the real Dovecot: the client's commands, download-and-delete, keep mode, the CLI."""

from __future__ import annotations

import os
import sqlite3
import ssl
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

import mailkit
from mailkit.cli import cli
from mailkit.config import Endpoint, Password
from mailkit.errors import AuthenticationError, PermanentError
from mailkit.pop3 import POP3Client
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
