"""A fast reader for the literal-heavy responses of bulk FETCH, on imapclient's own connection.

Rule: imapclient issues every command except bulk ``UID FETCH`` (and the IDLE/CHANGEDSINCE checks
built on it). Those go out here as tagged lines (several pipelined at once) on the underlying
imaplib socket and their responses are read here, up to and including our last tagged reply, so
imaplib's bookkeeping never sees them; bytes read past it are handed back to imaplib. Reads are big
chunks; runs of literal-free lines are checked and parsed as whole blocks with C-speed regex/str
passes, literals are sliced by their announced size (never scanned), and literals above a threshold
are streamed to a file instead of held in memory. Bulk bodies of the usual shape are cut with one
regex match per response (``body_rows``); any other shape goes to the general reader. Lines and
in-memory literals have hard limits.
"""

from __future__ import annotations

import itertools
import json
import re
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any, Protocol

from ..errors import ConnectionLost, PermanentError, ProtocolError, Reply, TransientError

__all__ = [
    "BulkReader",
    "Literal",
    "Spooled",
    "fetch_block_values",
    "parse_fetch_block",
    "parse_fetch_items",
    "parse_sequence_set",
    "parse_size_block",
    "sequence_set",
    "tokenize",
]

MAX_LINE = 4 << 20  # a text line longer than this (outside literals) is an attack or a bug
CHUNK = 1 << 20
BLOCK = 64 << 10  # literal-free responses are parsed in blocks of about this size
MAX_MEMORY_LITERAL = 256 << 20  # a literal held in memory (not streamed to a file): no bigger
# imaplib's file buffers at most io.DEFAULT_BUFFER_SIZE (8 KB); one readinto1 into more than this
# takes all it holds (then reads the socket straight into ours), leaving it empty.
_BUFFERED_MAX = 64 << 10

_TOKEN = re.compile(
    rb'[()]|"(?:[^"\\]|\\.)*"|\{\d+\+?\}\r?\n?$|[^\s()"\[\]{]+(?:\[[^\]]*\](?:<\d+>)?)?|\[|\]'
)
_LITERAL_AT_END = re.compile(rb"\{(\d+)\+?\}\r\n$")
_FETCH_LINES = re.compile(rb"(?:\* \d+ FETCH \([^\n]*\n)*")
_FETCH_HEAD = re.compile(rb"\n\* \d+ FETCH ")  # at a line start: a literal prefix keeps the search fast
_UNESCAPE = re.compile(rb"\\(.)")
_tags = itertools.count(1)


class Literal(bytes):
    """A literal's bytes (told apart from atoms so ``NIL`` as data is not ``None``)."""


@dataclass(frozen=True)
class Spooled:
    """A literal too big to hold in memory, written to ``path`` as it arrived."""

    path: str
    size: int


class _Reader(Protocol):
    def readline(self, size: int = ..., /) -> bytes: ...

    def read(self, size: int = ..., /) -> bytes: ...


Spool = Callable[[int], tuple[str, IO[bytes]]]
"""Called with a literal's size; returns (path, open binary file) to stream it into."""


def _readline(reader: _Reader) -> bytes:
    line = reader.readline(MAX_LINE + 1)
    if not line:
        raise ConnectionLost("IMAP connection closed by the server")
    if len(line) > MAX_LINE:
        raise ProtocolError(f"IMAP server sent a line longer than {MAX_LINE} bytes")
    return line


class _ChunkSource(Protocol):
    def readinto1(self, buffer: memoryview, /) -> int: ...


