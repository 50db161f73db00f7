"""Download-and-delete in the one order that cannot lose a message.

Rule: RETR -> saved durably by the sink -> UIDL recorded in committed state -> DELE -> QUIT.
If anything fails before QUIT's +OK the server keeps every message (RFC 1939 deletes only in the
UPDATE state), and the next run skips what the state says is already saved. A message the sink
refused is never deleted. RETRs are pipelined ahead while earlier messages are being saved.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import CommandError, ConfigError
from ._protocol import Command, Response, parse_scan_listing, parse_uidl_listing
from ._state import UIDLState
from .client import POP3Client
from .sinks import MessageInfo, Sink

__all__ = ["DownloadReport", "MessageError", "Progress", "Saved", "Skipped", "download"]

log = logging.getLogger("mailkit.pop3")

_DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Saved:
    uidl: str | None
    size: int
    location: str


@dataclass(frozen=True, slots=True)
class Skipped:
    uidl: str | None
    size: int
    reason: str  # "already saved", "too large", "max_messages"


@dataclass(frozen=True, slots=True)
class MessageError:
    uidl: str | None
    size: int
    error: Exception

    def __str__(self) -> str:
        return f"{self.uidl or '?'}: {self.error}"


@dataclass(frozen=True)
class DownloadReport:
    """What one run did. ``deleted`` lists UIDLs (or numbers) the server confirmed removing."""

    downloaded: tuple[Saved, ...] = ()
    deleted: tuple[str | int, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    errors: tuple[MessageError, ...] = ()
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def bytes(self) -> int:
        return sum(s.size for s in self.downloaded)

    def summary(self) -> str:
        return (
            f"{len(self.downloaded)} downloaded ({self.bytes} bytes), {len(self.deleted)} deleted, "
            f"{len(self.skipped)} skipped, {len(self.errors)} errors in {self.seconds:.2f} s"
        )


@dataclass
class Progress:
    """Passed to ``progress=`` after each message is settled (saved, refused or failed)."""

    total: int = 0
    total_bytes: int = 0
    done: int = 0
    done_bytes: int = 0
    errors: int = 0


@dataclass
class _Run:
    """The mutable bookkeeping of one download; becomes a DownloadReport at the end."""

    downloaded: list[Saved] = field(default_factory=list)
    dele_sent: list[str | int] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    errors: list[MessageError] = field(default_factory=list)


async def download(
    client: POP3Client,
    sink: Sink,
    state: UIDLState | None,
    *,
    keep: bool = False,
    delete_after_days: float | None = None,
    max_messages: int | None = None,
    max_size: int | None = None,
    progress: Callable[[Progress], object] | None = None,
    window_bytes: int = 4 * 1024 * 1024,
    batch_messages: int = 256,
    batch_bytes: int = 8 * 1024 * 1024,
    now: float | None = None,
) -> DownloadReport:
    """Run one download on a logged-in ``client``, then QUIT. See the module rule."""
    _check_options(keep, delete_after_days, max_messages, max_size)
    started = time.monotonic()
    clock = time.time() if now is None else now
    run = _Run()

    listing = await client.execute_many([Command("UIDL"), Command("LIST")], check=False)
    uidl_resp, list_resp = listing
    if not list_resp.ok:
        raise CommandError("POP3 server refused LIST", reply=list_resp.reply)
    sizes = parse_scan_listing(list_resp)
    uidls: dict[int, str] | None = parse_uidl_listing(uidl_resp) if uidl_resp.ok else None
    if uidls is None:
        if keep:
            raise CommandError("keep=True needs UIDL, which this POP3 server refused", reply=uidl_resp.reply)
        log.warning("POP3 server has no UIDL: a crash between save and QUIT leaves duplicates")
        state = None

    saved: dict[str, float] = {}
    if state is not None and uidls is not None:
        present = list(uidls.values())
        saved = await asyncio.to_thread(_load_state, state, present)

    # A UIDL listed twice (a broken server) identifies nothing: such messages are always fetched,
    # never deleted on the strength of an earlier save.
    counts = Counter(uidls.values() if uidls is not None else ())
    ambiguous = {u for u, count in counts.items() if count > 1}
    to_delete: list[int] = []
    to_fetch: list[int] = []
    for n in sorted(sizes):
        uid = uidls.get(n) if uidls is not None else None
        size = sizes[n]
        if uid is not None and uid in saved and uid not in ambiguous:
            old = delete_after_days is not None and clock - saved[uid] >= delete_after_days * _DAY
            if not keep or old:
                to_delete.append(n)
            else:
                run.skipped.append(Skipped(uid, size, "already saved"))
        elif max_size is not None and size > max_size:
            run.skipped.append(Skipped(uid, size, "too large"))
        elif max_messages is not None and len(to_fetch) >= max_messages:
            run.skipped.append(Skipped(uid, size, "max_messages"))
        else:
            to_fetch.append(n)

    tracker = Progress(total=len(to_fetch), total_bytes=sum(sizes[n] for n in to_fetch))
    engine = _Engine(client, sink, state, run, sizes, uidls, keep, tracker, progress)
    engine.window_bytes = window_bytes
    engine.batch_messages = batch_messages
    engine.batch_bytes = batch_bytes
    await engine.go(to_fetch, to_delete)

    await client.quit()  # deletions are committed by the server's +OK to QUIT
    return DownloadReport(
        downloaded=tuple(run.downloaded),
        deleted=tuple(run.dele_sent),
        skipped=tuple(run.skipped),
        errors=tuple(run.errors),
        seconds=time.monotonic() - started,
    )


def _check_options(
    keep: bool, delete_after_days: float | None, max_messages: int | None, max_size: int | None
) -> None:
    if delete_after_days is not None:
        if not keep:
            raise ConfigError("delete_after_days= goes with keep=True")
        if isinstance(delete_after_days, bool) or not delete_after_days >= 0:
            raise ConfigError(f"delete_after_days must be 0 or more, not {delete_after_days!r}")
    for name, value in (("max_messages", max_messages), ("max_size", max_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ConfigError(f"{name} must be a whole number of 0 or more, not {value!r}")


def _load_state(state: UIDLState, present: list[str]) -> dict[str, float]:
    state.open()
    # UIDLs the server no longer lists were deleted for good; forget them so the file stays small.
    state.forget_except(present)
    return state.saved()


class _Engine:
    """The pipelined loop: RETRs go out ahead; batches are saved, recorded, then DELEd."""

    window_bytes = 4 * 1024 * 1024
    # A deep window and large batches: DELEs share the window with RETRs, and a shallow one drains
    # between batches (the server then waits for us). Memory stays bounded by window_bytes.
    window_commands = 512
    batch_messages = 256
    batch_bytes = 8 * 1024 * 1024

    def __init__(
        self,
        client: POP3Client,
        sink: Sink,
        state: UIDLState | None,
        run: _Run,
        sizes: dict[int, int],
        uidls: dict[int, str] | None,
        keep: bool,
        tracker: Progress,
        progress: Callable[[Progress], object] | None,
    ) -> None:
        self.client = client
        self.sink = sink
        self.state = state
        self.run = run
        self.sizes = sizes
        self.uidls = uidls
        self.keep = keep
        self.tracker = tracker
        self.progress = progress
        self.outbox: deque[Command] = deque()
        self.in_flight: deque[Command] = deque()
        self.in_flight_bytes = 0
        self.retr_left = 0
        self.batch: list[tuple[bytes, MessageInfo]] = []
        self.batch_size = 0

    def _info(self, n: int) -> MessageInfo:
        return MessageInfo(n, self.uidls.get(n) if self.uidls else None, self.sizes.get(n, 0))

    async def go(self, to_fetch: list[int], to_delete: list[int]) -> None:
        self.outbox.extend(Command("DELE", (str(n),)) for n in to_delete)
        self.outbox.extend(Command("RETR", (str(n),)) for n in to_fetch)
        self.retr_left = len(to_fetch)
        limit = self.window_commands if self.client.pipelining else 1
        # Refill only once half the window has drained, so commands leave in few large writes.
        low_water = limit // 2
        while self.outbox or self.in_flight or self.batch:
            if len(self.in_flight) <= low_water:
                self._fill(limit)
            if self.in_flight:
                response = await self.client.response()
                command = self.in_flight.popleft()
                await self._handle(command, response)
            if self.batch and (
                len(self.batch) >= self.batch_messages
                or self.batch_size >= self.batch_bytes
                or self.retr_left == 0
            ):
                await self._flush()

    def _fill(self, limit: int) -> None:
        sending: list[Command] = []
        while self.outbox and len(self.in_flight) < limit:
            command = self.outbox[0]
            if command.verb == "RETR":
                size = self.sizes.get(int(command.args[0]), 0)
                if self.in_flight_bytes and self.in_flight_bytes + size > self.window_bytes:
                    break  # bounds how much of the mailbox is in flight (and in memory)
                self.in_flight_bytes += size
            self.outbox.popleft()
            self.in_flight.append(command)
            sending.append(command)
        if sending:
            self.client.send(sending)

    async def _handle(self, command: Command, response: Response) -> None:
        n = int(command.args[0])
        if command.verb == "DELE":
            uidl = self.uidls.get(n) if self.uidls else None
            if response.ok:
                self.run.dele_sent.append(uidl or n)
            else:
                error = CommandError("DELE refused", reply=response.reply)
                self.run.errors.append(MessageError(uidl, self.sizes.get(n, 0), error))
            return
        info = self._info(n)
        self.in_flight_bytes -= info.size
        self.retr_left -= 1
        if not response.ok or response.body is None:
            self.run.errors.append(
                MessageError(info.uidl, info.size, CommandError("RETR refused", reply=response.reply))
            )
            self._tick(info, failed=True)
            return
        self.batch.append((response.body, info))
        self.batch_size += len(response.body)

    async def _flush(self) -> None:
        batch, self.batch, self.batch_size = self.batch, [], 0
        results = await self.sink.save_many(batch)
        if len(results) != len(batch):
            raise ConfigError(f"{self.sink!r}.save_many returned {len(results)} results for {len(batch)}")
        kept: list[tuple[MessageInfo, str]] = []
        for (raw, info), result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                self.run.errors.append(MessageError(info.uidl, info.size, result))
                self._tick(info, failed=True)
            else:
                kept.append((info, result))
                self.run.downloaded.append(Saved(info.uidl, len(raw), result))
                self._tick(info)
        if self.state is not None:
            records = [(info.uidl, loc) for info, loc in kept if info.uidl is not None]
            # The record commits before any DELE for these messages leaves.
            await asyncio.to_thread(self.state.record, records)
        if not self.keep:
            # DELEs go before the remaining RETRs so they are not held behind the window.
            self.outbox.extendleft(Command("DELE", (str(info.number),)) for info, _ in reversed(kept))

    def _tick(self, info: MessageInfo, *, failed: bool = False) -> None:
        self.tracker.done += 1
        self.tracker.done_bytes += info.size
        self.tracker.errors += failed
        if self.progress is not None:
            self.progress(self.tracker)
