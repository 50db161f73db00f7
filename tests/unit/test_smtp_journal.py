"""The bulk journal: durable states, per-recipient results, what a restart may send again."""

from __future__ import annotations

import sqlite3

import pytest

from mailkit.errors import Reply, StateError
from mailkit.smtp.journal import JournalStore, SQLiteJournal, open_journal

R = ("a@example.test", "b@example.test", "c@example.test")


def test_states_survive_reopening(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "j.db"
    with SQLiteJournal(path) as journal:
        journal.mark("k1", "queued", message_id="<1@x>", recipients=R)
        journal.mark("k1", "in_flight", message_id="<1@x>", recipients=R, attempt=True)
        journal.mark("k1", "unknown", message_id="<1@x>", recipients=R)
        journal.mark("k2", "accepted", message_id="<2@x>", recipients=R[:1], accepted=R[:1])
    with SQLiteJournal(path) as journal:
        e1, e2 = journal.get("k1"), journal.get("k2")
        assert e1 is not None and e1.state == "unknown" and e1.attempts == 1 and e1.recipients == R
        assert e2 is not None and e2.state == "accepted" and e2.accepted == R[:1]
        assert [e.key for e in journal.entries("unknown")] == ["k1"]
        assert journal.counts() == {"unknown": 1, "accepted": 1}
        assert journal.get("nope") is None


def test_pending_recipients_exclude_accepted_and_permanent_refusals(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with SQLiteJournal(tmp_path / "j.db") as journal:
        journal.mark(
            "k",
            "deferred",
            message_id="<m@x>",
            recipients=R,
            accepted=[R[0]],
            refused={
                R[1]: Reply("smtp", 550, "no such user", "5.1.1"),
                R[2]: Reply("smtp", 451, "try later", "4.3.0"),
            },
        )
        entry = journal.get("k")
        assert entry is not None
        assert entry.pending_recipients == (R[2],)
        assert entry.refused[R[1]] == Reply("smtp", 550, "no such user", "5.1.1")
        # A later attempt accepts the deferred one; an accepted recipient is never downgraded.
        journal.mark(
            "k",
            "accepted",
            message_id="<m@x>",
            recipients=R,
            accepted=[R[2]],
            refused={R[0]: Reply("smtp", 450, "x")},
        )
        entry = journal.get("k")
        assert entry is not None and set(entry.accepted) == {R[0], R[2]} and entry.pending_recipients == ()


def test_corrupt_journal_is_a_state_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError):
        SQLiteJournal(path)


def test_wrong_version_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "j.db"
    SQLiteJournal(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value='99' WHERE name='version'")
    db.commit()
    db.close()
    with pytest.raises(StateError, match="version"):
        SQLiteJournal(path)


def test_open_journal_accepts_paths_and_stores(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store, owned = open_journal(tmp_path / "j.db")
    assert owned and isinstance(store, JournalStore)
    again, owned_again = open_journal(store)
    assert again is store and not owned_again
    store.close()
    with pytest.raises(TypeError):
        open_journal(42)  # type: ignore[arg-type]


def test_non_durable_marks_are_flushed_by_the_next_durable_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "j.db"
    with SQLiteJournal(path) as journal:
        journal.mark("k", "in_flight", message_id="<m@x>", recipients=R, attempt=True, durable=False)
        journal.mark("j", "unknown", message_id="<n@x>", recipients=R)
        assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again
    with SQLiteJournal(path) as journal:
        assert journal.counts() == {"in_flight": 1, "unknown": 1}
