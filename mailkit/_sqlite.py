"""Opening the SQLite files mailkit keeps state in: POP3 UIDLs, IMAP sync state, the SMTP journal.

Rule: WAL journal, the durability the caller asks for, the schema applied and the file's ``meta``
rows checked; a file that cannot be used raises ``StateError`` and leaves no connection open.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from .errors import StateError

__all__ = ["open_database"]


def open_database(
    path: str,
    *,
    synchronous: str,
    schema: str,
    what: str,
    meta: Mapping[str, str],
    meta_column: str = "key",
) -> sqlite3.Connection:
    """Connect to ``path`` (``":memory:"`` too); ``schema`` must create a ``meta`` table.

    Each ``meta`` item is written into a new file and must match in an existing one: a file of
    another schema version or another account is refused. ``what`` names the file in errors.
    """
    db: sqlite3.Connection | None = None
    try:
        # Used from worker threads, one call at a time (callers await each one).
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.executescript(schema)
        for key, wanted in meta.items():
            # meta_column is one of the callers' constants, never input
            row = db.execute(f"SELECT value FROM meta WHERE {meta_column}=?", (key,)).fetchone()  # noqa: S608
            if row is None:
                db.execute("INSERT INTO meta VALUES (?, ?)", (key, wanted))
            elif row[0] != wanted:
                raise StateError(f"{what} has {key} {row[0]!r}, expected {wanted!r}")
    except BaseException as exc:
        if db is not None:
            db.close()  # also on errors that are not SQLite's (interrupted, out of memory)
        if isinstance(exc, sqlite3.Error):
            raise StateError(f"cannot use {what}: {exc}") from exc
        raise
    return db
