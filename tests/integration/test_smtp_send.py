"""Sending through the real Postfix (submission with STARTTLS + AUTH, submissions with implicit TLS)
and reading the result back from Dovecot over IMAP."""

from __future__ import annotations

import email
import email.policy
import imaplib
import ssl
from email.message import EmailMessage

import pytest

from mailkit.account import Account, AsyncAccount
from mailkit.errors import AuthenticationError, ConfigError
from mailkit.smtp import RecipientsRefusedError
from mailkit.smtp.client import AsyncSMTP
from tests.integration.mailstack import MailStack


def fetch_all(stack: MailStack, user: str, count: int) -> list[EmailMessage]:
    """Wait for ``count`` messages in INBOX, then fetch them all over IMAPS."""
    stack.wait_for_messages(user, count, timeout=20)
    context = ssl.create_default_context(cafile=str(stack.ca_file))
    with imaplib.IMAP4_SSL(stack.host, stack.imaps_port, ssl_context=context) as imap:
        imap.login(user, stack.users[user])
        imap.select("INBOX", readonly=True)
        _, data = imap.uid("SEARCH", "ALL")
        messages = []
        for uid in data[0].split():
            _, parts = imap.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = parts[0][1]  # type: ignore[index]
            messages.append(email.message_from_bytes(raw, policy=email.policy.default))
    return messages  # type: ignore[return-value]


