"""The POP3 protocol core, sans I/O: commands out as bytes, received bytes in, responses out.

Rule: nothing here touches a socket or a clock. The core matches responses to the commands it
sent, in order (so pipelined commands need no extra bookkeeping), reads multi-line responses in
bulk and dot-unstuffs them in one pass, and refuses a peer that breaks the protocol or sends more
than the limits allow with ``ProtocolError`` carrying what the server said.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from .. import _sasl
from ..config import check_line_safe
from ..errors import ConfigError, ConnectionLost, ProtocolError, Reply

__all__ = [
    "NEED_DATA",
    "BodyChunk",
    "Capabilities",
    "Command",
    "Continuation",
    "Limits",
    "POP3Core",
    "Response",
    "Unstuffer",
    "apop_digest",
    "parse_capa",
    "parse_scan_listing",
    "parse_stat",
    "parse_uidl_listing",
    "sasl_login",
    "unstuff",
]


@dataclass(frozen=True)
class Limits:
    """Caps on what the server may send, in bytes; over a cap the connection is dropped.

    ``max_line`` bounds a status line (RFC 1939 allows 512 octets; servers send more text in
    practice), ``max_response`` a multi-line listing (CAPA, LIST, UIDL) and ``max_message`` one
    RETR or TOP body. Lines inside a message body have no cap of their own.
    """

    max_line: int = 64 * 1024
    max_response: int = 64 * 1024 * 1024
    max_message: int = 256 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("max_line", "max_response", "max_message"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 64:
                raise ConfigError(f"limit {name!r} must be an integer of at least 64: {value!r}")


# Commands whose +OK starts a multi-line response. LIST and UIDL are multi-line without an argument.
_MULTILINE = frozenset({"CAPA", "RETR", "TOP"})
_MULTILINE_WITHOUT_ARG = frozenset({"LIST", "UIDL"})
_SECRET = frozenset({"PASS", "APOP", "AUTH"})


@dataclass(frozen=True, slots=True)
class Command:
    """One command line. ``secret`` commands are never logged in full.

    ``stream=True`` (multi-line commands): the body arrives as ``BodyChunk`` events, dot-unstuffed,
    as it is received, then a ``Response`` whose ``body`` is None; it is never held whole.
    """

    verb: str
    args: tuple[str, ...] = ()
    # A SASL continuation line (no verb): the raw line to send.
    raw: str | None = field(default=None, repr=False)
    stream: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        if self.raw is not None:
            check_line_safe(self.raw, "SASL response", secret=True)
            return
        if not self.verb.isalpha() or not self.verb.isascii():
            raise ConfigError(f"invalid POP3 command {self.verb!r}")
        for arg in self.args:
            if not (arg.isdigit() and arg.isascii()):
                break
        else:
            return  # message numbers (the bulk of a download): nothing to smuggle
        for arg in self.args:
            check_line_safe(arg, f"{self.verb} argument", secret=self.secret)
            if " " in arg or not arg:
                shown = "" if self.secret else f": {arg!r}"
                raise ConfigError(f"{self.verb} argument must be a non-empty word{shown}")

    @classmethod
    def continuation(cls, text: str) -> Command:
        return cls("", raw=text)

    @property
    def multiline(self) -> bool:
        """Whether a +OK to this command is followed by lines up to a lone '.'."""
        if self.verb in _MULTILINE:
            return True
        return self.verb in _MULTILINE_WITHOUT_ARG and not self.args

    @property
    def secret(self) -> bool:
        return self.raw is not None or self.verb in _SECRET

    @property
    def is_body(self) -> bool:
        """RETR and TOP carry a message: their cap is ``max_message``."""
        return self.verb in ("RETR", "TOP")

    def line(self) -> bytes:
        if self.raw is not None:
            text = self.raw
        elif len(self.args) == 1:
            text = f"{self.verb} {self.args[0]}"
        else:
            text = " ".join((self.verb, *self.args))
        return (text + "\r\n").encode("utf-8")

    def __str__(self) -> str:
        if self.raw is not None:
            return "<SASL response>"
        if self.verb == "PASS" or self.verb == "APOP":
            return f"{self.verb} ***"
        if self.verb == "AUTH" and len(self.args) > 1:
            return f"AUTH {self.args[0]} ***"
        return " ".join((self.verb, *self.args))


@dataclass(frozen=True, slots=True)
class Response:
    """A complete response. ``body`` is the dot-unstuffed multi-line part, or None."""

    command: Command | None  # None: the greeting
    ok: bool
    text: str
    body: bytes | None = None

    @property
    def reply(self) -> Reply:
        return Reply("pop3", "+OK" if self.ok else "-ERR", self.text)

    def lines(self) -> list[bytes]:
        """The body's lines without their line endings (for listings)."""
        if not self.body:
            return []
        return self.body.replace(b"\r\n", b"\n").split(b"\n")[:-1]


