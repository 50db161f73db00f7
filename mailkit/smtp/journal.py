"""The bulk-mailing journal: each message's state, durably, so that a restart never double-sends.

Rule: the state is written *before* each step that could deliver mail, never after only:

    queued -> in_flight (before MAIL) -> unknown (before the end-of-data mark) -> accepted
                                                                              -> deferred / failed

On restart, ``in_flight`` means the end of DATA was never written (safe to send again);
``unknown`` means it was, and the reply was not recorded: the message may have been delivered,
so it is resent only when the user asks. ``accepted`` recipients are never sent to again.

``JournalStore`` is the small interface a shared database can implement instead of SQLite.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from .._sqlite import open_database
from ..errors import Reply, StateError

__all__ = ["JournalEntry", "JournalState", "JournalStore", "SQLiteJournal", "open_journal"]

JournalState = Literal["queued", "in_flight", "accepted", "deferred", "failed", "unknown"]
STATES = ("queued", "in_flight", "accepted", "deferred", "failed", "unknown")


@dataclass(frozen=True)
class JournalEntry:
    key: str
    message_id: str
    state: JournalState
    recipients: tuple[str, ...]
    accepted: tuple[str, ...] = ()
    refused: Mapping[str, Reply] = field(default_factory=dict)
    attempts: int = 0
    error: str | None = None
    updated: float = 0.0

    @property
    def pending_recipients(self) -> tuple[str, ...]:
        """Recipients that have not been accepted (nor permanently refused) yet."""
        permanent = {r for r, reply in self.refused.items() if not _temporary(reply)}
        done = set(self.accepted) | permanent
        return tuple(r for r in self.recipients if r not in done)


def _temporary(reply: Reply) -> bool:
    return isinstance(reply.code, int) and 400 <= reply.code < 500


@runtime_checkable
class JournalStore(Protocol):
    """Where a campaign's state lives. Each method must be durable when it returns, except
    ``mark(..., durable=False)``, which may be lost in a crash (it is informational only)."""

    def get(self, key: str) -> JournalEntry | None: ...

    def mark(
        self,
        key: str,
        state: JournalState,
        *,
        message_id: str,
        recipients: Iterable[str],
        accepted: Iterable[str] = (),
        refused: Mapping[str, Reply] | None = None,
        error: str | None = None,
        attempt: bool = False,
        durable: bool = True,
    ) -> None: ...

    def entries(self, state: JournalState | None = None) -> list[JournalEntry]: ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    key TEXT PRIMARY KEY,
    message_id TEXT NOT NULL,
    state TEXT NOT NULL,
    recipients TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS recipients (
    key TEXT NOT NULL,
    address TEXT NOT NULL,
    state TEXT NOT NULL,
    code INTEGER,
    enhanced TEXT,
    text TEXT,
    PRIMARY KEY (key, address)
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_VERSION = "1"


class SQLiteJournal:
    """The default store: one SQLite file (WAL), a commit per state change.

    ``synchronous="FULL"`` survives power loss; ``"NORMAL"`` survives a killed process (kill -9)
    but not a power cut, and is much faster on real disks.
    """

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "FULL") -> None:
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, NORMAL or EXTRA")
        self.path = os.fspath(path)
        self._synchronous = synchronous
        self._durable = True
        self._db = open_database(
            self.path,
            synchronous=synchronous,
            schema=_SCHEMA,
            what=f"journal {self.path!r}",
            meta={"version": _VERSION},
            meta_column="name",
        )

    def get(self, key: str) -> JournalEntry | None:
        row = self._db.execute(
            "SELECT key, message_id, state, recipients, attempts, error, updated FROM messages WHERE key=?",
            (key,),
        ).fetchone()
        return None if row is None else self._entry(row)

    def _entry(self, row: tuple[object, ...]) -> JournalEntry:
        key, message_id, state, recipients, attempts, error, updated = row
        accepted: list[str] = []
        refused: dict[str, Reply] = {}
        for address, rstate, code, enhanced, text in self._db.execute(
            "SELECT address, state, code, enhanced, text FROM recipients WHERE key=?", (key,)
        ):
            if rstate == "accepted":
                accepted.append(address)
            else:
                refused[address] = Reply("smtp", code, text or "", enhanced)
        if state not in STATES:
            raise StateError(f"journal {self.path!r}: unknown state {state!r} for {key!r}")
        return JournalEntry(
            key=str(key), message_id=str(message_id), state=state,  # type: ignore[arg-type]
            recipients=tuple(json.loads(str(recipients))), accepted=tuple(accepted), refused=refused,
            attempts=int(attempts), error=None if error is None else str(error),  # type: ignore[call-overload]
            updated=float(updated),  # type: ignore[arg-type]
        )  # fmt: skip

    def mark(
        self,
        key: str,
        state: JournalState,
        *,
        message_id: str,
        recipients: Iterable[str],
        accepted: Iterable[str] = (),
        refused: Mapping[str, Reply] | None = None,
        error: str | None = None,
        attempt: bool = False,
        durable: bool = True,
    ) -> None:
        if state not in STATES:
            raise ValueError(f"unknown journal state {state!r}")
        db = self._db
        if durable != self._durable:
            # A non-durable mark is flushed by the next durable one (same WAL, in order).
            db.execute(f"PRAGMA synchronous={self._synchronous if durable else 'OFF'}")
            self._durable = durable
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT INTO messages (key, message_id, state, recipients, attempts, error, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET message_id=excluded.message_id, "
                "state=excluded.state, attempts=attempts + ?, error=excluded.error, updated=excluded.updated",
                (key, message_id, state, json.dumps(list(recipients)), int(attempt), error, time.time(),
                 int(attempt)),
            )  # fmt: skip
            rows: list[tuple[str, str, str, int | None, str | None, str | None]]
            rows = [(key, a, "accepted", 250, None, None) for a in accepted]
            rows += [
                (key, a, "refused", r.code if isinstance(r.code, int) else None, r.enhanced, r.text)
                for a, r in (refused or {}).items()
            ]
            if rows:
                db.executemany(
                    "INSERT INTO recipients (key, address, state, code, enhanced, text) VALUES (?,?,?,?,?,?) "
                    "ON CONFLICT(key, address) DO UPDATE SET state=excluded.state, code=excluded.code, "
                    "enhanced=excluded.enhanced, text=excluded.text WHERE recipients.state != 'accepted'",
                    rows,
                )
            db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise StateError(f"journal {self.path!r}: cannot record {key!r}: {exc}") from None

    def entries(self, state: JournalState | None = None) -> list[JournalEntry]:
        sql = "SELECT key, message_id, state, recipients, attempts, error, updated FROM messages"
        rows = (
            self._db.execute(sql + " WHERE state=? ORDER BY rowid", (state,)).fetchall()
            if state
            else self._db.execute(sql + " ORDER BY rowid").fetchall()
        )
        return [self._entry(row) for row in rows]

    def counts(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT state, count(*) FROM messages GROUP BY state").fetchall())

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SQLiteJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_journal(journal: str | os.PathLike[str] | JournalStore) -> tuple[JournalStore, bool]:
    """A store for ``journal``; the flag says whether we opened it (and so must close it)."""
    if isinstance(journal, str | os.PathLike):
        return SQLiteJournal(journal), True
    if isinstance(journal, JournalStore):
        return journal, False
    raise TypeError(f"journal must be a path or a JournalStore, not {type(journal).__name__}")