class BulkReader:
    """Cuts responses out of big reads: one ``readinto1`` per arrival, not one call per line.

    ``readinto1`` on imaplib's buffered file first hands out what imaplib had already buffered,
    then reads the socket straight into our buffer, so nothing is lost or reordered. Lines are
    found with ``find`` over the buffer and literals are skipped by their announced size, never
    scanned; each value is copied out once. ``leftover()`` is what was read past the last
    response taken (to give back to imaplib).

    ``recv(size, buffer)`` (the socket's own read), when given, replaces ``readinto1`` once
    imaplib's buffer is known to be empty: after one ``readinto1`` bigger than that buffer, which
    hands out everything it held. Then each arrival costs one call into the socket, not layers of
    Python file objects (a TLS record is a few KB: there are thousands of arrivals per batch).
    """

    __slots__ = ("_buf", "_direct", "_end", "_flags", "_pos", "_recv", "_src", "_view")

    def __init__(
        self, source: _ChunkSource, size: int = CHUNK, *, recv: Callable[[int, memoryview], int] | None = None
    ) -> None:
        self._src = source
        self._recv = recv
        self._direct: Callable[[int, memoryview], int] | None = None  # recv, once it is safe
        self._buf = bytearray(size)
        self._view = memoryview(self._buf)
        self._pos = 0  # next unread byte
        self._end = 0  # end of the bytes received
        self._flags: dict[bytes, tuple[str, ...]] = {}  # flag lists decoded so far (body_rows)

    def _fill(self) -> None:
        """Receive more after what is unread (moved to the front first; the buffer grows only
        when the unread part fills it: a long line or literal, both bounded by the callers)."""
        pending = self._end - self._pos
        if self._end == len(self._buf) or self._pos > len(self._buf) >> 1:
            if pending >= len(self._buf) >> 1:
                grown = bytearray(max(2 * len(self._buf), 2 * pending))
                grown[:pending] = self._view[self._pos : self._end]
                self._view.release()
                self._buf, self._view = grown, memoryview(grown)
            else:
                self._view[:pending] = self._view[self._pos : self._end]
            self._pos, self._end = 0, pending
        space = self._view[self._end :]
        direct = self._direct
        if direct is not None:
            try:
                got = direct(len(space), space)
            except ssl.SSLEOFError:  # closed without TLS close_notify: as ssl's own recv_into says it
                got = 0
        else:
            got = self._src.readinto1(space)
            if self._recv is not None and len(space) > _BUFFERED_MAX:
                self._direct = self._recv  # imaplib's buffer was emptied into ours
        if not got:
            raise ConnectionLost("IMAP connection closed by the server")
        self._end += got

    def readline(self, size: int = -1, /) -> bytes:
        """One line with its CRLF; longer than MAX_LINE is refused before it is all read."""
        end = self._buf.find(b"\n", self._pos, self._end)
        while end < 0:
            scanned = self._end - self._pos
            if scanned > MAX_LINE:
                raise ProtocolError(f"IMAP server sent a line longer than {MAX_LINE} bytes")
            self._fill()
            end = self._buf.find(b"\n", self._pos + scanned, self._end)
        start = self._pos
        if end - start >= MAX_LINE:
            raise ProtocolError(f"IMAP server sent a line longer than {MAX_LINE} bytes")
        self._pos = end + 1
        return self._view[start : end + 1].tobytes()

    def read(self, size: int = -1, /) -> bytes:
        """Exactly ``size`` bytes (the buffer grows as they arrive, never ahead of them)."""
        while self._end - self._pos < size:
            self._fill()
        start = self._pos
        self._pos = start + max(size, 0)
        return self._view[start : self._pos].tobytes()

    def _stream(self, size: int, sink: IO[bytes]) -> None:
        remaining = size
        while remaining:
            if self._pos >= self._end:
                self._fill()
            take = min(remaining, self._end - self._pos)
            sink.write(self._view[self._pos : self._pos + take])
            self._pos += take
            remaining -= take

    def response(
        self, *, spool: Spool | None = None, spool_over: int = 8 << 20
    ) -> list[bytes | Literal | Spooled]:
        """One response: its text parts with the literals between them, in order."""
        parts: list[bytes | Literal | Spooled] = []
        while True:
            line = self.readline()
            if not line.endswith(b"}\r\n"):
                parts.append(line)
                return parts
            match = _LITERAL_AT_END.search(line, max(0, len(line) - 24))
            if match is None:
                parts.append(line)
                return parts
            size = int(match.group(1))
            parts.append(line[: match.start()])
            if spool is not None and size > spool_over:
                path, sink = spool(size)
                with sink:
                    self._stream(size, sink)
                parts.append(Spooled(path, size))
            elif size > MAX_MEMORY_LITERAL:
                raise ProtocolError(f"IMAP server announced a {size}-byte literal where none fits")
            else:
                parts.append(Literal(self.read(size)))

    def fetch_block(self, min_size: int = BLOCK) -> bytes:
        """The next run of literal-free FETCH response lines, or ``b""`` if the next line is not one.

        A run ends before a line announcing a literal, a tagged reply or any other response; short
        of that it is gathered to ``min_size`` bytes first (one TLS record holds a few lines only),
        so parsing costs per block, not per line. Checked with one C-speed match.
        """
        buf = self._buf
        checked = 0  # bytes after the start already known to be whole FETCH lines
        while True:
            start = self._pos
            scan = start + checked
            last = buf.rfind(b"\n", scan, self._end)
            if last >= 0:
                stop = False
                literal = buf.find(b"}\r\n", scan, last + 1)
                if literal >= 0:
                    stop = True
                    last = buf.rfind(b"\n", scan, literal)
                got = scan if last < 0 else _FETCH_LINES.match(buf, scan, last + 1).end()  # type: ignore[union-attr]
                checked = got - start
                if got <= last:
                    stop = True  # another kind of line follows
                if got > start and (stop or got - start >= min_size):
                    self._pos = got
                    return self._view[start:got].tobytes()
                if stop:
                    return b""
            if self._end - (start + checked) > MAX_LINE:
                raise ProtocolError(f"IMAP server sent a line longer than {MAX_LINE} bytes")
            self._fill()
            buf = self._buf

    def literal_block(self, limit: int) -> list[list[bytes | Literal | Spooled]]:
        """The bulk-body responses already received whole, cut in one tight loop.

        Each is ``* n FETCH (...{size}\r\n``, ``size`` bytes, ``)\r\n``, with ``size`` at most
        ``limit``; the parts are what ``response()`` gives. Stops (leaving the rest for
        ``response()``) at anything else: another shape, a bigger literal, an incomplete response.
        """
        out: list[list[bytes | Literal | Spooled]] = []
        buf, view, end = self._buf, self._view, self._end
        pos = self._pos
        while True:
            nl = buf.find(b"\n", pos, end)
            if nl < 0 or nl - pos > 8192 or buf[nl - 2 : nl] != b"}\r" or not buf.startswith(b"* ", pos):
                break
            if buf.find(b" FETCH (", pos, min(nl, pos + 40)) < 0:
                break
            brace = buf.rfind(b"{", pos, nl)
            digits = buf[brace + 1 : nl - 2]
            if brace < 0 or not digits.isdigit() or len(digits) > 12:
                break
            size = int(digits)
            stop = nl + 1 + size
            if size > limit or stop + 3 > end or not buf.startswith(b")\r\n", stop):
                break
            out.append([view[pos:brace].tobytes(), Literal(view[nl + 1 : stop]), b")\r\n"])
            pos = stop + 3
        self._pos = pos
        return out

    def body_rows(self, head: re.Pattern[bytes], limit: int) -> list[BodyRow]:
        """Bulk-body responses of the shape ``head`` matches (see ``body_head``), as they arrive.

        Cut straight out of the buffer: one regex match for the line, the literal sliced by its
        announced size (at most ``limit``; bigger ones are ``response()``'s to stream), the
        closing ``)\\r\\n`` checked. A response cut off by the end of a read is completed by
        reading more; at any other shape (a tagged reply, another response) it stops, leaving
        the rest for ``response()``. Flag lists repeat: each distinct one is decoded once.
        """
        out: list[BodyRow] = []
        append = out.append
        match = head.match
        flag_cache = self._flags
        buf, view, pos, end = self._buf, self._view, self._pos, self._end
        while True:
            m = match(buf, pos, end)
            if m is None:
                if buf.find(b"\n", pos, end) >= 0 or end - pos > _BODY_HEAD_MAX:
                    break  # a whole line of another shape
                self._pos = pos  # the line is cut off by the end of what was received
                self._fill()
                buf, view, pos, end = self._buf, self._view, self._pos, self._end
                continue
            uid, raw_flags, size_item, announced = m.groups()  # copies: a fill may move the bytes
            size = int(announced)
            if size > limit:
                break
            start = m.end()
            stop = start + size + 3
            if stop > end:  # the literal is cut off: receive the rest of it
                skip = start - pos
                self._pos = pos
                while self._end - self._pos < skip + size + 3:
                    self._fill()
                buf, view, pos, end = self._buf, self._view, self._pos, self._end
                start = pos + skip
                stop = start + size + 3
            if not buf.startswith(b")\r\n", stop - 3):
                break  # more items after the literal: the general parser's
            if raw_flags is None:
                flags = None
            else:
                flags = flag_cache.get(raw_flags)
                if flags is None:
                    flags = _flag_tuple(raw_flags)
                    if flags is None:
                        break
                    if len(flag_cache) < 256:
                        flag_cache[raw_flags] = flags
            size_value = None if size_item is None else int(size_item)
            append((int(uid), flags, size_value, view[start : stop - 3].tobytes()))
            pos = stop
        self._pos = pos
        return out

    def leftover(self) -> bytes:
        return self._view[self._pos : self._end].tobytes()