@dataclass(frozen=True, slots=True)
class BodyChunk:
    """Part of a streamed body (a ``stream=True`` command), already dot-unstuffed, in order."""

    command: Command
    data: bytes


@dataclass(frozen=True, slots=True)
class Continuation:
    """A SASL challenge ('+ base64') during AUTH; the command is still waiting for its answer."""

    command: Command
    challenge: bytes


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()
_PART = 256 * 1024  # a body leaves the buffer once this much of it is there (a small one never does)
_DIRECT = 8 * 1024  # chunks this big, arriving in the middle of a body, are scanned in place
Event = Response | Continuation | BodyChunk | _NeedData
# A line starting with '.': the regex engine finds this two-byte literal faster than bytes.find
# (whose skip table gains little with a two-byte needle), and a body is searched once per message.
_LINE_DOT = re.compile(rb"\n\.")


def unstuff(raw: bytes) -> bytes:
    """Remove the leading '.' RFC 1939 adds to every body line that starts with one.

    ``raw`` starts at the beginning of a line and excludes the terminating '.' line.
    """
    if b"\n." in raw:
        raw = raw.replace(b"\n.", b"\n")
    if raw[:1] == b".":
        raw = raw[1:]
    return raw


class Unstuffer:
    """Dot-unstuffs a multi-line body that arrives in pieces cut anywhere, and finds its end.

    ``feed(data)`` returns ``(body bytes, None)`` while the body goes on and ``(last body bytes,
    what followed the terminator)`` once the terminating '.' line has arrived. Bytes that could
    start a stuffed dot or the terminator (at most 3, from a line end on) are held back until the
    next piece decides them; the body is the same as ``unstuff`` gives for the whole.
    """

    __slots__ = ("_first", "_tail", "done", "size")

    def __init__(self) -> None:
        # A virtual line end before the first byte: the first line is checked like any other.
        self._tail = b"\n"
        self._first = True
        self.done = False
        self.size = 0  # body bytes returned so far

    def feed(self, data: bytes) -> tuple[bytes, bytes | None]:
        if self.done:
            raise ProtocolError("body data after the end of the body")
        buf = self._tail + data if self._tail else data
        pos = 1 if self._first else 0  # the virtual line end is not part of the body
        out: list[bytes] = []
        rest: bytes | None = None
        hold = len(buf)
        found = buf.find(b"\n.") if b"." in buf else -1  # see POP3Core._body_chunk
        while found >= 0:
            after = buf[found + 2 : found + 4]
            if after[:1] == b"\n" or after == b"\r\n":
                out.append(buf[pos : found + 1])
                rest = buf[found + (3 if after[:1] == b"\n" else 4) :]
                break
            if len(after) < 2 and (after == b"\r" or not after):
                hold = found  # the rest of a possible terminator is yet to come
                break
            out.append(buf[pos : found + 1])  # a stuffed line: drop its first dot
            pos = found + 2
            found = buf.find(b"\n.", pos)
        if rest is None:
            if hold == len(buf) and buf[-1:] == b"\n":
                hold -= 1  # a line end: a dot may follow in the next piece
            out.append(buf[pos:hold])  # empty when only the virtual line end is held
            self._first = self._first and hold == 0
            self._tail = buf[hold:]
        else:
            self.done = True
            self._tail = b""
        body = out[0] if len(out) == 1 else b"".join(out)
        self.size += len(body)
        return body, rest


