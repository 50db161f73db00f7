"""Sync state (SQLite) and the Maildir mirror: pure local behaviour."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailkit.errors import StateError
from mailkit.imap import MaildirMirror, SyncState, maildir_flags
from mailkit.imap.sync import batches, stable_flags


def test_state_roundtrip_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    st = SyncState(path, account="a@example.test").open()
    st.reset("INBOX", 42)
    st.put("INBOX", 1, ["\\Seen"], "cur/x:2,S")
    st.put("INBOX", 2, [])
    st.put("INBOX", 2, ["\\Flagged"])  # flags update keeps the path
    st.set_mailbox("INBOX", 42, 3, 99)
    st.close()
    st = SyncState(path, account="a@example.test").open()
    saved = st.mailbox("INBOX")
    assert saved is not None
    assert (saved.uidvalidity, saved.uidnext, saved.highestmodseq, saved.messages) == (42, 3, 99, 2)
    assert st.known("INBOX") == {1: ("\\Seen",), 2: ("\\Flagged",)}
    assert st.path_of("INBOX", 1) == "cur/x:2,S"
    assert st.uids_from("INBOX", 2) == {2}
    st.forget("INBOX", 1)
    assert st.count("INBOX") == 1
    st.reset("INBOX", 43)
    assert st.known("INBOX") == {}
    saved = st.mailbox("INBOX")
    assert saved is not None and saved.uidvalidity == 43 and saved.uidnext is None
    st.close()


def test_state_of_another_account_is_refused(tmp_path: Path) -> None:
    SyncState(tmp_path / "s.db", account="a@example.test").open().close()
    with pytest.raises(StateError):
        SyncState(tmp_path / "s.db", account="b@example.test").open()


def test_corrupt_state_is_state_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError):
        SyncState(bad).open()


def test_maildir_flags_letters() -> None:
    assert maildir_flags(["\\Seen", "\\Answered", "\\Flagged", "\\Draft", "\\Deleted", "$X"]) == "DFRST"
    assert maildir_flags([]) == ""
    assert stable_flags([b"\\Recent", b"\\Seen"]) == ("\\Seen",)


def test_mirror_add_rename_remove(tmp_path: Path) -> None:
    m = MaildirMirror(tmp_path / "md")
    m.create()
    raw = b"Subject: x\r\n\r\nbody\r\n"
    rel = m.add(7, 1, (), data=raw)
    assert rel.startswith("new/") and (tmp_path / "md" / rel).read_bytes() == raw
    rel2 = m.set_flags(7, 1, ["\\Seen", "\\Flagged"], rel)
    assert rel2.startswith("cur/") and rel2.endswith(":2,FS")
    assert not (tmp_path / "md" / rel).exists()
    rel3 = m.set_flags(7, 1, [], rel2)
    assert rel3.startswith("cur/") and rel3.endswith(":2,")  # once read, stays in cur/
    m.flush()
    m.remove(7, 1, rel3)
    assert os.listdir(tmp_path / "md" / "cur") == []


def test_mirror_add_again_after_crash_does_not_duplicate(tmp_path: Path) -> None:
    m = MaildirMirror(tmp_path / "md")
    m.create()
    m.add(7, 5, ["\\Seen"], data=b"a")
    again = MaildirMirror(tmp_path / "md")  # a new run that lost the state row
    rel = again.add(7, 5, ["\\Seen", "\\Answered"], data=b"a")
    files = os.listdir(tmp_path / "md" / "cur") + os.listdir(tmp_path / "md" / "new")
    assert files == [rel.split("/", 1)[1]] and rel.endswith(":2,RS")
    # another UIDVALIDITY is another message: kept side by side, never overwritten
    again.add(8, 5, [], data=b"b")
    assert len(os.listdir(tmp_path / "md" / "cur") + os.listdir(tmp_path / "md" / "new")) == 2


def test_batches_by_count_and_bytes() -> None:
    rows = [(i, 100, ()) for i in range(1, 11)] + [(11, 10_000, ()), (12, 1, ())]
    got = [[r[0] for r in b] for b in batches(rows, count=4, size=350)]
    assert got == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10], [11], [12]]
    assert [len(b) for b in batches(rows[:10], count=4, size=10**9)] == [4, 4, 2]