BodyRow = tuple[int, "tuple[str, ...] | None", "int | None", bytes]
"""(uid, flags or None when not sent, RFC822.SIZE or None, the section's bytes)."""

_BODY_HEAD_MAX = 8192  # a bulk-body response line is short; a longer one is not this shape


_ABSENT = rb"((?!))?"  # a group that never takes part: the item was not asked for (None)


def body_head(section: str, *, flags: bool, size: bool) -> re.Pattern[bytes]:
    """The line before a bulk body: ``* n FETCH (UID u FLAGS (...) RFC822.SIZE s BODY[section] {n}``.

    The items in the order asked (servers answer so; UID first), flags plain atoms only. Groups:
    uid, flags, size, literal size. Anything else does not match and goes to the general parser.
    """
    return re.compile(
        rb"\* \d{1,10} FETCH \(UID (\d{1,10})"
        + (rb" FLAGS \(([^()\"{}\[\]\x00-\x1f\x7f]*)\)" if flags else _ABSENT)
        + (rb" RFC822\.SIZE (\d{1,12})" if size else _ABSENT)
        + rb" BODY\[" + re.escape(section.encode("ascii")) + rb"\] \{(\d{1,12})\}\r\n"
    )


def _flag_tuple(raw: bytes) -> tuple[str, ...] | None:
    """A flag list's text as the general parser gives it, or None for what it would not (NIL)."""
    flags = tuple(raw.decode("utf-8", "surrogateescape").split())
    return None if "NIL" in flags else flags


