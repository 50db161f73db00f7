"""Which POP3 messages are already saved: a SQLite table of UIDLs per account.

Rule: a UIDL is recorded only after its message is durably saved, in a committed transaction
(WAL, synchronous=FULL) that completes before any DELE for it is sent. One file may serve several
accounts: rows are keyed by account, so a state file is never read as another account's.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from .._sqlite import open_database
from ..errors import StateError

__all__ = ["UIDLState"]

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pop3_saved (
    account TEXT NOT NULL,
    uidl TEXT NOT NULL,
    saved_at REAL NOT NULL,
    location TEXT NOT NULL,
    PRIMARY KEY (account, uidl)
) WITHOUT ROWID;
"""


class UIDLState:
    """``UIDLState(path, account)``; ``":memory:"`` keeps it for one run only."""

    def __init__(self, path: str | os.PathLike[str], account: str) -> None:
        self.path = os.fspath(path)
        self.account = account
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        if self._db is not None:
            return
        what = f"POP3 state file {self.path!r}"
        if self.path != ":memory:":
            try:
                Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StateError(f"cannot use {what}: {exc}") from exc
        self._db = open_database(
            os.path.expanduser(self.path),
            synchronous="FULL",
            schema=_SCHEMA,
            what=what,
            meta={"pop3_schema": str(_SCHEMA_VERSION)},
        )

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.open()
        assert self._db is not None
        return self._db

    def saved(self) -> dict[str, float]:
        """{uidl: when it was saved (Unix time)} for this account."""
        try:
            rows = self._conn().execute(
                "SELECT uidl, saved_at FROM pop3_saved WHERE account=?", (self.account,)
            )
            return dict(rows.fetchall())
        except sqlite3.Error as exc:
            raise StateError(f"cannot read POP3 state {self.path!r}: {exc}") from exc

    def record(self, items: Iterable[tuple[str, str]], now: float | None = None) -> None:
        """Mark (uidl, location) pairs as saved, in one committed transaction."""
        stamp = time.time() if now is None else now
        rows = [(self.account, uidl, stamp, location) for uidl, location in items]
        if not rows:
            return
        db = self._conn()
        try:
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.executemany("INSERT OR REPLACE INTO pop3_saved VALUES (?, ?, ?, ?)", rows)
        except sqlite3.Error as exc:
            raise StateError(f"cannot write POP3 state {self.path!r}: {exc}") from exc

    def forget_except(self, present: Iterable[str]) -> int:
        """Drop rows whose UIDL the server no longer lists (they cannot come back); returns how many."""
        keep = set(present)
        gone = [u for u in self.saved() if u not in keep]
        if not gone:
            return 0
        db = self._conn()
        try:
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(
                    "DELETE FROM pop3_saved WHERE account=? AND uidl=?",
                    [(self.account, u) for u in gone],
                )
        except sqlite3.Error as exc:
            raise StateError(f"cannot write POP3 state {self.path!r}: {exc}") from exc
        return len(gone)

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()
