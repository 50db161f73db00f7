"""IMAP operations against the real Dovecot: connect, auth, folders, search, fetch, flags, move, append."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path

import pytest

import mailkit
from mailkit.errors import AuthenticationError, ConfigError, PermanentError
from mailkit.imap import Q, SpecialUse, SyncState
from tests.integration.mailstack import MailStack

ALICE = "alice@example.test"


def account(ms: MailStack, name: str = "imaps", user: str = ALICE, **kw: object) -> mailkit.Account:
    return mailkit.Account(
        user, password=kw.pop("password", ms.users[user]), imap=ms.url(name),
        ca_file=str(ms.ca_file), test_environment=True, **kw,
    )  # fmt: skip


def message(subject: str, body: str = "hello\r\n", sender: str = "bob@example.test") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ALICE
    msg["Subject"] = subject
    msg.set_content(body)
    return crlf(bytes(msg))


def crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@pytest.mark.parametrize("endpoint", ["imaps", "imap"])  # 993-style TLS and 143 + STARTTLS
def test_connect_both_ports_and_list_special_use(clean_mailstack: MailStack, endpoint: str) -> None:
    with account(clean_mailstack, endpoint) as acct, acct.imap() as imap:
        assert "IDLE" in imap.capabilities and "UIDPLUS" in imap.capabilities
        roles = {f.special_use: f.name for f in imap.folders() if f.special_use}
        assert {SpecialUse.SENT, SpecialUse.TRASH, SpecialUse.JUNK, SpecialUse.DRAFTS} <= set(roles)
        sent = imap.find_folder(SpecialUse.SENT)
        assert sent is not None and sent.name == roles[SpecialUse.SENT]


def test_non_ascii_password_uses_authenticate_plain(mailstack: MailStack) -> None:
    dave = "dave@example.test"
    with account(mailstack, "imaps", dave) as acct, acct.imap() as imap:
        assert imap.examine("INBOX").uidvalidity > 0


def test_wrong_password_is_authentication_error(mailstack: MailStack) -> None:
    with account(mailstack, password="wrong") as acct, pytest.raises(AuthenticationError), acct.imap():
        pass


def test_folders_with_spaces_quotes_and_non_ascii(clean_mailstack: MailStack) -> None:
    ms = clean_mailstack
    name = 'Projekt "Ä" 2024 ✓'
    renamed = "Archiv Übersicht \\ x"
    with account(ms) as acct, acct.imap() as imap:
        imap.create_folder(name)
        assert name in [f.name for f in imap.folders()]
        uid = imap.append(name, message("in a strange folder"))
        assert uid is not None
        status = imap.status(name)
        assert status.messages == 1 and status.uidnext == uid + 1
        imap.rename_folder(name, renamed)
        names = [f.name for f in imap.folders()]
        assert renamed in names and name not in names
        imap.subscribe(renamed)
        assert renamed in [f.name for f in imap.subscribed()]
        imap.unsubscribe(renamed)
        assert renamed not in [f.name for f in imap.subscribed()]
        imap.select(renamed)
        assert imap.search(Q.subject("strange")) == [uid]
        imap.delete_folder(renamed)
        assert renamed not in [f.name for f in imap.folders()]
    # what the server stored is modified UTF-7 of the same name
    assert not any("Projekt" in m for m in ms.mailboxes(ALICE))
    with pytest.raises(ConfigError), account(ms) as acct, acct.imap() as imap:
        imap.create_folder("evil\r\nA1 DELETE INBOX")


def test_search_builder_non_ascii_and_hostile_terms(clean_mailstack: MailStack) -> None:
    ms = clean_mailstack
    ms.deliver(ALICE, message("Rechnung für März", "Betrag: 5 €\r\n"))
    ms.deliver(ALICE, message("Plain invoice", "nothing special\r\n", sender="carol@example.test"))
    ms.deliver(ALICE, message("Third", "x\r\n"))
    with account(ms) as acct, acct.imap("INBOX") as imap:
        uids = imap.search()
        assert len(uids) == 3
        assert imap.search(Q.subject("für März")) == [uids[0]]
        assert imap.search(Q.body("€")) == [uids[0]]
        assert imap.search(Q.from_("carol")) == [uids[1]]
        assert imap.search(Q.from_("carol") | Q.subject("Third")) == uids[1:]
        assert imap.search(~Q.from_("bob")) == [uids[1]]
        assert imap.search("OR FROM carol SUBJECT Third") == uids[1:]
        # CR/LF inside a term travels in a literal: no match, and no second command ran
        assert imap.search(Q.subject("x\r\nMK999 DELETE Trash")) == []
        assert "Trash" in [f.name for f in imap.folders()]
        with pytest.raises(ConfigError):
            imap.search("ALL\r\nMK1000 DELETE Trash")


def test_fetch_selectively_and_in_batches(clean_mailstack: MailStack, tmp_path: Path) -> None:
    ms = clean_mailstack
    multipart = EmailMessage()
    multipart["Subject"] = "with attachment"
    multipart["From"] = "bob@example.test"
    multipart.set_content("the text part\n")
    multipart.add_attachment(b"\x00\x01binary" * 100, maintype="application", subtype="octet-stream")
    raw_multi = crlf(bytes(multipart))
    big = b"Subject: big\r\n\r\n" + (b"0123456789abcdef" * 64 + b"\r\n") * 2000  # ~2 MB
    raws = [message(f"m{i}") for i in range(20)] + [raw_multi, big]
    for raw in raws:
        ms.deliver(ALICE, raw)
    with account(ms) as acct, acct.imap("INBOX") as imap:
        uids = imap.search()
        assert len(uids) == 22
        envs = list(imap.fetch(uids[:3], envelope=True))
        assert [m.envelope.subject for m in envs if m.envelope] == ["m0", "m1", "m2"]
        assert envs[0].flags == () or "\\Recent" in (envs[0].flags or ())
        assert all(m.body is None for m in envs)
        heads = list(imap.fetch(uids[:1], headers=True, flags=False, size=False))
        assert heads[0].headers is not None and heads[0].headers.endswith(b"\r\n\r\n")
        assert heads[0].flags is None and heads[0].size is None and heads[0].body is None
        multi = imap.fetch_one(uids[20], bodystructure=True, part="1")
        assert multi.body is not None and b"the text part" in multi.body
        assert isinstance(multi.bodystructure, list)
        bodies = list(imap.fetch(uids, body=True, batch_size=7, batch_bytes=50_000,
                                 stream_over=1 << 20, spool_dir=tmp_path))  # fmt: skip
        assert [m.uid for m in bodies] == uids
        for msg, raw in zip(bodies[:-1], raws[:-1], strict=True):
            assert msg.body == raw  # byte for byte
        assert bodies[-1].body is None and bodies[-1].body_path is not None
        assert Path(bodies[-1].body_path).read_bytes() == big
        assert bodies[-1].size == len(big)
        os.unlink(bodies[-1].body_path)


def test_flags_copy_move_delete_append(clean_mailstack: MailStack) -> None:
    ms = clean_mailstack
    for i in range(4):
        ms.deliver(ALICE, message(f"f{i}"))
    with account(ms) as acct, acct.imap("INBOX") as imap:
        a, b, c, d = imap.search()
        imap.add_flags([a, b], ["\\Seen", "$Important"])
        imap.remove_flags([b], "$Important")
        imap.set_flags([c], ["\\Flagged", "\\Answered"])
        flags = {m.uid: set(m.flags or ()) - {"\\Recent"} for m in imap.fetch([a, b, c])}
        assert flags == {a: {"\\Seen", "$Important"}, b: {"\\Seen"}, c: {"\\Flagged", "\\Answered"}}

        imap.create_folder("Kept")
        imap.copy([a], "Kept")
        imap.move([b], "Kept")
        assert imap.search() == [a, c, d]
        assert imap.status("Kept").messages == 2

        # another client's \Deleted message must survive our delete (UID EXPUNGE, not EXPUNGE)
        imap.add_flags([c], "\\Deleted")
        imap.delete([d])
        assert imap.search() == [a, c]

        when = datetime(2024, 2, 29, 12, 30, tzinfo=timezone(timedelta(hours=1)))
        uid = imap.append("INBOX", message("appended"), flags=["\\Draft", "$Custom"], date=when)
        assert uid is not None and uid > d
        got = imap.fetch_one(uid, internal_date=True, body=True)
        assert got.internal_date == when
        assert {"\\Draft", "$Custom"} <= set(got.flags or ())
        assert got.body == message("appended")

        folder, sent_uid = imap.save_sent(message("sent copy"))
        assert folder == "Sent" and sent_uid is not None
        assert imap.status("Sent").messages == 1
        with pytest.raises(PermanentError):
            imap.select("No such folder")


async def test_async_face(clean_mailstack: MailStack) -> None:
    ms = clean_mailstack
    ms.deliver(ALICE, message("async one"))
    async with (
        mailkit.AsyncAccount(
            ALICE, password="alicepw", imap=ms.url("imap"), ca_file=str(ms.ca_file), test_environment=True
        ) as acct,
        acct.imap("INBOX") as imap,
    ):
        uids = await imap.search(Q.subject("async"))
        assert len(uids) == 1
        msgs = [m async for m in imap.fetch(uids, body=True)]
        assert msgs[0].body == message("async one")
        changes = [c async for c in imap.sync("INBOX", state=SyncState(None))]
        assert [c.uid for c in changes] == uids
