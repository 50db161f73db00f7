"""The three SQLite state files (POP3 UIDLs, IMAP sync state, SMTP journal): a file that cannot be
used is refused with StateError and leaves no connection open behind it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from mailkit import _sqlite
from mailkit.errors import StateError
from mailkit.imap import SyncState
from mailkit.pop3._state import UIDLState
from mailkit.smtp.journal import SQLiteJournal

REAL_CONNECT = sqlite3.connect  # the tests' own edits are not tracked


class Tracked(sqlite3.Connection):
    opened: ClassVar[list[Tracked]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.closed = False
        Tracked.opened.append(self)

    def close(self) -> None:
        self.closed = True
        super().close()


@pytest.fixture
def tracked(monkeypatch: pytest.MonkeyPatch) -> list[Tracked]:
    Tracked.opened = []
    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        return REAL_CONNECT(*args, factory=Tracked, **kwargs)

    monkeypatch.setattr(_sqlite.sqlite3, "connect", connect)
    return Tracked.opened


def open_pop3(path: Path) -> object:
    state = UIDLState(path, "alice@example.test")
    state.open()
    return state


def open_imap(path: Path, account: str = "alice@example.test") -> object:
    return SyncState(path, account=account).open()


def open_journal(path: Path) -> object:
    return SQLiteJournal(path)


OPENERS: dict[str, tuple[Callable[[Path], object], str, str]] = {
    # name: (opener, meta column, the meta key holding the schema version)
    "pop3": (open_pop3, "key", "pop3_schema"),
    "imap": (open_imap, "key", "version"),
    "journal": (open_journal, "name", "version"),
}


def close(state: object) -> None:
    state.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(OPENERS))
def test_a_file_of_another_version_is_refused_and_closed(
    tracked: list[Tracked], tmp_path: Path, name: str
) -> None:
    opener, column, key = OPENERS[name]
    path = tmp_path / "state.db"
    close(opener(path))
    db = REAL_CONNECT(path)
    with db:
        db.execute(f"UPDATE meta SET value='99' WHERE {column}=?", (key,))
    db.close()
    with pytest.raises(StateError, match=f"{key} '99', expected"):
        opener(path)
    assert len(tracked) == 2
    assert all(c.closed for c in tracked)


@pytest.mark.parametrize("name", sorted(OPENERS))
def test_a_file_that_is_not_a_database_is_refused_and_closed(
    tracked: list[Tracked], tmp_path: Path, name: str
) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not an SQLite database, it is a text file long enough to be read" * 20)
    with pytest.raises(StateError, match="cannot use"):
        OPENERS[name][0](path)
    assert [c.closed for c in tracked] == [True]


def test_imap_state_of_another_account_is_refused_and_closed(tracked: list[Tracked], tmp_path: Path) -> None:
    path = tmp_path / "sync.db"
    close(open_imap(path, "alice@example.test"))
    with pytest.raises(StateError, match=r"account 'alice@example\.test', expected 'bob@example\.test'"):
        open_imap(path, "bob@example.test")
    assert [c.closed for c in tracked] == [True, True]


def test_a_usable_file_stays_open_and_keeps_its_meta(tracked: list[Tracked], tmp_path: Path) -> None:
    journal = SQLiteJournal(tmp_path / "journal.db")
    assert [c.closed for c in tracked] == [False]
    journal.close()
    reopened = SQLiteJournal(tmp_path / "journal.db")  # the version row written the first time matches
    reopened.close()
    assert [c.closed for c in tracked] == [True, True]


def test_pop3_state_in_a_directory_that_cannot_be_made_is_a_state_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the state's directory should be")
    with pytest.raises(StateError, match="cannot use POP3 state file"):
        open_pop3(blocker / "sub" / "state.db")
