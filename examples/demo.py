"""mailkit's main job, end to end against a real server: send, read back over IMAP, bulk-send with a
journal, and download-and-delete over POP3 into a Maildir.

Run it with ``scripts/demo`` (which starts a local Dovecot + Postfix and sets MAILKIT_* for it), or
against your own account with MAILKIT_ADDRESS, MAILKIT_PASSWORD and the endpoint variables set.
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from email import message_from_bytes, policy
from pathlib import Path

import mailkit
from mailkit.imap import Q
from mailkit.message import compose


def step(title: str) -> None:
    print(f"\n== {title}")


def wait_for(imap: mailkit.imap.IMAP, subject: str, timeout: float = 15.0) -> list[int]:
    """Delivery through the MTA is asynchronous: poll until the message shows up."""
    deadline = time.monotonic() + timeout
    while True:
        uids = imap.search(Q.subject(subject), mailbox="INBOX")
        if uids or time.monotonic() > deadline:
            return uids
        time.sleep(0.2)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="mailkit-demo-"))
    tag = uuid.uuid4().hex[:8]
    subject = f"mailkit demo {tag} — grüße"

    with mailkit.Account.from_env() as acct:
        step("Account")
        print(acct)
        for protocol in ("smtp", "imap", "pop3"):
            print(f"  {protocol}: {acct.endpoint(protocol)}")

        step("SMTP: send one message with an HTML part and an attachment")
        report_file = work / "report.csv"
        report_file.write_text("quarter,revenue\nQ1,100\n", encoding="utf-8")
        result = acct.send(
            to=acct.address,
            subject=subject,
            text="Hello from mailkit.\n",
            html="<p>Hello from <b>mailkit</b>.</p>",
            attachments=[report_file],
        )
        print(f"  accepted by {', '.join(result.accepted)}; queue id {result.queue_id}")
        print(f"  Message-ID {result.message_id}")

        step("IMAP: read it back")
        with acct.imap() as imap:
            uids = wait_for(imap, subject)
            if not uids:
                print("  the message did not arrive within 15 s", file=sys.stderr)
                return 1
            message = imap.fetch_one(uids[-1], mailbox="INBOX", envelope=True, body=True, flags=True)
            assert message.body is not None and message.envelope is not None
            parsed = message_from_bytes(message.body, policy=policy.default)
            attachments = [part.get_filename() for part in parsed.iter_attachments()]  # type: ignore[attr-defined]
            print(f"  UID {message.uid}: {message.envelope.subject!r}, {len(message.body)} bytes")
            print(f"  flags {message.flags}, attachments {attachments}")
            imap_copy = message.body

            changes = list(imap.sync("INBOX", state=str(work / "sync.db")))
            print(f"  first sync: {len(changes)} change(s); a second sync finds "
                  f"{len(list(imap.sync('INBOX', state=str(work / 'sync.db'))))}")

        step("SMTP: bulk-send 5 personalised messages with a journal")
        people = ["Ana", "Björn", "Chen", "Dara", "Eli"]
        messages = [
            (f"{tag}-{name}", compose(
                sender=acct.address, to=acct.address, subject=f"{subject} / {name}",
                text=f"Hi {name}, this is message {i + 1} of {len(people)}.\n",
            ))
            for i, name in enumerate(people)
        ]
        journal = str(work / "campaign.db")
        sent = list(acct.send_many(messages, concurrency=2, journal=journal))
        print(f"  {sum(r.ok for r in sent)} accepted of {len(sent)}")
        again = list(acct.send_many(messages, concurrency=2, journal=journal))
        print(f"  same campaign again: {sum(r.state == 'skipped' for r in again)} skipped by the journal, "
              f"{sum(r.state == 'accepted' for r in again)} resent")

        step("POP3: download everything into a Maildir, deleting on the server once saved")
        with acct.imap() as imap:
            wait_for(imap, f"{subject} / {people[-1]}")
        maildir = work / "Maildir"
        report = acct.pop3.download_and_delete(into=maildir)
        print(f"  {report.summary()}")
        saved = [p.read_bytes() for p in (maildir / "new").iterdir()]
        print(f"  Maildir holds {len(saved)} message(s); the IMAP copy is among them byte for byte: "
              f"{imap_copy in saved}")
        with acct.imap() as imap:
            print(f"  left on the server: {len(imap.search(Q.all(), mailbox='INBOX'))}")

    print(f"\nDone. Files are in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
