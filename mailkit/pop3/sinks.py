"""Where downloaded messages go. A sink's ``save`` returning means "durably kept": only then may
the message be deleted from the server; raising means "not kept", and the message stays there.

Write your own by subclassing ``Sink`` and implementing ``save`` (``save_many`` may batch). A sink
that can take a message piece by piece also implements ``open_stream``: big messages then go to
it as they arrive and are never held whole in memory; ``SinkStream.commit`` returning means
"durably kept", like ``save``.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..store.maildir import Maildir, MaildirWriter

__all__ = ["CallbackSink", "MaildirSink", "MessageInfo", "Sink", "SinkStream", "as_sink"]


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """What the server told us about a message before we fetched it."""

    number: int  # valid in this session only
    uidl: str | None  # stable across sessions (None if the server has no UIDL)
    size: int  # octets, as LIST reported


class Sink:
    """Base class: implement ``save``; it returns a location (any string naming where it went)."""

    async def save(self, raw: bytes, info: MessageInfo) -> str:
        raise NotImplementedError

    async def save_many(self, items: Sequence[tuple[bytes, MessageInfo]]) -> list[str | Exception]:
        """Save several messages; per message its location, or the exception that refused it."""
        results: list[str | Exception] = []
        for raw, info in items:
            try:
                results.append(await self.save(raw, info))
            except Exception as exc:  # noqa: BLE001 - reported per message, the message stays
                results.append(exc)
        return results

    def default_state(self) -> Path | None:
        """Where the UIDL state lives when the caller gives none (None: in memory)."""
        return None

    async def open_stream(self, info: MessageInfo) -> SinkStream:
        """Start saving a message that will arrive in pieces. Sinks that cannot stream leave this
        alone: they get big messages whole, through ``save``."""
        raise NotImplementedError

    @property
    def streams(self) -> bool:
        """Whether this sink takes big messages piece by piece (it overrides ``open_stream``)."""
        return type(self).open_stream is not Sink.open_stream


class SinkStream:
    """One message being saved in pieces: ``write`` each (in order), then ``commit`` or ``abort``.

    ``commit`` returns the location once the message is durably kept; ``abort`` (never raising)
    drops whatever was written: the message then stays on the server.
    """

    async def write(self, data: bytes) -> None:
        raise NotImplementedError

    async def commit(self) -> str:
        raise NotImplementedError

    async def abort(self) -> None:
        raise NotImplementedError


class _MaildirStream(SinkStream):
    # Pieces are gathered to this size and written from a worker thread: few thread hops, and the
    # event loop never waits for the disk.
    flush_size = 1024 * 1024

    def __init__(self, writer: MaildirWriter) -> None:
        self.writer = writer
        self.pending: list[bytes] = []
        self.pending_size = 0

    async def write(self, data: bytes) -> None:
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size >= self.flush_size:
            await self._flush()

    async def _flush(self) -> None:
        data = b"".join(self.pending) if len(self.pending) > 1 else self.pending[0]
        self.pending, self.pending_size = [], 0
        await asyncio.to_thread(self.writer.write, data)

    async def commit(self) -> str:
        if self.pending:
            await self._flush()
        return "new/" + await asyncio.to_thread(self.writer.commit)

    async def abort(self) -> None:
        self.pending, self.pending_size = [], 0
        # Not in a thread: it must complete even when the download is being cancelled.
        self.writer.abort()


class MaildirSink(Sink):
    """Delivers into a Maildir's ``new/``: fsync the file, rename, fsync the directory."""

    def __init__(self, maildir: Maildir | str | os.PathLike[str]) -> None:
        self.maildir = maildir if isinstance(maildir, Maildir) else Maildir(maildir)

    def __repr__(self) -> str:
        return f"MaildirSink({str(self.maildir.path)!r})"

    async def save(self, raw: bytes, info: MessageInfo) -> str:
        return "new/" + await asyncio.to_thread(self.maildir.add, raw)

    async def save_many(self, items: Sequence[tuple[bytes, MessageInfo]]) -> list[str | Exception]:
        # One thread hop and one directory fsync per batch.
        results = await asyncio.to_thread(self.maildir.add_many, [raw for raw, _ in items])
        return [r if isinstance(r, Exception) else "new/" + r for r in results]

    async def open_stream(self, info: MessageInfo) -> SinkStream:
        return _MaildirStream(await asyncio.to_thread(self.maildir.open_writer))

    def default_state(self) -> Path:
        # Maildir readers look only in tmp/, new/ and cur/; a dotfile beside them is left alone.
        return self.maildir.path / ".mailkit-pop3.db"


Callback = Callable[[bytes, MessageInfo], object]


class CallbackSink(Sink):
    """Calls ``fn(raw, info)`` (plain or async); the message is deleted only if it returned.

    A string result is used as the location. Blocking work in a plain function holds up the
    event loop: pass ``in_thread=True`` to run it in a worker thread.
    """

    def __init__(self, fn: Callback, *, in_thread: bool = False) -> None:
        if not callable(fn):
            raise ConfigError("CallbackSink needs a callable")
        self.fn = fn
        self.in_thread = in_thread

    async def save(self, raw: bytes, info: MessageInfo) -> str:
        if self.in_thread:
            result = await asyncio.to_thread(self.fn, raw, info)
        else:
            result = self.fn(raw, info)
        if inspect.isawaitable(result):
            result = await result
        return _location(result, info)

    async def save_many(self, items: Sequence[tuple[bytes, MessageInfo]]) -> list[str | Exception]:
        if self.in_thread:
            return await super().save_many(items)
        # The same as save() for each, without a coroutine per message (thousands per second).
        fn = self.fn
        results: list[str | Exception] = []
        for raw, info in items:
            try:
                result = fn(raw, info)
                if inspect.isawaitable(result):
                    result = await result
                results.append(_location(result, info))
            except Exception as exc:  # noqa: BLE001 - reported per message, the message stays
                results.append(exc)
        return results


def _location(result: object, info: MessageInfo) -> str:
    return result if isinstance(result, str) else f"callback:{info.uidl or info.number}"


def as_sink(into: Sink | str | os.PathLike[str] | Callback) -> Sink:
    """``into=``: a Sink, a Maildir path, or a callable."""
    if isinstance(into, Sink):
        return into
    if isinstance(into, (str, os.PathLike)):
        return MaildirSink(into)
    if isinstance(into, Maildir):
        return MaildirSink(into)
    if callable(into):
        return CallbackSink(into)
    raise ConfigError(f"into= must be a Maildir path, a Sink or a callable, not {type(into).__name__}")
