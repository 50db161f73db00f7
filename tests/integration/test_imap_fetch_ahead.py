"""Bulk fetch keeps the next batch in flight: the connection stays in step whatever the consumer does.

Against the real Dovecot: stopping early, other commands between batches, bodies streamed to files.
"""

from __future__ import annotations

from pathlib import Path

import mailkit
from mailkit.imap import Q
from tests.integration.mailstack import MailStack
from tests.integration.test_imap_ops import ALICE, account


def _raws(count: int, big_every: int = 0) -> list[bytes]:
    out = []
    for i in range(count):
        body = b"line %d of the body\r\n" % i * (400 if big_every and i % big_every == 0 else 3)
        out.append(b"Subject: m%d\r\nFrom: bob@example.test\r\n\r\n" % i + body)
    return out


def test_every_batch_arrives_whole_and_in_order(clean_mailstack: MailStack) -> None:
    raws = _raws(1200)
    clean_mailstack.deliver_many(ALICE, raws)
    with account(clean_mailstack) as acct, acct.imap("INBOX") as imap:
        uids = imap.search()
        got = list(imap.fetch(uids, body=True, batch_size=97))  # 13 batches, each sent ahead
        assert [m.uid for m in got] == uids
        assert [m.body for m in got] == raws  # byte for byte
        assert all(m.size == len(m.body or b"") for m in got)
        listing = list(imap.fetch(uids, envelope=True, batch_size=50))
        assert [m.envelope.subject for m in listing if m.envelope] == [f"m{i}" for i in range(1200)]


def test_stopping_early_leaves_the_connection_in_step_and_no_files(
    clean_mailstack: MailStack, tmp_path: Path
) -> None:
    raws = _raws(40, big_every=2)  # every other body is over stream_over: streamed to a file
    clean_mailstack.deliver_many(ALICE, raws)
    with account(clean_mailstack) as acct, acct.imap("INBOX") as imap:
        uids = imap.search()
        it = imap.fetch(uids, body=True, batch_size=5, stream_over=2000, spool_dir=tmp_path)
        taken = [next(it) for _ in range(5)]  # the first batch; the next ones were in flight
        it.close()
        kept = {m.body_path for m in taken if m.body_path}
        assert kept and {str(p) for p in tmp_path.iterdir()} == kept  # the dropped batches' files went
        assert imap.search(Q.uid(uids[:3])) == uids[:3]  # the stream is in step
        again = list(imap.fetch(uids, body=True))
        assert [m.body for m in again] == raws


def test_commands_between_batches_find_the_stream_in_step(clean_mailstack: MailStack) -> None:
    raws = _raws(60)
    clean_mailstack.deliver_many(ALICE, raws)
    with account(clean_mailstack) as acct, acct.imap("INBOX") as imap:
        uids = imap.search()
        bodies = []
        for message in imap.fetch(uids, body=True, batch_size=7):
            bodies.append(message.body)
            if message.uid % 3 == 0:  # a command while the next batch is on its way
                imap.add_flags([message.uid], "\\Flagged")
        assert bodies == raws
        assert imap.search(Q.flagged()) == [uid for uid in uids if uid % 3 == 0]


async def test_async_face_stops_early_cleanly(clean_mailstack: MailStack) -> None:
    raws = _raws(30)
    clean_mailstack.deliver_many(ALICE, raws)
    ms = clean_mailstack
    async with (
        mailkit.AsyncAccount(
            ALICE, password="alicepw", imap=ms.url("imaps"), ca_file=str(ms.ca_file), test_environment=True
        ) as acct,
        acct.imap("INBOX") as imap,
    ):
        uids = await imap.search()
        batches = imap.fetch_batches(uids, body=True, batch_size=4)
        first = await anext(batches)
        await batches.aclose()
        assert [m.body for m in first] == raws[:4]
        assert [m.body async for m in imap.fetch(uids, body=True)] == raws