class POP3Core:
    """The state of one POP3 connection as seen by the client.

    ``send(command)`` gives the bytes to write and queues the command; ``receive_data(data)``
    and ``receive_eof()`` feed what arrived; ``next_event()`` returns a ``Response``, a
    ``Continuation`` or ``NEED_DATA``.
    """

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._buffer = bytearray()
        self._pending: deque[Command | None] = deque([None])  # the greeting comes first
        self._eof = False
        # Multi-line response in progress: (command, its +OK text).
        self._body: tuple[Command, str] | None = None
        self._scan = 0
        # The body moved out of the buffer so far. Written as it arrives, not joined at the end:
        # the copy is spread over the transfer (while the server still sends) and getvalue()
        # hands the grown buffer over without copying it again.
        self._parts = io.BytesIO()
        self._parts_size = 0
        self._stuffed = False
        self._ready: memoryview | None = None  # what followed a body end found by _body_chunk
        # A streamed body in progress: its unstuffer, and pieces received while the buffer is empty.
        self._streamer: Unstuffer | None = None
        self._stream_in: list[bytes] = []

    # -- outgoing ------------------------------------------------------------------------------

    def send(self, command: Command) -> bytes:
        if self._eof:
            raise ConnectionLost("the POP3 server closed the connection")
        self._pending.append(command)
        return command.line()

    def send_many(self, commands: Iterable[Command]) -> bytes:
        """``send`` for several commands (pipelining): the bytes to write, in one piece."""
        if self._eof:
            raise ConnectionLost("the POP3 server closed the connection")
        commands = list(commands)
        self._pending.extend(commands)
        return b"".join([c.line() for c in commands])

    @property
    def pending(self) -> int:
        """Commands (or the greeting) whose response has not been returned yet."""
        return len(self._pending)

    @property
    def buffered(self) -> int:
        """Received bytes not yet consumed by an event."""
        return len(self._buffer)

    @property
    def in_body(self) -> bool:
        """A multi-line response has started and its end has not arrived yet."""
        return self._body is not None

    # -- incoming ------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        elif self._streamer is not None and not self._buffer and not self._streamer.done:
            self._stream_in.append(data)  # passed on as it is, not copied into the buffer
        elif self._parts_size and self._ready is None and len(self._buffer) <= 3 and len(data) >= _DIRECT:
            self._body_chunk(data)
        else:
            self._buffer += data

    def _body_chunk(self, data: bytes) -> None:
        """A big chunk in the middle of a big body: scanned where it is and kept as a view, not
        copied into the buffer and out again (a 25 MB message is then copied once, by the join).

        The buffer holds at most the last 3 bytes seen (a terminator may start there).
        """
        tail = bytes(self._buffer)
        self._scan = 0
        view = memoryview(data)
        head = tail + data[:4]
        # (where the terminator starts in head or data, its length) or None
        end: tuple[bytes, int, int] | None = None
        found = head.find(b"\n.")
        while 0 <= found < len(tail):
            after = head[found + 2 : found + 4]
            if after[:1] == b"\n" or after == b"\r\n":
                end = (head, found, 3 if after[:1] == b"\n" else 4)
                break
            self._stuffed = True
            found = head.find(b"\n.", found + 1)
        if end is None:
            # Looking for a '.' alone is a memchr, many times faster than looking for "\n.":
            # a chunk without any (base64 parts, most binary mail) needs no second look.
            found = data.find(b"\n.") if b"." in data else -1
            while found >= 0:
                after = data[found + 2 : found + 4]
                if after[:1] == b"\n" or after == b"\r\n":
                    end = (data, found, 3 if after[:1] == b"\n" else 4)
                    break
                if len(after) < 2 and (after == b"\r" or not after):
                    break  # undecided: it stays in the tail
                self._stuffed = True
                found = data.find(b"\n.", found + 2)
        self._buffer.clear()
        if end is None:
            self._add_part(tail)
            self._add_part(view[:-3])
            self._buffer += data[-3:]
        elif end[0] is head:
            _, at, length = end
            self._add_part(tail[: at + 1])
            self._ready = view[at + length - len(tail) :]
        else:
            _, at, length = end
            self._add_part(tail)
            self._add_part(view[: at + 1])
            self._ready = view[at + length :]

    def _add_part(self, part: bytes | bytearray | memoryview) -> None:
        if len(part):
            self._parts.write(part)
            self._parts_size += len(part)

    def receive_eof(self) -> None:
        self._eof = True

    def next_event(self) -> Event:
        if self._body is not None:
            return self._next_body()
        buf = self._buffer
        end = buf.find(b"\n")
        max_line = self.limits.max_line
        if end < 0:
            if len(buf) > max_line:
                raise ProtocolError(f"POP3 server sent a status line longer than {max_line} bytes")
            return self._need_data()
        if end > max_line:
            raise ProtocolError(f"POP3 server sent a status line longer than {max_line} bytes")
        pending = self._pending
        if not pending:
            line = bytes(buf[:end]).rstrip(b"\r")
            raise ProtocolError(
                f"POP3 server sent data nobody asked for: {_show(line)}",
                reply=Reply("pop3", None, _text(line)),
            )
        command = pending[0]
        # Checked on the buffer itself: no copy of the line for the thousands of short replies.
        if buf.startswith(b"+OK"):
            ok = True
            text = buf[3:end].decode("utf-8", "replace").strip()
        elif buf.startswith(b"-ERR"):
            ok = False
            text = buf[4:end].decode("utf-8", "replace").strip()
        else:
            return self._other_line(command, bytes(buf[:end]).rstrip(b"\r"), end)
        del buf[: end + 1]
        if ok and command is not None and command.multiline:
            if not command.stream:
                # The common case, in one search and one copy: the whole body is here and none of
                # its lines starts with '.', so the first "\n." is the terminator.
                match = _LINE_DOT.search(buf)
                first = match.start() if match is not None else -1
                if first >= 0 and buf[first + 2 : first + 4] == b"\r\n" and buf[:1] != b".":
                    limit = self.limits.max_message if command.is_body else self.limits.max_response
                    if first > limit:
                        raise ProtocolError(f"POP3 response to {command} is larger than {limit} bytes")
                    body = bytes(buf[: first + 1])
                    del buf[: first + 4]
                    pending.popleft()
                    return Response(command, True, text, body)
            self._body = (command, text)
            self._scan = 0
            if command.stream:
                self._streamer = Unstuffer()
            return self._next_body()
        pending.popleft()
        return Response(command, ok, text)

    def _other_line(self, command: Command | None, line: bytes, end: int) -> Continuation:
        """A status line that is neither +OK nor -ERR: a SASL challenge during AUTH, or an error."""
        if line[:1] == b"+" and command is not None and (command.verb == "AUTH" or command.raw is not None):
            # The exchange goes on with the client's continuation line, which the caller sends
            # next: that one waits for the final answer.
            del self._buffer[: end + 1]
            self._pending.popleft()
            challenge = line[1:].strip()
            try:
                decoded = base64.b64decode(challenge, validate=True)
            except ValueError:
                raise ProtocolError(f"POP3 server sent an invalid SASL challenge: {_show(line)}") from None
            return Continuation(command, decoded)
        raise ProtocolError(
            f"POP3 server sent a malformed response to {command or 'the connection'}: {_show(line)}",
            reply=Reply("pop3", None, _text(line)),
        )

    def _next_body(self) -> Event:
        assert self._body is not None
        command, text = self._body
        if self._streamer is not None:
            return self._next_stream(command, text)
        buf = self._buffer
        if self._ready is not None:
            # _body_chunk found the end: what followed it (and anything received since, already
            # in the buffer) starts the next response.
            buf[:0] = self._ready
            self._ready = None
            return self._finish(command, text, self._joined())
        if not self._parts_size and (buf[:3] == b".\r\n" or buf[:2] == b".\n"):
            # Empty body: the terminator is the first line.
            del buf[: 3 if buf[1:2] == b"\r" else 2]
            return self._finish(command, text, b"")
        # Find "\n.\r\n" (also "\n.\n" from LF-only servers) from where the last search stopped;
        # any other "\n." is a stuffed line, noted so that unstuffing is skipped when there is none.
        found = buf.find(b"\n.", self._scan)
        while found >= 0:
            after = buf[found + 2 : found + 4]
            if after[:1] == b"\n" or after == b"\r\n":
                self._add_part(buf[: found + 1])
                del buf[: found + (3 if after[:1] == b"\n" else 4)]
                return self._finish(command, text, self._joined())
            if len(after) < 2 and (after == b"\r" or not after):
                break  # the rest of a possible terminator is yet to come
            self._stuffed = True
            found = buf.find(b"\n.", found + 2)
        limit = self.limits.max_message if command.is_body else self.limits.max_response
        if self._parts_size + len(buf) > limit + 5:
            raise ProtocolError(f"POP3 response to {command} is larger than {limit} bytes")
        if len(buf) > _PART or (self._parts_size and len(buf) > 3):
            # Move all but the last bytes (a terminator may be starting there) out of the
            # buffer, which then stays small; once a body has parts, at once: the next big
            # chunk is then scanned in place.
            self._add_part(memoryview(buf)[:-3])  # the view is gone before the buffer shrinks
            del buf[:-3]
            self._scan = 0
        else:
            self._scan = max(0, len(buf) - 3)
        return self._need_data()

    def _next_stream(self, command: Command, text: str) -> Event:
        streamer = self._streamer
        assert streamer is not None
        if streamer.done:
            self._streamer = None
            return self._finish(command, text, None)
        pieces = self._stream_in
        if self._buffer:
            pieces.insert(0, bytes(self._buffer))
            self._buffer.clear()
        if not pieces:
            return self._need_data()
        self._stream_in = []
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        chunk, rest = streamer.feed(data)
        if streamer.size > self.limits.max_message:
            raise ProtocolError(f"POP3 response to {command} is larger than {self.limits.max_message} bytes")
        if rest is not None:
            self._buffer += rest  # the next responses
            if not chunk:
                self._streamer = None
                return self._finish(command, text, None)
        if chunk:
            return BodyChunk(command, chunk)
        return self._need_data()

    def _joined(self) -> bytes:
        raw = self._parts.getvalue()
        stuffed = self._stuffed or raw[:1] == b"."
        return unstuff(raw) if stuffed else raw

    def _finish(self, command: Command, text: str, body: bytes | None) -> Response:
        self._body = None
        self._scan = 0
        self._parts = io.BytesIO()
        self._parts_size = 0
        self._stuffed = False
        self._pending.popleft()
        return Response(command, True, text, body)

    def _need_data(self) -> _NeedData:
        if self._eof and self._pending:
            what = self._pending[0]
            raise ConnectionLost(
                f"the POP3 server closed the connection while we waited for the "
                f"response to {what or 'the greeting'}"
            )
        return NEED_DATA


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _show(line: bytes, limit: int = 200) -> str:
    text = repr(line[:limit])
    return text + ("..." if len(line) > limit else "")


