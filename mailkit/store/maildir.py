"""A Maildir writer whose ``add`` returns only once the message survives a crash.

Rule: a message is written to ``tmp/`` under a name no other writer can pick, fsynced, renamed
into ``new/`` (or ``cur/``), and the directory is fsynced; only then is its name returned.
A failure at any step removes the partial file from ``tmp/`` and raises the ``OSError``.
``open_writer()`` does the same for a message written piece by piece (never held whole).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import ConfigError

__all__ = ["Maildir", "MaildirWriter"]

_SUBDIRS = ("tmp", "new", "cur")
_FLAG_LETTERS = frozenset("DFPRST")
_counter = itertools.count(1)
_counter_lock = threading.Lock()


def _hostname() -> str:
    # The Maildir spec reserves "/" and ":" in names: write them as octal escapes.
    return socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "localhost"


class Maildir:
    """``Maildir(path).add(raw) -> name``. Creates ``tmp/``, ``new/`` and ``cur/`` on first write.

    ``fsync=False`` skips the fsyncs (for throwaway data; a crash may then lose messages).
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = Path(os.fspath(path)).expanduser()
        self.fsync = fsync
        self._ready = False
        self._host = _hostname()

    def __repr__(self) -> str:
        return f"Maildir({str(self.path)!r})"

    def create(self) -> None:
        """Make the three subdirectories (and the Maildir itself) if missing."""
        if self._ready:
            return
        created = False
        for sub in _SUBDIRS:
            target = self.path / sub
            if not target.is_dir():
                target.mkdir(parents=True, exist_ok=True, mode=0o700)
                created = True
        if created and self.fsync:
            _fsync_dir(self.path)
            _fsync_dir(self.path.parent)
        self._ready = True

    def _unique_name(self, size: int) -> str:
        return f"{self._unique_base()},S={size}"

    def _unique_base(self) -> str:
        with _counter_lock:
            seq = next(_counter)
        now = time.time()
        sec, usec = int(now), int((now % 1) * 1_000_000)
        # time.M<usec>P<pid>Q<seq>R<random>.host: unique across processes, threads and hosts.
        return f"{sec}.M{usec}P{os.getpid()}Q{seq}R{secrets.token_hex(4)}.{self._host}"

    def open_writer(self, flags: str = "", subdir: str = "new") -> MaildirWriter:
        """A message written in pieces: ``write()`` each, then ``commit()`` (durable) or ``abort()``.

        The size is not needed up front: the file grows in ``tmp/`` and gets its ``,S=<size>``
        name when it is renamed into ``subdir``. Until ``commit`` returns, no reader sees it.
        """
        info = self._info(flags, subdir)
        self.create()
        base = self._unique_base()
        tmp = self.path / "tmp" / base
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        return MaildirWriter(self, fd, tmp, base, info, subdir)

    @staticmethod
    def _info(flags: str, subdir: str) -> str:
        if subdir not in ("new", "cur"):
            raise ConfigError(f"Maildir messages go to 'new' or 'cur', not {subdir!r}")
        if not flags:
            return ""
        letters = set(flags)
        if not letters <= _FLAG_LETTERS:
            raise ConfigError(f"unknown Maildir flags {''.join(sorted(letters - _FLAG_LETTERS))!r}")
        if subdir == "new":
            raise ConfigError("a message with flags goes to 'cur', not 'new'")
        return ":2," + "".join(sorted(letters))

    def add(self, data: bytes, flags: str = "", subdir: str = "new") -> str:
        """Store one message durably; returns its file name (relative to ``subdir``)."""
        return self.add_chunks((data,), flags=flags, subdir=subdir, size=len(data))

    def add_chunks(
        self,
        chunks: Iterable[bytes],
        flags: str = "",
        subdir: str = "new",
        *,
        size: int | None = None,
    ) -> str:
        """Store a message given as chunks (e.g. streamed from the network) durably."""
        name = self._write(chunks, flags, subdir, size)
        if self.fsync:
            _fsync_dir(self.path / subdir)
        return name

    def add_many(
        self, messages: Sequence[bytes], flags: str = "", subdir: str = "new"
    ) -> list[str | OSError]:
        """Store several messages with one directory fsync; per message, a name or the OSError.

        The files are written, then fsynced in parallel (the file system commits them together),
        then renamed; no name is returned before the directory fsync, so each returned is durable.
        """
        info = self._info(flags, subdir)
        self.create()
        staged: list[tuple[int, Path, str] | OSError] = []
        for data in messages:
            try:
                staged.append(self._stage((data,), len(data)))
            except OSError as exc:
                staged.append(exc)
        synced: list[OSError | None] = [None] * len(staged)
        if self.fsync:
            fds = [(i, item[0]) for i, item in enumerate(staged) if not isinstance(item, OSError)]
            for (i, _), error in zip(fds, _fsync_all([fd for _, fd in fds]), strict=True):
                synced[i] = error
        results: list[str | OSError] = []
        for item, error in zip(staged, synced, strict=True):
            if isinstance(item, OSError):
                results.append(item)
                continue
            try:
                results.append(self._commit(item, info, subdir, fsync=False, error=error))
            except OSError as exc:
                results.append(exc)
        if self.fsync and any(isinstance(r, str) for r in results):
            _fsync_dir(self.path / subdir)
        return results

    def _write(self, chunks: Iterable[bytes], flags: str, subdir: str, size: int | None) -> str:
        info = self._info(flags, subdir)
        self.create()
        return self._commit(self._stage(chunks, size), info, subdir, fsync=self.fsync)

    def _stage(self, chunks: Iterable[bytes], size: int | None) -> tuple[int, Path, str]:
        """Write a message to tmp/ under a new name; the file stays open for its fsync."""
        if size is None:
            # The size goes into the name, which must be chosen before writing: buffer first.
            parts = list(chunks)
            chunks, size = parts, sum(len(p) for p in parts)
        name = self._unique_name(size)
        tmp = self.path / "tmp" / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            written = 0
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                    written += n
            if written != size:
                raise OSError(f"message is {written} bytes, {size} announced")
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):  # the original error is what matters
                tmp.unlink()
            raise
        return fd, tmp, name

    def _commit(
        self,
        staged: tuple[int, Path, str],
        info: str,
        subdir: str,
        *,
        fsync: bool,
        error: OSError | None = None,
    ) -> str:
        """fsync (unless done already), close, rename into ``subdir``; on failure remove tmp."""
        fd, tmp, name = staged
        try:
            try:
                if error is not None:
                    raise error
                if fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            final = name + info
            os.rename(tmp, self.path / subdir / final)
        except BaseException:
            with contextlib.suppress(OSError):  # the original error is what matters
                tmp.unlink()
            raise
        return final

    def names(self, subdir: str = "new") -> list[str]:
        """File names in ``new`` or ``cur`` (not sorted)."""
        try:
            return [n for n in os.listdir(self.path / subdir) if not n.startswith(".")]
        except FileNotFoundError:
            return []

    def read(self, name: str, subdir: str = "new") -> bytes:
        return (self.path / subdir / name).read_bytes()