class Prefixed:
    """imaplib's file with bytes we read too far put back in front (rare: unsolicited data)."""

    def __init__(self, head: bytes, file: Any) -> None:
        self._head = head
        self.file = file

    @property
    def pending(self) -> int:
        return len(self._head)

    def _take(self, size: int) -> bytes:
        head, self._head = self._head[:size], self._head[size:]
        return head

    def peek(self, size: int = 0, /) -> bytes:
        if b"\n" in self._head:
            return self._head
        return self._head + bytes(self.file.peek(size))

    def readinto1(self, buffer: memoryview, /) -> int:
        if not self._head:
            return int(self.file.readinto1(buffer))
        head = self._take(len(buffer))
        buffer[: len(head)] = head
        return len(head)

    def read(self, size: int = -1, /) -> bytes:
        if not self._head:
            return bytes(self.file.read(size))
        head = self._take(size if size >= 0 else len(self._head))
        if size < 0 or len(head) < size:
            return head + bytes(self.file.read(-1 if size < 0 else size - len(head)))
        return head

    def readline(self, size: int = -1, /) -> bytes:
        if not self._head:
            return bytes(self.file.readline(size))
        cut = self._head.find(b"\n")
        if cut >= 0 and (size < 0 or cut < size):
            return self._take(cut + 1)
        head = self._take(size if size >= 0 else len(self._head))
        if size >= 0 and len(head) >= size:
            return head
        return head + bytes(self.file.readline(-1 if size < 0 else size - len(head)))

    def close(self) -> None:
        self.file.close()