# -- parsing the answers -------------------------------------------------------------------------


@dataclass(frozen=True)
class Capabilities:
    """What CAPA listed: names upper-cased, each with its arguments."""

    items: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.upper() in self.items

    @property
    def sasl(self) -> tuple[str, ...]:
        return tuple(m.upper() for m in self.items.get("SASL", ()))

    @property
    def pipelining(self) -> bool:
        return "PIPELINING" in self.items


def parse_capa(response: Response) -> Capabilities:
    items: dict[str, tuple[str, ...]] = {}
    for raw in response.lines():
        words = _text(raw).split()
        if words:
            items[words[0].upper()] = tuple(words[1:])
    return Capabilities(items)


def _bad(response: Response, what: str) -> ProtocolError:
    return ProtocolError(f"POP3 server sent a malformed {what}", reply=response.reply)


def parse_stat(response: Response) -> tuple[int, int]:
    """'+OK count size' -> (count, size)."""
    words = response.text.split()
    if len(words) < 2 or not words[0].isdigit() or not words[1].isdigit():
        raise _bad(response, "STAT reply")
    return int(words[0]), int(words[1])


# What every server sends: "number word" lines, one space. Checked in one pass over the listing,
# after which a single split gives the pairs; anything else is parsed (or refused) line by line.
_PLAIN_SCAN = re.compile(rb"(?:[0-9]+ [0-9]+\r?\n)*")
_PLAIN_UIDL = re.compile(rb"(?:[0-9]+ [\x21-\x7e]{1,70}\r?\n)*")