class MaildirWriter:
    """One message on its way into a Maildir (from ``Maildir.open_writer``).

    Calls may come from different threads; ``abort`` waits for a ``write`` in progress, so a
    descriptor is never closed under a write (which could then land in a reused descriptor).
    """

    def __init__(self, maildir: Maildir, fd: int, tmp: Path, base: str, info: str, subdir: str) -> None:
        self._maildir = maildir
        self._fd: int | None = fd
        self.tmp = tmp
        self._base = base
        self._info = info
        self._subdir = subdir
        self._lock = threading.Lock()
        self.size = 0

    def __repr__(self) -> str:
        state = "open" if self._fd is not None else "closed"
        return f"<MaildirWriter {self.tmp.name} {self.size} bytes {state}>"

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data``; on an error the partial file is removed and the OSError raised."""
        with self._lock:
            fd = self._fd
            if fd is None:
                raise OSError("this Maildir message is already committed or aborted")
            view = memoryview(data)
            try:
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                    self.size += n
            except BaseException:
                self._drop()
                raise

    def commit(self) -> str:
        """fsync, rename into ``new/`` (or ``cur/``) as ``<name>,S=<size>``, fsync the directory;
        returns the name. On failure the partial file is removed and the OSError raised."""
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is None:
            raise OSError("this Maildir message is already committed or aborted")
        maildir = self._maildir
        name = f"{self._base},S={self.size}"
        final = maildir._commit((fd, self.tmp, name), self._info, self._subdir, fsync=maildir.fsync)
        if maildir.fsync:
            _fsync_dir(maildir.path / self._subdir)
        return final

    def abort(self) -> None:
        """Drop the partial message (closes and removes the ``tmp/`` file). Never raises."""
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
            with contextlib.suppress(OSError):
                self.tmp.unlink()


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _fsync_all(fds: list[int]) -> list[OSError | None]:
    """fsync every descriptor, several at once (os.fsync releases the GIL); per fd, its error."""

    def one(fd: int) -> OSError | None:
        try:
            os.fsync(fd)
        except OSError as exc:
            return exc
        return None

    if len(fds) < 2:
        return [one(fd) for fd in fds]
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="mailkit-fsync")
    return list(_pool.map(one, fds))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