def _account(stack: MailStack, endpoint: str = "submission", user: str = "alice@example.test",
             **kw: object) -> AsyncAccount:
    return AsyncAccount(user, password=stack.users[user], smtp=stack.url(endpoint), ca_file=stack.ca_file,
                        test_environment=True, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("endpoint", ["submission", "submissions"])
async def test_plain_text_is_delivered(clean_mailstack: MailStack, endpoint: str) -> None:
    async with _account(clean_mailstack, endpoint) as acct:
        result = await acct.send(to="bob@example.test", subject=f"via {endpoint}", text="Hello Bob.\n")
    assert result.ok and result.accepted == ("bob@example.test",) and result.queue_id
    (msg,) = fetch_all(clean_mailstack, "bob@example.test", 1)
    assert msg["Subject"] == f"via {endpoint}"
    assert msg["Message-ID"] == result.message_id
    assert msg.get_content().replace("\r\n", "\n") == "Hello Bob.\n"


async def test_html_attachments_inline_and_non_ascii(clean_mailstack: MailStack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pdf = tmp_path / "Übersicht 2026.pdf"
    pdf.write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 40)
    logo = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
    async with _account(clean_mailstack) as acct:
        await acct.send(
            to=("Bób Ünïcode", "bob@example.test"), sender=("Älice", "alice@example.test"),
            subject="Grüße aus Köln \u2013 😀", text="Siehe Anhang.\n",
            html='<p>Grüße <img src="cid:logo"></p>', inline={"logo": ("logo.png", logo)},
            attachments=[pdf],
        )
    (msg,) = fetch_all(clean_mailstack, "bob@example.test", 1)
    assert msg["Subject"] == "Grüße aus Köln \u2013 😀"
    assert msg["From"].addresses[0].display_name == "Älice"
    assert msg["To"].addresses[0].display_name == "Bób Ünïcode"
    assert msg.get_body(("plain",)).get_content().strip() == "Siehe Anhang."  # type: ignore[union-attr]
    assert "Grüße" in msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    (attachment,) = list(msg.iter_attachments())
    assert attachment.get_filename() == "Übersicht 2026.pdf"
    assert attachment.get_content() == pdf.read_bytes()
    images = [p for p in msg.walk() if p["Content-ID"] == "<logo>"]
    assert len(images) == 1 and images[0].get_content() == logo


async def test_one_refused_of_three_is_reported(clean_mailstack: MailStack) -> None:
    async with _account(clean_mailstack) as acct:
        result = await acct.send(to=["bob@example.test", "nobody@example.test", "carol@example.test"],
                                 subject="partial", text="t")
    assert set(result.accepted) == {"bob@example.test", "carol@example.test"}
    refusal = result.refused["nobody@example.test"]
    assert refusal.code == 550 and refusal.enhanced == "5.1.1" and "unknown" in refusal.text.lower()
    assert not result.ok and result.state == "accepted"
    fetch_all(clean_mailstack, "bob@example.test", 1)
    fetch_all(clean_mailstack, "carol@example.test", 1)


async def test_every_recipient_refused_raises(clean_mailstack: MailStack) -> None:
    async with _account(clean_mailstack) as acct:
        with pytest.raises(RecipientsRefusedError) as info:
            await acct.send(to=["nobody@example.test", "ghost@example.test"], subject="x", text="t")
    assert set(info.value.refused) == {"nobody@example.test", "ghost@example.test"}
    assert info.value.reply is not None and info.value.reply.code == 550


async def test_bcc_is_delivered_but_not_visible(clean_mailstack: MailStack) -> None:
    async with _account(clean_mailstack) as acct:
        await acct.send(to="bob@example.test", bcc="carol@example.test", subject="bcc", text="t")
    (to_bob,) = fetch_all(clean_mailstack, "bob@example.test", 1)
    (to_carol,) = fetch_all(clean_mailstack, "carol@example.test", 1)
    for msg in (to_bob, to_carol):
        assert msg["Bcc"] is None
        assert "carol" not in msg.as_string().split("\n\n", 1)[0].replace("Delivered-To: carol", "")


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
async def test_auth_mechanisms(clean_mailstack: MailStack, mechanism: str) -> None:
    async with _account(clean_mailstack, user="dave@example.test") as acct:  # non-ASCII password
        client = AsyncSMTP(acct, mechanisms=(mechanism,))
        session = await client.open_session()
        await session.quit()
        assert session.caps.pipelining


async def test_wrong_password_is_an_authentication_error(clean_mailstack: MailStack) -> None:
    acct = AsyncAccount("alice@example.test", password="wrong", smtp=clean_mailstack.url("submissions"),
                        ca_file=clean_mailstack.ca_file, test_environment=True)
    async with acct:
        with pytest.raises(AuthenticationError) as info:
            await acct.send(to="bob@example.test", subject="x", text="t")
    assert info.value.reply is not None and info.value.reply.code == 535
    assert "wrong" not in str(info.value)
    _assert_cause_chain_ends(info.value)


def _assert_cause_chain_ends(error: BaseException) -> None:
    """Code that walks ``__cause__`` must not loop: no error may be its own (indirect) cause."""
    seen: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None:
        assert all(cause is not earlier for earlier in seen), f"the cause chain of {error!r} loops"
        seen.append(cause)
        cause = cause.__cause__


async def test_our_own_error_while_connecting_is_raised_as_it_is(clean_mailstack: MailStack) -> None:
    # Raised by mailkit itself inside the connect-and-login step: the token with a line break is
    # refused (ConfigError), or before that, on a stack without OAuth2, the missing mechanism.
    acct = AsyncAccount("alice@example.test", oauth2=lambda: "token\r\nRSET",
                        smtp=clean_mailstack.url("submissions"), ca_file=clean_mailstack.ca_file,
                        test_environment=True)
    async with acct:
        with pytest.raises((ConfigError, AuthenticationError)) as info:
            await acct.send(to="bob@example.test", subject="x", text="t")
    assert "RSET" not in str(info.value)
    _assert_cause_chain_ends(info.value)


def test_sync_account_send_and_send_many(clean_mailstack: MailStack) -> None:
    stack = clean_mailstack
    with Account("alice@example.test", password="alicepw", smtp=stack.url("submissions"),
                 ca_file=stack.ca_file, test_environment=True) as acct:
        first = acct.send(to="bob@example.test", subject="sync", text="one")
        messages = [(f"k{i}", _raw(i)) for i in range(5)]
        results = list(acct.send_many(messages, concurrency=2))
    assert first.ok
    assert sorted(r.key for r in results) == [f"k{i}" for i in range(5)]
    assert all(r.state == "accepted" for r in results)
    assert len(fetch_all(stack, "bob@example.test", 6)) == 6


def _raw(i: int) -> bytes:
    return (f"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: raw {i}\r\n"
            f"Message-ID: <raw{i}@example.test>\r\n\r\nbody {i}\r\n").encode()


async def test_send_many_with_journal_sends_each_once(clean_mailstack: MailStack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    journal = tmp_path / "c.db"
    messages = [(f"k{i}", _raw(i)) for i in range(20)]
    async with _account(clean_mailstack, "submissions") as acct:
        first = [r async for r in acct.send_many(messages, concurrency=3, journal=journal,
                                                  rate_per_minute=6000, per_connection=7)]
        again = [r async for r in acct.send_many(messages, concurrency=3, journal=journal)]
    assert [r.state for r in first] == ["accepted"] * 20
    assert [r.state for r in again] == ["skipped"] * 20
    msgs = fetch_all(clean_mailstack, "bob@example.test", 20)
    assert sorted(m["Subject"] for m in msgs) == sorted(f"raw {i}" for i in range(20))


async def test_internationalized_recipient_uses_smtputf8(clean_mailstack: MailStack) -> None:
    async with _account(clean_mailstack) as acct:
        result = await acct.send(to=["bob@example.test", "jösé@example.test"], subject="utf8", text="t")
    assert result.accepted == ("bob@example.test",)
    assert result.refused["jösé@example.test"].code == 550  # unknown user, but SMTPUTF8 was accepted
    assert result.queue_id
    # Not read back: the stack's Dovecot LMTP lacks SMTPUTF8, so Postfix bounces the local delivery.