def tokenize(parts: Iterable[bytes | Literal | Spooled]) -> list[Any]:
    """Turn a response's parts into nested lists of atoms (bytes), strings, literals and None."""
    root: list[Any] = []
    stack = [root]
    current = root
    for part in parts:
        if isinstance(part, (Literal, Spooled)):
            current.append(part)
            continue
        for token in _TOKEN.findall(part):
            first = token[0]
            if first == 40:  # (
                child: list[Any] = []
                current.append(child)
                stack.append(child)
                current = child
            elif first == 41:  # )
                if len(stack) == 1:
                    raise ProtocolError("unbalanced ')' in IMAP response")
                stack.pop()
                current = stack[-1]
            elif first == 34:  # "
                body = token[1:-1]
                current.append(Literal(_UNESCAPE.sub(rb"\1", body) if b"\\" in body else body))
            elif first == 123:  # {n} before a literal: the literal part follows
                continue
            elif token == b"NIL":
                current.append(None)
            else:
                current.append(token)
    return root


def parse_fetch_items(items: list[Any]) -> dict[bytes, Any]:
    """``[b"UID", b"5", b"FLAGS", [...]]`` -> ``{b"UID": b"5", b"FLAGS": [...]}`` (names upper-cased)."""
    if len(items) % 2:
        raise ProtocolError("odd number of items in a FETCH response")
    it = iter(items)
    out: dict[bytes, Any] = {}
    for key, value in zip(it, it, strict=True):
        if not isinstance(key, bytes):
            raise ProtocolError("FETCH item name is not an atom")
        out[key.upper()] = value
    return out


def sequence_set(uids: Iterable[int]) -> bytes:
    """Sorted UIDs as a compact IMAP sequence set: ``[1, 2, 3, 7]`` -> ``b"1:3,7"``."""
    ranges: list[bytes] = []
    start = prev = -1
    for uid in sorted(set(uids)):
        if uid == prev + 1:
            prev = uid
            continue
        if start >= 0:
            ranges.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
        start = prev = uid
    if start >= 0:
        ranges.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
    if not ranges:
        raise ValueError("empty UID set")
    return b",".join(ranges)


def parse_sequence_set(text: bytes) -> list[int]:
    """``b"1:3,7"`` -> ``[1, 2, 3, 7]`` (as in VANISHED responses)."""
    out: list[int] = []
    for piece in text.split(b","):
        low, _, high = piece.partition(b":")
        a = int(low)
        b = int(high) if high else a
        if a > b:
            a, b = b, a
        out.extend(range(a, b + 1))
    return out


def new_tag() -> bytes:
    return b"MK%d" % next(_tags)


def tagged_status(line: bytes, tag: bytes, command: str) -> None:
    """Raise the matching error unless the tagged line says OK."""
    rest = line[len(tag) + 1 :].rstrip(b"\r\n")
    status, _, text = rest.partition(b" ")
    status = status.upper()
    if status == b"OK":
        return
    reply = Reply("imap", status.decode("ascii", "replace"), text.decode("utf-8", "replace"))
    if status == b"NO":
        # [UNAVAILABLE]/[INUSE]/[LIMIT] mean "try later"; anything else is final.
        transient = text.upper().startswith((b"[UNAVAILABLE]", b"[INUSE]", b"[LIMIT]"))
        cls = TransientError if transient else PermanentError
        raise cls(f"IMAP {command} refused", reply=reply)
    if status == b"BAD":
        raise PermanentError(f"IMAP {command} rejected as malformed", reply=reply)
    raise ProtocolError(f"IMAP {command}: unexpected tagged reply {status!r}", reply=reply)


def untagged(parts: list[bytes | Literal | Spooled]) -> tuple[bytes, bytes, list[Any]]:
    """Split an untagged response: (number or b"", name, the rest tokenized)."""
    first = parts[0]
    assert isinstance(first, bytes)
    head = first[2:]
    word, _, rest = head.partition(b" ")
    if word.isdigit():
        name, _, rest = rest.partition(b" ")
        return word, name.upper(), tokenize([rest, *parts[1:]])
    return b"", word.upper(), tokenize([rest, *parts[1:]])


class _Conn(Protocol):
    def send(self, data: bytes) -> None: ...