def _pairs(response: Response, plain: re.Pattern[bytes]) -> tuple[list[bytes], list[bytes]] | None:
    body = response.body or b""
    if plain.fullmatch(body) is None:
        return None
    words = body.split()
    return words[0::2], words[1::2]


def parse_scan_listing(response: Response) -> dict[int, int]:
    """LIST -> {message number: size in octets}."""
    pairs = _pairs(response, _PLAIN_SCAN)
    if pairs is not None:
        return dict(zip(map(int, pairs[0]), map(int, pairs[1]), strict=True))
    sizes: dict[int, int] = {}
    for raw in response.lines():
        words = raw.split()
        if len(words) < 2 or not words[0].isdigit() or not words[1].isdigit():
            raise ProtocolError(f"POP3 server sent a malformed LIST line: {_show(raw)}")
        sizes[int(words[0])] = int(words[1])
    return sizes


_UIDL_CHARS = re.compile(rb"^[\x21-\x7e]{1,70}$")


def parse_uidl_listing(response: Response) -> dict[int, str]:
    """UIDL -> {message number: unique id}; ids are 1-70 printable characters (RFC 1939)."""
    pairs = _pairs(response, _PLAIN_UIDL)
    if pairs is not None:
        return {int(n): uid.decode("ascii") for n, uid in zip(*pairs, strict=True)}
    ids: dict[int, str] = {}
    for raw in response.lines():
        words = raw.split()
        if len(words) < 2 or not words[0].isdigit() or not _UIDL_CHARS.match(words[1]):
            raise ProtocolError(f"POP3 server sent a malformed UIDL line: {_show(raw)}")
        ids[int(words[0])] = words[1].decode("ascii")
    return ids


# -- authentication payloads -----------------------------------------------------------------------

_TIMESTAMP = re.compile(r"<[^<>\s]*@[^<>\s]*>")


def apop_digest(greeting: str, password: str) -> str | None:
    """The APOP digest for ``password``, or None if the greeting has no timestamp."""
    match = _TIMESTAMP.search(greeting)
    if match is None:
        return None
    data = (match.group(0) + password).encode("utf-8")
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def sasl_login(user: str, password: str, challenge: bytes) -> str:
    """LOGIN answers 'Username:' then 'Password:' (servers vary: anything else is the password)."""
    if b"user" in challenge.lower():
        return _sasl.b64(user.encode("utf-8"))
    return _sasl.b64(password.encode("utf-8"))
