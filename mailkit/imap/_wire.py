"""A fast reader for the literal-heavy responses of bulk FETCH, on imapclient's own connection.

Rule: imapclient issues every command except bulk ``UID FETCH`` (and the IDLE/CHANGEDSINCE checks
built on it). Those go out here as one tagged line on the underlying imaplib socket and their
responses are read here, up to and including our tagged reply, so imaplib's bookkeeping never sees
them. Parsing is a C-speed regex tokenizer plus a small stack builder; literals are sliced, never
re-scanned, and literals above a threshold are streamed to a file instead of held in memory.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any, Protocol

from ..errors import ConnectionLost, PermanentError, ProtocolError, Reply, TransientError

__all__ = [
    "Literal",
    "Spooled",
    "parse_fetch_items",
    "parse_sequence_set",
    "read_response",
    "sequence_set",
    "tokenize",
]

MAX_LINE = 4 << 20  # a text line longer than this (outside literals) is an attack or a bug
CHUNK = 1 << 20

_TOKEN = re.compile(
    rb'[()]|"(?:[^"\\]|\\.)*"|\{\d+\+?\}\r?\n?$|[^\s()"\[\]{]+(?:\[[^\]]*\](?:<\d+>)?)?|\[|\]'
)
_LITERAL_AT_END = re.compile(rb"\{(\d+)\+?\}\r\n$")
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


def _read_exact(reader: _Reader, size: int) -> bytes:
    data = reader.read(size)
    if len(data) != size:
        raise ConnectionLost("IMAP connection closed in the middle of a literal")
    return data


def _readline(reader: _Reader) -> bytes:
    line = reader.readline(MAX_LINE + 1)
    if not line:
        raise ConnectionLost("IMAP connection closed by the server")
    if len(line) > MAX_LINE:
        raise ProtocolError(f"IMAP server sent a line longer than {MAX_LINE} bytes")
    return line


def read_response(
    reader: _Reader, *, spool: Spool | None = None, spool_over: int = 8 << 20
) -> list[bytes | Literal | Spooled]:
    """Read one response: its text parts with the literals between them, in order."""
    parts: list[bytes | Literal | Spooled] = []
    while True:
        line = _readline(reader)
        match = _LITERAL_AT_END.search(line, max(0, len(line) - 24))
        if match is None:
            parts.append(line)
            return parts
        size = int(match.group(1))
        parts.append(line[: match.start()])
        if spool is not None and size > spool_over:
            path, sink = spool(size)
            with sink:
                remaining = size
                while remaining:
                    chunk = reader.read(min(CHUNK, remaining))
                    if not chunk:
                        raise ConnectionLost("IMAP connection closed in the middle of a literal")
                    sink.write(chunk)
                    remaining -= len(chunk)
            parts.append(Spooled(path, size))
        else:
            parts.append(Literal(_read_exact(reader, size)))


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


def _fetch_json(texts: list[str]) -> str:
    text = " ".join(texts)
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


def parse_fetch_batch(responses: list[list[bytes | Literal | Spooled]]) -> list[dict[str, Any]]:
    """FETCH responses (as read by ``read_response``) -> their item dicts, names upper-cased."""
    texts: list[str] = []
    literals: list[list[Literal | Spooled]] = []
    no_literals: list[Literal | Spooled] = []
    for parts in responses:
        first = parts[0]
        assert isinstance(first, bytes)
        _head, _, rest = first.partition(b"(")
        if len(parts) == 1:  # the common listing case: one line, no literal
            texts.append("(" + rest.decode("utf-8", "surrogateescape"))
            literals.append(no_literals)
            continue
        chunks = [rest]
        lits: list[Literal | Spooled] = []
        for part in parts[1:]:
            if isinstance(part, (Literal, Spooled)):
                lits.append(part)
                chunks.append(b"\x01")
            else:
                chunks.append(part)
        texts.append("(" + b"".join(chunks).decode("utf-8", "surrogateescape"))
        literals.append(lits)
    try:
        values = json.loads(_fetch_json(texts), strict=False)
        if len(values) != len(responses):
            raise ValueError("response count changed")
    except ValueError:
        values = [_str_tree(untagged(parts)[2])[0] for parts in responses]
        literals = [[] for _ in responses]
    if not all(isinstance(v, list) and all(isinstance(k, str) for k in v[::2]) for v in values):
        raise ProtocolError("malformed FETCH response: item names must be atoms")
    out: list[dict[str, Any]] = []
    for items, lits in zip(values, literals, strict=True):
        if not isinstance(items, list) or len(items) % 2:
            raise ProtocolError("malformed FETCH response")
        if lits:
            for i in range(1, len(items), 2):  # most literals are item values (BODY[] ...)
                if items[i] == _LIT_MARK:
                    items[i] = lits.pop(0)
                    if not lits:
                        break
            if lits:
                _put_literals(items, lits)
        it = iter(items)
        out.append({key.upper(): value for key, value in zip(it, it, strict=True)})
    return out