def send_command(
    conn: _Conn, reader: _Reader, tag: bytes, segments: list[bytes], *, literal_plus: bool
) -> None:
    """Send ``tag`` + segments as one command; ``Literal`` segments go as IMAP literals.

    Text segments are written as they are (the caller built them from checked atoms); anything
    user-supplied that is not a plain atom arrives here as a Literal, so CR/LF can never end the
    line early: one command on the wire per call.
    """
    buf = bytearray(tag + b" ")
    for segment in segments:
        if not isinstance(segment, Literal):
            if b"\r" in segment or b"\n" in segment:
                raise ValueError("CR/LF in a command's text segment")
            buf += segment
            continue
        if literal_plus:
            buf += b"{%d+}\r\n" % len(segment)
            buf += segment
            continue
        buf += b"{%d}\r\n" % len(segment)
        conn.send(bytes(buf))
        buf = bytearray()
        while True:
            line = _readline(reader)
            if line.startswith(b"+"):
                break
            if line.startswith(tag + b" "):
                tagged_status(line, tag, "command")
                raise ProtocolError("IMAP server ended a command in the middle of a literal")
        buf += segment
    buf += b"\r\n"
    conn.send(bytes(buf))


def pipelined(tags: list[bytes], commands: list[list[bytes]]) -> bytes:
    """Several commands as the bytes to send at once: plain text segments only (no literals)."""
    lines: list[bytes] = []
    for tag, segments in zip(tags, commands, strict=True):
        line = b"".join(segments)
        if any(isinstance(s, Literal) for s in segments) or b"\r" in line or b"\n" in line:
            raise ValueError("a pipelined command must be one plain line")
        lines.append(tag + b" " + line + b"\r\n")
    return b"".join(lines)


# --- the bulk FETCH path: a whole batch of responses turned into JSON and parsed in C -----------
#
# A batch of FETCH responses is rewritten with a handful of whole-text regex/str operations into
# JSON (quoted strings are already JSON strings; atoms get quotes; NIL becomes null; parentheses
# become brackets; whitespace becomes commas) and parsed by json.loads. Literals are replaced by a
# marker string no IMAP string can produce (a lone CR) and put back afterwards. Anything this does
# not understand falls back to the general tokenizer above, response by response.

_QUOTED = re.compile(r'("[^"\\\r\n]*(?:\\.[^"\\\r\n]*)*")')
# Only sections holding spaces or parentheses need protecting: BODY[] or BODY[1.2] are plain atoms.
_SECTION = re.compile(r'([^\s()"\x00\[]*\[[^\]\x00]*[\s()][^\]\x00]*\](?:<\d+>)?)')
_ATOMS = re.compile(r'([^\s()"\x00\x01]+)')
_PARENS = str.maketrans("()", "[]")
_LIT_MARK = "\r"
_LIT_JSON = '"\\r"'


def _fetch_json_fast(text: str) -> str | None:
    """The common case without a regex: no escaped quote, no section holding spaces or parens.

    Every ``"`` then delimits a quoted string, so ``split('"')`` separates strings from the rest;
    the rest is split on whitespace (parentheses padded first), every token quoted at once by a
    join, and brackets, NIL and the literal mark swapped back with plain replaces. None means:
    use the general conversion.
    """
    if '\\"' in text or "\x00" in text or "\x02" in text or "\x03" in text:
        return None
    segments = text.split('"')
    if not len(segments) % 2:
        return None  # an unterminated quoted string
    quoted = segments[1::2]
    if quoted and "\r" in "\x00".join(quoted):
        return None  # CR is the literal mark; IMAP strings cannot hold one anyway
    skeleton = "\x00".join(segments[0::2])
    if "[" in skeleton and "[" in skeleton.replace("[]", "") and _SECTION.search(skeleton):
        return None
    if "\\" in skeleton:
        skeleton = skeleton.replace("\\", "\\\\")
    tokens = skeleton.replace("(", " \x02 ").replace(")", " \x03 ").split()
    js = '"' + '","'.join(tokens) + '"'
    js = js.replace('"\x02","\x03"', "[]").replace('"\x02",', "[").replace(',"\x03"', "]")
    js = js.replace('"NIL"', "null").replace('"\x01"', _LIT_JSON)
    if not quoted:
        return "[" + js + "]"
    pieces = js.split("\x00")
    if len(pieces) != len(quoted) + 1:
        return None  # a string glued to an atom: leave it to the general path
    out = [""] * (2 * len(pieces) + 1)
    out[0], out[-1] = "[", "]"
    out[1:-1:2] = pieces
    out[2:-2:2] = quoted
    return "".join(out)


