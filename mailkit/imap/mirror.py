"""The Maildir side of ``sync(into=...)``: one file per (UIDVALIDITY, UID), flags in the name.

Rule: a message file is fsynced before its change is handed out, and its directory is fsynced
before the change is recorded in the sync state; names are derived from (UIDVALIDITY, UID), so a
change delivered again after a crash finds its file instead of writing a duplicate. Files are only
ever removed by a UID of the current UIDVALIDITY.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import socket
from collections.abc import Iterable
from pathlib import Path

__all__ = ["MaildirMirror", "maildir_flags"]

_LETTERS = {"\\draft": "D", "\\flagged": "F", "\\answered": "R", "\\seen": "S", "\\deleted": "T"}
_NAME = re.compile(r"^mk\.(\d+)\.(\d+)\.")


def maildir_flags(flags: Iterable[str]) -> str:
    """IMAP system flags -> Maildir info letters, in ASCII order (keywords are not mirrored)."""
    return "".join(sorted({_LETTERS[f.lower()] for f in flags if f.lower() in _LETTERS}))


_POOL: concurrent.futures.ThreadPoolExecutor | None = None


def _fsync_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = concurrent.futures.ThreadPoolExecutor(8, "mailkit-fsync")
    return _POOL


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class MaildirMirror:
    """Writes, renames and removes the mirrored messages of one mailbox in one Maildir."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(os.fspath(path)).expanduser()
        self._root = str(self.root)
        self.fsync = fsync
        host = socket.gethostname() or "localhost"
        self._host = host.replace("/", "\\057").replace(":", "\\072")
        self._index: dict[tuple[int, int], str] | None = None
        self._dirty: set[Path] = set()

    def create(self) -> None:
        for sub in ("tmp", "new", "cur"):
            (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)

    @property
    def tmp(self) -> str:
        return str(self.root / "tmp")

    def _base(self, uidvalidity: int, uid: int) -> str:
        return f"mk.{uidvalidity}.{uid}.{self._host}"

    def _lookup(self, uidvalidity: int, uid: int, hint: str | None) -> str | None:
        """Relative path of the message's file, if present (``hint`` is where state saw it)."""
        if hint is not None and (self.root / hint).exists():
            return hint
        if self._index is None:
            index: dict[tuple[int, int], str] = {}
            for sub in ("new", "cur"):
                for entry in os.scandir(self.root / sub):
                    match = _NAME.match(entry.name)
                    if match:
                        index[int(match.group(1)), int(match.group(2))] = f"{sub}/{entry.name}"
            self._index = index
        rel = self._index.get((uidvalidity, uid))
        if rel is not None and not (self.root / rel).exists():
            return None
        return rel

    def _target(self, uidvalidity: int, uid: int, flags: Iterable[str]) -> str:
        letters = maildir_flags(flags)
        base = self._base(uidvalidity, uid)
        # Unflagged messages go to new/ (unseen by any reader yet); others to cur/ with the info.
        return f"new/{base}" if not letters else f"cur/{base}:2,{letters}"

    def add(
        self,
        uidvalidity: int,
        uid: int,
        flags: Iterable[str],
        data: bytes | None = None,
        spooled: str | None = None,
    ) -> str:
        """Store a message (bytes, or a file already written under tmp/); return its path."""
        flags = tuple(flags)
        existing = self._lookup(uidvalidity, uid, None)
        if existing is not None:
            if spooled is not None:
                os.unlink(spooled)
            return self.set_flags(uidvalidity, uid, flags, existing)
        target = self._target(uidvalidity, uid, flags)
        if spooled is not None:
            tmp = Path(spooled)
            if self.fsync:
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        else:
            assert data is not None
            tmp = self.root / "tmp" / self._base(uidvalidity, uid)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        os.rename(tmp, self.root / target)
        self._dirty.add(self.root / target.split("/", 1)[0])
        if self._index is not None:
            self._index[uidvalidity, uid] = target
        return target

    def add_many(
        self, uidvalidity: int, items: list[tuple[int, tuple[str, ...], bytes | None, str | None]]
    ) -> list[str]:
        """Store a batch: (uid, flags, data, spooled path) each; return their paths, in order.

        Every file is written and fsynced before it is renamed into place, as ``add`` does;
        the fsyncs of a batch run in parallel (the file system commits them together), which
        is what makes per-message durability affordable.
        """
        paths: list[str | None] = [None] * len(items)
        pending: list[tuple[int, int, str, str]] = []  # index, fd, tmp path, target
        try:
            for index, (uid, flags, data, spooled) in enumerate(items):
                existing = self._lookup(uidvalidity, uid, None)
                if existing is not None:
                    if spooled is not None:
                        os.unlink(spooled)
                    paths[index] = self.set_flags(uidvalidity, uid, flags, existing)
                    continue
                target = self._target(uidvalidity, uid, flags)
                if spooled is not None:
                    tmp = spooled
                    fd = os.open(tmp, os.O_RDONLY)
                else:
                    assert data is not None
                    tmp = f"{self._root}/tmp/{self._base(uidvalidity, uid)}"  # noqa: S108 - Maildir tmp/
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    pending.append((index, fd, tmp, target))
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    continue
                pending.append((index, fd, tmp, target))
            if self.fsync and pending:
                list(_fsync_pool().map(os.fsync, [fd for _, fd, _, _ in pending]))
        finally:
            for _, fd, _, _ in pending:
                os.close(fd)
        for index, _, tmp, target in pending:
            os.rename(tmp, f"{self._root}/{target}")
            self._dirty.add(self.root / target[:3])  # "new" or "cur"
            uid = items[index][0]
            if self._index is not None:
                self._index[uidvalidity, uid] = target
            paths[index] = target
        return [p or "" for p in paths]

    def set_flags(self, uidvalidity: int, uid: int, flags: Iterable[str], hint: str | None = None) -> str:
        """Rename the file to carry ``flags``; returns the new path (unchanged if already right)."""
        current = self._lookup(uidvalidity, uid, hint)
        if current is None:
            return ""
        target = self._target(uidvalidity, uid, flags)
        if current.startswith("cur/") and target.startswith("new/"):
            target = f"cur/{self._base(uidvalidity, uid)}:2,"  # once read, a message stays in cur/
        if current != target:
            os.rename(self.root / current, self.root / target)
            self._dirty.update({self.root / current.split("/", 1)[0], self.root / "cur"})
            if self._index is not None:
                self._index[uidvalidity, uid] = target
        return target

    def remove(self, uidvalidity: int, uid: int, hint: str | None = None) -> None:
        current = self._lookup(uidvalidity, uid, hint)
        if current is None:
            return
        os.unlink(self.root / current)
        self._dirty.add(self.root / current.split("/", 1)[0])
        if self._index is not None:
            self._index.pop((uidvalidity, uid), None)

    def flush(self) -> None:
        """fsync the directories changed since the last flush (renames and unlinks made durable)."""
        dirty, self._dirty = self._dirty, set()
        if self.fsync:
            for path in dirty:
                _fsync_dir(path)
