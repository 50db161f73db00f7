"""Download-and-delete in the one order that cannot lose a message.

Rule: RETR -> saved durably by the sink -> UIDL recorded in committed state -> DELE -> QUIT.
If anything fails before QUIT's +OK the server keeps every message (RFC 1939 deletes only in the
UPDATE state), and the next run skips what the state says is already saved. A message the sink
refused is never deleted. RETRs are pipelined ahead while earlier messages are being saved.
Messages over ``stream_above`` bytes go to a sink that can stream piece by piece as they arrive
(never held whole); the same order holds for them, with the sink's commit as "saved durably".
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import CommandError, ConfigError
from ._protocol import BodyChunk, Command, Response, parse_scan_listing, parse_uidl_listing
from ._state import UIDLState
from .client import POP3Client, _check
from .sinks import MessageInfo, Sink, SinkStream

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
    stream_above: int | None = 1024 * 1024,
    now: float | None = None,
) -> DownloadReport:
    """Run one download on a logged-in ``client``, then QUIT. See the module rule.

    ``stream_above``: messages larger than this (as LIST says) are streamed into sinks that
    support it (``Sink.streams``); None never streams.
    """
    _check_options(keep, delete_after_days, max_messages, max_size)
    started = time.monotonic()
    clock = time.time() if now is None else now
    run = _Run()

    # The state file opens in a worker thread while the listings are on their way.
    opening = asyncio.ensure_future(asyncio.to_thread(_open_state, state)) if state is not None else None
    try:
        listing = await client.execute_many([Command("UIDL"), Command("LIST")], check=False)
    except BaseException:
        if opening is not None:
            await asyncio.gather(opening, return_exceptions=True)  # never left running or unread
        raise
    saved: dict[str, float] = await opening if opening is not None else {}
    uidl_resp, list_resp = listing
    if not list_resp.ok:
        raise CommandError("POP3 server refused LIST", reply=list_resp.reply)
    sizes = parse_scan_listing(list_resp)
    uidls: dict[int, str] | None = parse_uidl_listing(uidl_resp) if uidl_resp.ok else None
    if uidls is None:
        if keep:
            raise CommandError("keep=True needs UIDL, which this POP3 server refused", reply=uidl_resp.reply)
        log.warning("POP3 server has no UIDL: a crash between save and QUIT leaves duplicates")
        state, saved = None, {}

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
    engine.stream_above = stream_above if sink.streams else None
    engine.present = list(uidls.values()) if uidls is not None else None
    await engine.go(to_fetch, to_delete)

    # Deletions are committed by the server's +OK to QUIT (pipelined behind the last DELEs).
    if engine.quit_response is None:
        await client.quit()
    else:
        await client.close()
        _check(engine.quit_response)
    forgetting = engine.forgetting
    if forgetting is None and state is not None and uidls is not None:
        forgetting = asyncio.ensure_future(asyncio.to_thread(state.forget_except, list(uidls.values())))
    if forgetting is not None:
        [error] = await asyncio.gather(forgetting, return_exceptions=True)
        if isinstance(error, BaseException):
            # Housekeeping only: every message is already saved, recorded and (if asked) deleted.
            log.warning("could not drop vanished UIDLs from the POP3 state: %s", error)
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


def _open_state(state: UIDLState) -> dict[str, float]:
    state.open()
    return state.saved()


class _Engine:
    """The pipelined loop: RETRs go out ahead; batches are saved, recorded, then DELEd."""

    window_bytes = 4 * 1024 * 1024
    # A deep window of RETRs and large batches: a shallow window drains between batches (the server
    # then waits for us). DELEs (tiny answers) do not count: they go out as soon as they may.
    # Memory stays bounded by window_bytes (streamed messages do not count: never held whole).
    window_commands = 1024
    batch_messages = 256
    batch_bytes = 8 * 1024 * 1024
    stream_above: int | None = None

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
        self.retr_in_flight = 0
        self.retr_left = 0
        self.quit_sent = False
        self.present: list[str] | None = None  # the UIDLs listed: the state keeps only those
        self.forgetting: asyncio.Future[int] | None = None
        self.quit_response: Response | None = None  # set when QUIT went out behind the last DELEs
        self.batch: list[tuple[bytes, MessageInfo]] = []
        self.batch_size = 0
        self.streaming: _Streaming | None = None  # the streamed RETR being received

    def _info(self, n: int) -> MessageInfo:
        return MessageInfo(n, self.uidls.get(n) if self.uidls else None, self.sizes.get(n, 0))

    async def go(self, to_fetch: list[int], to_delete: list[int]) -> None:
        above = self.stream_above
        sizes = self.sizes
        retrs = (
            Command("RETR", (str(n),), stream=above is not None and sizes.get(n, 0) > above) for n in to_fetch
        )
        outbox = self.outbox
        outbox.extend(Command("DELE", (str(n),)) for n in to_delete)
        self.retr_left = len(to_fetch)
        limit = self.window_commands if self.client.pipelining else 1
        # Refill only once half the window has drained, so commands leave in few large writes.
        low_water = limit // 2
        # A few commands first: the server starts on them while the rest are being made.
        outbox.extend(itertools.islice(retrs, 16))
        if outbox:
            self._fill(limit)
        outbox.extend(retrs)
        try:
            while outbox or self.in_flight or self.batch:
                if limit > 1 and not self.quit_sent and self.retr_left == 0 and not self.batch:
                    # Nothing left to save: the last DELEs and QUIT leave together, in one write.
                    self.quit_sent = True
                    self._fill(limit, then_quit=True)
                    if self.state is not None and self.present is not None:
                        # UIDLs the server no longer lists were deleted for good: forget them (so
                        # the file stays small) while QUIT is answered; nothing records any more.
                        self.forgetting = asyncio.ensure_future(
                            asyncio.to_thread(self.state.forget_except, self.present)
                        )
                elif outbox and (self.retr_in_flight <= low_water or outbox[0].verb == "DELE"):
                    self._fill(limit)
                if self.in_flight:
                    # Every response already received, in one go: one await for many messages.
                    for event in await self.client.events():
                        if isinstance(event, BodyChunk):
                            await self._chunk(event)
                            continue
                        command = self.in_flight.popleft()
                        if command.verb == "QUIT":
                            self.quit_response = event
                        elif command.stream:
                            await self._streamed(command, event)
                        else:
                            self._handle(command, event)
                if self.batch and (
                    len(self.batch) >= self.batch_messages
                    or self.batch_size >= self.batch_bytes
                    or self.retr_left == 0
                ):
                    await self._flush()
        finally:
            if self.forgetting is not None and not self.forgetting.done():
                # Never left running in its thread past this run (the state closes after it).
                await asyncio.gather(self.forgetting, return_exceptions=True)
            if self.streaming is not None:
                # Cut in the middle of a streamed message: nothing of it may look saved.
                streaming, self.streaming = self.streaming, None
                await streaming.abort()

    def _fill(self, limit: int, *, then_quit: bool = False) -> None:
        outbox, in_flight, window = self.outbox, self.in_flight, self.window_bytes
        pipelining = limit > 1
        sending: list[Command] = []
        in_flight_bytes, retrs = self.in_flight_bytes, self.retr_in_flight
        while outbox:
            if not pipelining and (in_flight or sending):
                break  # one command at a time
            command = outbox[0]
            if command.verb == "RETR":
                size = self._cost(command)
                if retrs >= limit or (in_flight_bytes and in_flight_bytes + size > window):
                    break  # bounds how much of the mailbox is in flight (and in memory)
                in_flight_bytes += size
                retrs += 1
            sending.append(outbox.popleft())
        self.in_flight_bytes, self.retr_in_flight = in_flight_bytes, retrs
        if then_quit:
            sending.append(Command("QUIT"))
        if sending:
            in_flight.extend(sending)
            self.client.send(sending)

    def _cost(self, command: Command) -> int:
        # A streamed message is never in memory as a whole: it does not fill the window.
        return 0 if command.stream else self.sizes.get(int(command.args[0]), 0)

    async def _chunk(self, event: BodyChunk) -> None:
        if self.streaming is None:
            self.streaming = _Streaming(self._info(int(event.command.args[0])))
        await self.streaming.write(self.sink, event.data)

    def _handle(self, command: Command, response: Response) -> None:
        """A DELE's answer, or a RETR's whole message (added to the batch being saved)."""
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
        self.retr_in_flight -= 1
        self.retr_left -= 1
        if not response.ok or response.body is None:
            self.run.errors.append(
                MessageError(info.uidl, info.size, CommandError("RETR refused", reply=response.reply))
            )
            self._tick(info, failed=True)
            return
        self.batch.append((response.body, info))
        self.batch_size += len(response.body)

    async def _streamed(self, command: Command, response: Response) -> None:
        """The end of a streamed RETR: commit it (durable), record it, then queue its DELE."""
        info = self._info(int(command.args[0]))
        self.retr_left -= 1  # nothing to take off in_flight_bytes: it never counted there
        self.retr_in_flight -= 1
        streaming, self.streaming = self.streaming or _Streaming(info), None
        if not response.ok:
            await streaming.abort()
            error: Exception = CommandError("RETR refused", reply=response.reply)
        else:
            try:
                location = await streaming.commit(self.sink)
            except Exception as exc:  # noqa: BLE001 - reported per message, the message stays
                error = exc
            else:
                self.run.downloaded.append(Saved(info.uidl, streaming.size, location))
                self._tick(info)
                if self.state is not None and info.uidl is not None:
                    await asyncio.to_thread(self.state.record, [(info.uidl, location)])
                if not self.keep:
                    self.outbox.appendleft(Command("DELE", (str(info.number),)))
                return
        self.run.errors.append(MessageError(info.uidl, info.size, error))
        self._tick(info, failed=True)

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


class _Streaming:
    """A message arriving in pieces into a sink's stream. A sink error is kept, not raised: the
    rest of the body is still read (the connection stays usable) and the message stays."""

    def __init__(self, info: MessageInfo) -> None:
        self.info = info
        self.stream: SinkStream | None = None
        self.error: Exception | None = None
        self.size = 0

    async def write(self, sink: Sink, data: bytes) -> None:
        if self.error is not None:
            return
        self.size += len(data)
        try:
            if self.stream is None:
                self.stream = await sink.open_stream(self.info)
            await self.stream.write(data)
        except Exception as exc:  # noqa: BLE001 - reported when the message ends
            self.error = exc
            await self.abort()

    async def commit(self, sink: Sink) -> str:
        if self.error is not None:
            raise self.error
        if self.stream is None:  # an empty body: no chunk came
            self.stream = await sink.open_stream(self.info)
        stream, self.stream = self.stream, None
        try:
            return await stream.commit()
        except BaseException:
            await stream.abort()
            raise

    async def abort(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            await stream.abort()