def _fetch_json(text: str) -> str:
    """FETCH responses' item lists (each starting at its '('), joined by spaces, as one JSON array."""
    fast = _fetch_json_fast(text)
    if fast is not None:
        return fast
    segments = _QUOTED.split(text)
    quoted = segments[1::2]
    skeleton = "\x00".join(segments[0::2])
    if "[" in skeleton:
        parts = _SECTION.split(skeleton)
        if len(parts) > 1:
            merged: list[str] = []
            out: list[str] = []
            taken = 0
            for i, part in enumerate(parts):
                if i % 2 == 0:
                    n = part.count("\x00")
                    merged.extend(quoted[taken : taken + n])
                    taken += n
                    out.append(part)
                else:
                    merged.append(json.dumps(part))
                    out.append("\x00")
            skeleton, quoted = "".join(out), merged
    if "\\" in skeleton:
        skeleton = skeleton.replace("\\", "\\\\")
    skeleton = '"'.join(_ATOMS.split(skeleton))
    skeleton = skeleton.replace('"NIL"', "null").replace("\x01", _LIT_JSON).translate(_PARENS)
    skeleton = ",".join(skeleton.split())
    skeleton = skeleton.replace("][", "],[").replace("[,", "[").replace(",]", "]")
    pieces = skeleton.split("\x00")
    quoted.append("")
    return "[" + "".join(itertools.chain.from_iterable(zip(pieces, quoted, strict=True))) + "]"


def _put_literals(node: list[Any], literals: list[Literal | Spooled]) -> None:
    for i, value in enumerate(node):
        if value == _LIT_MARK:
            node[i] = literals.pop(0)
        elif isinstance(value, list):
            _put_literals(value, literals)


def _str_tree(node: Any) -> Any:
    """The general tokenizer's output in the bulk path's shape (atoms as str)."""
    if isinstance(node, list):
        return [_str_tree(v) for v in node]
    if isinstance(node, (Literal, Spooled)) or node is None:
        return node
    return node.decode("utf-8", "surrogateescape")


# "* n FETCH (UID 5 FLAGS (\Seen) RFC822.SIZE 9 BODY[] " before one literal that ends the list:
# plain atoms, numbers and flat lists of atoms only (what bulk body fetches look like).
_SIMPLE_HEAD = re.compile(
    r"\* \d+ FETCH \(((?:[A-Z0-9.]+ (?:[^\s()\"{}\[\]]+|\([^()\"{}\[\]\r\n]*\)) )*)"
    r"(BODY\[[0-9.]*\](?:<\d+>)?) $"
)
_SIMPLE_ITEM = re.compile(r"([A-Z0-9.]+) (?:([^\s()]+)|\(([^()]*)\)) ")


def _simple_rows(responses: list[list[bytes | Literal | Spooled]]) -> list[dict[str, Any]] | None:
    """The bulk-body shape without the general machinery, or None if any response differs."""
    out: list[dict[str, Any]] = []
    match_head = _SIMPLE_HEAD.match
    find_items = _SIMPLE_ITEM.findall
    for parts in responses:
        if len(parts) != 3 or parts[2] != b")\r\n":
            return None
        head = parts[0]
        assert isinstance(head, bytes)
        match = match_head(head.decode("utf-8", "surrogateescape"))
        if match is None:
            return None
        row: dict[str, Any] = {}
        for key, atom, flat in find_items(match.group(1)):
            if key in row:
                return None
            row[key] = atom if atom else flat.split()
        row[match.group(2)] = parts[1]
        out.append(row)
    return out


