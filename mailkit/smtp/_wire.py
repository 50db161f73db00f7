"""The mail transaction on a session aiosmtplib opened: MAIL, RCPT, DATA, pipelined when offered.

Rule: we know at every moment whether the end of DATA has been written. A failure before it is
retryable (``ConnectionLost``, ``TimeoutError``); after it, until the reply, it is
``DeliveryUnknownError``: the server may have taken the message and we must not resend blindly.

aiosmtplib reads one reply per command it writes, which rules out pipelining and costs ~0.5 ms of
CPU per message; after the session is set up (TLS, EHLO, AUTH) the transport is handed to this
small protocol, which parses replies as they arrive and lets several commands share one write.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .._log import log_received, log_sent
from .._net import abort_transport
from ..config import check_line_safe
from ..errors import ConnectionLost, MailkitError, ProtocolError, Reply, TimeoutError
from ..message import Outgoing
from .errors import (
    DeliveryUnknownError,
    RecipientsDeferredError,
    RecipientsRefusedError,
    SendRefusedError,
    SMTPUTF8RequiredError,
    reply_error,
    smtp_reply,
)

__all__ = ["Capabilities", "Transaction", "Wire"]

log = logging.getLogger("mailkit.smtp")

MAX_REPLY = 64 * 1024
CHUNK = 256 * 1024
REPLY_CACHE = 256  # distinct one-line replies remembered per connection ("250 2.1.0 Ok", ...)


@dataclass(frozen=True)
class Capabilities:
    pipelining: bool = False
    smtputf8: bool = False
    eight_bit_mime: bool = False
    size: int | None = None
    extensions: frozenset[str] = frozenset()

    @classmethod
    def from_ehlo(cls, extensions: dict[str, str]) -> Capabilities:
        names = {name.lower() for name in extensions}
        size_text = extensions.get("size", "").strip()
        return cls(
            pipelining="pipelining" in names,
            smtputf8="smtputf8" in names,
            eight_bit_mime="8bitmime" in names,
            size=int(size_text) if size_text.isdigit() and int(size_text) > 0 else None,
            extensions=frozenset(names),
        )


@dataclass(frozen=True)
class Transaction:
    """A successful transaction: at least one recipient accepted and the final 250 received."""

    accepted: tuple[str, ...]
    refused: dict[str, Reply] = field(default_factory=dict)
    reply: Reply | None = None


class Wire(asyncio.Protocol):
    """Reply parser and writer on an established (and authenticated) transport."""

    def __init__(self, transport: asyncio.Transport, where: str) -> None:
        self.transport = transport
        self.where = where
        self._buffer = bytearray()
        self._lines: list[str] = []
        self._replies: deque[Reply] = deque()
        self._wanted = 0
        self._waiter: asyncio.Future[None] | None = None
        self._lost: BaseException | None = None
        self._paused = False
        self._drain: asyncio.Future[None] | None = None
        self._debug = log.isEnabledFor(logging.DEBUG)
        # Replies are immutable and a bulk run sees the same few lines thousands of times.
        self._parsed: dict[bytes, Reply] = {}
        # One timer per connection, re-armed lazily: a read only moves the deadline.
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.closing = False  # the server said 421: it is closing the session
        self.prewritten: Outgoing | None = None  # next transaction whose envelope is already sent
        self._gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        transport.set_protocol(self)

    # --- asyncio.Protocol -------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        if buffer:
            buffer += data
            data = bytes(buffer)
            buffer.clear()
        lines = data.split(b"\n")
        buffer += lines.pop()  # an incomplete last line waits for more
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if self._debug:
                log_received(log, line)
            sep = line[3:4]
            if not line[:3].isdigit() or sep not in (b" ", b"-", b"") or line[:1] == b"0":
                self._fail(ProtocolError(f"{self.where}: malformed reply line {line[:80]!r}"))
                return
            text = line[4:].decode("utf-8", "replace")
            if sep == b"-":
                self._lines.append(text)
                continue
            if self._lines:
                self._lines.append(text)
                text, self._lines = "\n".join(self._lines), []
                self._replies.append(smtp_reply(int(line[:3]), text))
                continue
            reply = self._parsed.get(line)
            if reply is None:
                reply = smtp_reply(int(line[:3]), text)
                if len(self._parsed) >= REPLY_CACHE:
                    self._parsed.clear()  # e.g. "queued as <id>" replies, all different
                self._parsed[line] = reply
            self._replies.append(reply)
        if len(buffer) > MAX_REPLY or sum(map(len, self._lines)) > MAX_REPLY:
            self._fail(ProtocolError(f"{self.where}: reply too long"))
            return
        waiter = self._waiter
        if waiter is not None and len(self._replies) >= self._wanted and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool | None:
        self._fail(ConnectionLost(f"{self.where}: connection closed by the server"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionLost(f"{self.where}: connection lost" + (f" ({exc})" if exc else "")))
        if not self._gone.done():
            self._gone.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._lost is None:
            self._lost = exc
        self._disarm()
        for fut in (self._waiter, self._drain):
            if fut is not None and not fut.done():
                fut.set_exception(exc)
        if not self.transport.is_closing():
            abort_transport(self.transport)

    # --- I/O --------------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        return self._lost is None and not self.closing and not self.transport.is_closing()

    def write(self, data: bytes, *, secret: bool = False) -> None:
        if self._lost is not None:
            raise self._lost
        if self._debug:
            for line in data.split(b"\r\n")[:-1]:
                log_sent(log, line, secret=secret)
        self.transport.write(data)

    async def drain(self, timeout: float | None) -> None:
        if self._lost is not None:
            raise self._lost
        if not self._paused:
            return
        self._drain = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self._drain, timeout)
        except builtins.TimeoutError as exc:
            self._fail(TimeoutError(f"{self.where}: timed out sending"))
            raise TimeoutError(f"{self.where}: timed out sending") from exc
        finally:
            self._drain = None

    async def read(self, count: int, timeout: float | None) -> list[Reply]:
        """The next ``count`` replies, in order; the connection is dropped on timeout."""
        if len(self._replies) < count:
            if self._lost is not None:
                raise self._lost
            self._wanted = count
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            if timeout is None:
                self._deadline = math.inf  # a timer left from an earlier read just lapses
            else:
                # Cheaper than wait_for (a wrapper per call) or a timer per read (a heap entry
                # per read, cancelled each time): a timer set earlier that fires before the
                # deadline re-arms itself in _expire.
                self._deadline = deadline = loop.time() + timeout
                timer = self._timer
                if timer is None or timer.when() > deadline:
                    if timer is not None:
                        timer.cancel()
                    self._timer = loop.call_at(deadline, self._expire)
            try:
                await waiter
            finally:
                self._waiter = None
        replies = [self._replies.popleft() for _ in range(count)]
        if any(r.code == 421 for r in replies):
            self.closing = True
        return replies

    def _expire(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # nobody waits now: the next read arms a new timer
        if self._deadline == math.inf:
            return
        loop = asyncio.get_running_loop()
        if loop.time() >= self._deadline:
            self._fail(TimeoutError(f"{self.where}: timed out waiting for the server"))
        else:
            self._timer = loop.call_at(self._deadline, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def command(self, line: str, timeout: float | None) -> Reply:
        check_line_safe(line, "SMTP command")
        self.write(line.encode("utf-8") + b"\r\n")
        return (await self.read(1, timeout))[0]

    def close(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        abort_transport(self.transport)

    async def close_within(self, timeout: float | None) -> None:
        """Close politely, and drop the connection if the peer has not finished within ``timeout``.

        Over TLS a close waits for the peer's close_notify (asyncio allows it 30 s): a server that
        answers QUIT and then stops reading would hold the socket that long.
        """
        self.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._gone), timeout)
        except builtins.TimeoutError:
            self.abort()

    # --- the transaction --------------------------------------------------------------
    def _commands(self, out: Outgoing, caps: Capabilities) -> list[str]:
        params = []
        if caps.size is not None:
            params.append(f"SIZE={len(out.data)}")
        if out.eight_bit and caps.eight_bit_mime:
            params.append("BODY=8BITMIME")
        if out.smtputf8:
            params.append("SMTPUTF8")
        mail = "MAIL FROM:<" + out.sender + ">" + "".join(" " + p for p in params)
        return [mail] + ["RCPT TO:<" + r + ">" for r in out.recipients]

    def envelope(self, out: Outgoing, caps: Capabilities) -> bytes:
        """MAIL, RCPT... and DATA as one pipelined write; refuses what the server cannot take."""
        if out.smtputf8 and not caps.smtputf8:
            raise SMTPUTF8RequiredError(
                f"{self.where}: the message has internationalized addresses or headers and the "
                "server does not offer SMTPUTF8"
            )
        size = len(out.data)
        if caps.size is not None and size > caps.size:
            raise SendRefusedError(f"{self.where}: message of {size} bytes exceeds the server's limit of "
                                   f"{caps.size}")
        return "\r\n".join(self._commands(out, caps)).encode("utf-8") + b"\r\nDATA\r\n"

    async def send(
        self,
        out: Outgoing,
        caps: Capabilities,
        *,
        command_timeout: float | None,
        data_timeout: float | None,
        before_end: Callable[[], Awaitable[None] | None] | None = None,
        then: Callable[[], Outgoing | None] | None = None,
    ) -> Transaction:
        """Run one transaction. Refusals raise with the connection still usable (after RSET).

        ``then``, called just before the end of data, may return the next message: its envelope
        then travels in the same write (pipelining across messages) and the next ``send`` of
        that very Outgoing on this wire only reads its replies.
        """
        if self.prewritten is not None and self.prewritten is out:
            # MAIL, RCPT and DATA went out with the previous message's end of data.
            self.prewritten = None
            replies = await self.read(len(out.recipients) + 2, command_timeout)
        elif self.prewritten is not None:
            raise ProtocolError(f"{self.where}: another transaction is already under way")
        elif caps.pipelining:
            self.write(self.envelope(out, caps))
            replies = await self.read(len(out.recipients) + 2, command_timeout)
        else:
            self.envelope(out, caps)  # the checks only
            replies = await self._lockstep(self._commands(out, caps), command_timeout)
        mail_reply, rcpt_replies, data_reply = replies[0], replies[1:-1], replies[-1]
        if self.closing:
            closing = next(r for r in replies if r.code == 421)
            self.close()
            raise reply_error(closing, f"{self.where}: session")
        if mail_reply.code != 250:
            await self._abort_transaction(data_reply, command_timeout)
            raise reply_error(mail_reply, f"{self.where}: sender <{out.sender}>")
        accepted: list[str] = []
        refused: dict[str, Reply] = {}
        for rcpt, reply in zip(out.recipients, rcpt_replies, strict=False):
            if reply.code in (250, 251):
                accepted.append(rcpt)
            else:
                refused[rcpt] = reply
        if not accepted:
            await self._abort_transaction(data_reply, command_timeout)
            transient = any(isinstance(r.code, int) and 400 <= r.code < 500 for r in refused.values())
            cls = RecipientsDeferredError if transient else RecipientsRefusedError
            first = next(iter(refused.values()), None)
            raise cls(f"{self.where}: every recipient was refused", reply=first, refused=refused)
        if data_reply.code != 354:
            await self._rset(command_timeout)
            raise reply_error(data_reply, f"{self.where}: DATA")
        await self._write_body(out.data, data_timeout, before_end, then if caps.pipelining else None, caps)
        try:
            (final,) = await self.read(1, data_timeout)
        except (ConnectionLost, TimeoutError) as exc:
            raise DeliveryUnknownError(
                f"{self.where}: connection lost after the end of DATA, before the server's reply: "
                "the message may have been accepted"
            ) from exc
        if final.code != 250:
            raise reply_error(final, f"{self.where}: message")
        return Transaction(tuple(accepted), refused, final)

    async def _lockstep(self, commands: list[str], timeout: float | None) -> list[Reply]:
        replies = []
        for i, line in enumerate(commands):
            reply = await self.command(line, timeout)
            replies.append(reply)
            if i == 0 and reply.code != 250:
                return [*replies, *[smtp_reply(503, "not sent")] * (len(commands) - 1), reply]
        if not any(r.code in (250, 251) for r in replies[1:]):
            return [*replies, smtp_reply(503, "not sent")]
        replies.append(await self.command("DATA", timeout))
        return replies

    async def _abort_transaction(self, data_reply: Reply, timeout: float | None) -> None:
        if data_reply.code == 354:
            # A pipelined DATA was accepted although nothing can be delivered: end it empty.
            self.write(b".\r\n")
            await self.read(1, timeout)
        await self._rset(timeout)

    async def _rset(self, timeout: float | None) -> None:
        reply = await self.command("RSET", timeout)
        if reply.code != 250:
            self._fail(ProtocolError(f"{self.where}: RSET refused", reply=reply))

    async def _write_body(
        self,
        data: bytes,
        timeout: float | None,
        before_end: Callable[[], Awaitable[None] | None] | None,
        then: Callable[[], Outgoing | None] | None,
        caps: Capabilities,
    ) -> None:
        stuffed = data.replace(b"\r\n.", b"\r\n..")
        if stuffed.startswith(b"."):
            stuffed = b"." + stuffed
        if len(stuffed) > CHUNK:
            # Everything but the end-of-data mark may be sent without commitment.
            view = memoryview(stuffed)
            for start in range(0, len(view), CHUNK):
                self.transport.write(view[start : start + CHUNK])
                await self.drain(timeout)
            stuffed = b""
        if before_end is not None:
            pending = before_end()
            if pending is not None:
                await pending
        if self._lost is not None:
            raise self._lost
        tail = b""
        following = then() if then is not None else None
        if following is not None:
            try:
                tail = self.envelope(following, caps)
                self.prewritten = following
            except MailkitError:
                pass  # not this message's problem: the next send() meets it and reports it there
        self.transport.write(stuffed + b".\r\n" + tail if stuffed else b".\r\n" + tail)
        if self._debug:
            log_sent(log, f"<{len(data)} bytes of message data>")
            log_sent(log, ".")
