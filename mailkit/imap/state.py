"""Sync state per mailbox in SQLite: UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ and the known UIDs/flags.

Rule: the watermarks (UIDNEXT, HIGHESTMODSEQ) are written only when a run has handed every change
to its consumer; per-message rows are written as each change is taken. So a crash can only make
the next run see some changes again, never miss one. WAL journal: a commit survives a killed
process without an fsync per change.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .._sqlite import open_database
from ..errors import StateError

__all__ = ["MailboxState", "SyncState"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS mailbox (
    name TEXT PRIMARY KEY,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER,
    highestmodseq INTEGER,
    messages INTEGER
);
CREATE TABLE IF NOT EXISTS message (
    mailbox TEXT NOT NULL,
    uid INTEGER NOT NULL,
    flags TEXT NOT NULL,
    path TEXT,
    PRIMARY KEY (mailbox, uid)
) WITHOUT ROWID;
"""
_VERSION = "1"


@dataclass(frozen=True)
class MailboxState:
    name: str
    uidvalidity: int
    uidnext: int | None
    highestmodseq: int | None
    messages: int | None


def _join(flags: Iterable[str]) -> str:
    return " ".join(sorted(flags))


def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split()) if text else ()


class SyncState:
    """``SyncState("sync.db")`` (or ``None`` for in memory). Owned by one account."""

    def __init__(self, path: str | os.PathLike[str] | None, *, account: str | None = None) -> None:
        self.path = None if path is None else Path(os.fspath(path)).expanduser()
        self._account = account
        self._db: sqlite3.Connection | None = None

    def open(self) -> SyncState:
        if self._db is not None:
            return self
        target = ":memory:" if self.path is None else str(self.path)
        meta = {"version": _VERSION}
        if self._account is not None:
            meta["account"] = self._account  # a file is never read as another account's
        self._db = open_database(
            target, synchronous="NORMAL", schema=_SCHEMA, what=f"sync state {target}", meta=meta
        )
        return self

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self.open()
        assert self._db is not None
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _exec(self, sql: str, args: tuple[object, ...] = ()) -> sqlite3.Cursor:
        try:
            return self.db.execute(sql, args)
        except sqlite3.DatabaseError as exc:
            raise StateError(f"sync state {self.path}: {exc}") from exc

    # --- reads ------------------------------------------------------------------------------
    def mailbox(self, name: str) -> MailboxState | None:
        row = self._exec(
            "SELECT uidvalidity, uidnext, highestmodseq, messages FROM mailbox WHERE name=?",
            (name,),
        ).fetchone()
        return None if row is None else MailboxState(name, *row)

    def known(self, name: str) -> dict[int, tuple[str, ...]]:
        """Every known UID with its flags (for the full comparison when CONDSTORE is missing)."""
        rows = self._exec("SELECT uid, flags FROM message WHERE mailbox=?", (name,))
        return {uid: _split(flags) for uid, flags in rows}

    def flags_of(self, name: str, uids: Iterable[int]) -> dict[int, tuple[str, ...]]:
        out: dict[int, tuple[str, ...]] = {}
        batch = list(uids)
        for i in range(0, len(batch), 500):
            chunk = batch[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._exec(
                # only "?" placeholders are formatted in; the values are bound parameters
                f"SELECT uid, flags FROM message WHERE mailbox=? AND uid IN ({marks})",  # noqa: S608
                (name, *chunk),
            )
            out.update((uid, _split(flags)) for uid, flags in rows)
        return out

    def uids_from(self, name: str, low: int) -> set[int]:
        rows = self._exec("SELECT uid FROM message WHERE mailbox=? AND uid>=?", (name, low))
        return {uid for (uid,) in rows}

    def count(self, name: str) -> int:
        row = self._exec("SELECT COUNT(*) FROM message WHERE mailbox=?", (name,)).fetchone()
        return int(row[0])

    def path_of(self, name: str, uid: int) -> str | None:
        row = self._exec("SELECT path FROM message WHERE mailbox=? AND uid=?", (name, uid)).fetchone()
        return None if row is None else row[0]

    # --- writes (each one committed: it records a change the consumer has taken) -------------
    def put(self, name: str, uid: int, flags: Iterable[str], path: str | None = None) -> None:
        self._exec(
            "INSERT INTO message (mailbox, uid, flags, path) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (mailbox, uid) DO UPDATE SET flags=excluded.flags, "
            "path=COALESCE(excluded.path, message.path)",
            (name, uid, _join(flags), path),
        )

    def forget(self, name: str, uid: int) -> None:
        self._exec("DELETE FROM message WHERE mailbox=? AND uid=?", (name, uid))

    def reset(self, name: str, uidvalidity: int) -> None:
        """A new UIDVALIDITY: forget every UID (they name other messages now)."""
        with self.db:
            self._exec("DELETE FROM message WHERE mailbox=?", (name,))
            self._exec(
                "INSERT INTO mailbox (name, uidvalidity) VALUES (?, ?) ON CONFLICT (name) DO "
                "UPDATE SET uidvalidity=excluded.uidvalidity, uidnext=NULL, highestmodseq=NULL, "
                "messages=NULL",
                (name, uidvalidity),
            )

    def set_mailbox(
        self, name: str, uidvalidity: int, uidnext: int | None, highestmodseq: int | None
    ) -> None:
        """Advance the watermarks: only after every change of the run was taken."""
        self._exec(
            "INSERT INTO mailbox (name, uidvalidity, uidnext, highestmodseq, messages) "
            "VALUES (?, ?, ?, ?, (SELECT COUNT(*) FROM message WHERE mailbox=?)) "
            "ON CONFLICT (name) DO UPDATE SET uidvalidity=excluded.uidvalidity, "
            "uidnext=excluded.uidnext, highestmodseq=excluded.highestmodseq, "
            "messages=excluded.messages",
            (name, uidvalidity, uidnext, highestmodseq, name),
        )