def parse_fetch_batch(responses: list[list[bytes | Literal | Spooled]]) -> list[dict[str, Any]]:
    """FETCH responses (as read by ``BulkReader.response``) -> their item dicts, names upper-cased."""
    simple = _simple_rows(responses) if responses and len(responses[0]) == 3 else None
    if simple is not None:
        return simple
    chunks: list[bytes] = []
    literals: list[list[Literal | Spooled]] = []
    no_literals: list[Literal | Spooled] = []
    for parts in responses:
        first = parts[0]
        assert isinstance(first, bytes)
        start = first.find(b"(")
        rest = first[start:] if start >= 0 else b"("
        if len(parts) == 1:  # the common listing case: one line, no literal
            chunks.append(rest)
            literals.append(no_literals)
            continue
        lits: list[Literal | Spooled] = []
        pieces = [rest]
        for part in parts[1:]:
            if isinstance(part, (Literal, Spooled)):
                lits.append(part)
                pieces.append(b"\x01")
            else:
                pieces.append(part)
        chunks.append(b"".join(pieces))
        literals.append(lits)
    try:
        text = b" ".join(chunks).decode("utf-8", "surrogateescape")
        values = json.loads(_fetch_json(text), strict=False)
        if len(values) != len(responses):
            raise ValueError("response count changed")
    except (ValueError, RecursionError):
        try:
            values = [_str_tree(untagged(parts)[2])[0] for parts in responses]
        except RecursionError:
            raise ProtocolError("FETCH response nested too deeply") from None
        literals = [[] for _ in responses]
    return _rows(values, literals)


_SIZE_ROW = re.compile(rb"\* \d+ FETCH \(UID (\d+) RFC822\.SIZE (\d+) FLAGS \(([^()\"\r\n{}]*)\)\)\r\n")


def parse_size_block(block: bytes) -> list[tuple[int, int, tuple[str, ...]]] | None:
    """``(UID n RFC822.SIZE n FLAGS (...))`` lines in the order asked -> (uid, size, flags), or
    None when any line has another shape (then ``parse_fetch_block`` reads it)."""
    rows = _SIZE_ROW.findall(block)
    if len(rows) != block.count(b"\n"):
        return None
    return [
        (int(uid), int(size), tuple(flags.decode("utf-8", "surrogateescape").split()) if flags else ())
        for uid, size, flags in rows
    ]


def parse_fetch_block(block: bytes) -> list[dict[str, Any]]:
    """Whole lines of literal-free FETCH responses (``BulkReader.fetch_block``) -> item dicts."""
    values = fetch_block_values(block)
    if values is None:
        return parse_fetch_batch([[line + b"\n"] for line in block.split(b"\n")[:-1]])
    return _rows(values, [[]] * len(values))


def fetch_block_values(block: bytes) -> list[Any] | None:
    """``parse_fetch_block`` before the dicts: each response's item list as parsed
    (``["UID", "5", "FLAGS", [...], ...]``, unchecked), or None where the bulk conversion does
    not apply (``parse_fetch_block`` then reads the lines one by one)."""
    count = block.count(b"\n")
    try:
        text = _FETCH_HEAD.sub(b"\n", b"\n" + block).decode("utf-8", "surrogateescape")
        values = json.loads(_fetch_json(text), strict=False)
    except (ValueError, RecursionError):
        return None
    return values if type(values) is list and len(values) == count else None


def _rows(values: list[Any], literals: list[list[Literal | Spooled]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    append = out.append
    for items, lits in zip(values, literals, strict=True):
        if type(items) is not list or len(items) % 2:
            raise ProtocolError("malformed FETCH response")
        if lits:
            if len(lits) == 1 and items[-1] == _LIT_MARK:  # the usual "... BODY[] {n}" at the end
                items[-1] = lits[0]
            else:
                lits = list(lits)
                for i in range(1, len(items), 2):  # most literals are item values (BODY[] ...)
                    if items[i] == _LIT_MARK:
                        items[i] = lits.pop(0)
                        if not lits:
                            break
                if lits:
                    _put_literals(items, lits)
        pairs = iter(items)
        row = dict(zip(pairs, pairs, strict=False))  # pairs of one iterator; the length is even
        try:
            names = "".join(row)  # a TypeError unless every item name is an atom (str)
        except TypeError:
            raise ProtocolError("malformed FETCH response: item names must be atoms") from None
        if len(row) * 2 != len(items) or not names.isupper():  # repeated or lower-case names
            row = {key.upper(): value for key, value in zip(items[0::2], items[1::2], strict=True)}
        append(row)
    return out
