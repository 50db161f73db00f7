"""The fast FETCH reader: bytes in, values out (no sockets)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from mailkit.errors import ConnectionLost, PermanentError, ProtocolError, TransientError
from mailkit.imap import _wire
from mailkit.imap._session import FetchSpec, message_from_items
from mailkit.imap._types import parse_envelope


def _read(data: bytes, **kw: Any) -> list[bytes | _wire.Literal | _wire.Spooled]:
    return _wire.BulkReader(io.BytesIO(data)).response(**kw)


def test_literal_is_sliced_byte_for_byte() -> None:
    body = b'Subject: x\r\n\r\n)( {5}\r\n"quoted" NIL\r\n'
    raw = b"* 1 FETCH (UID 7 FLAGS (\\Seen $Work) RFC822.SIZE %d BODY[] {%d}\r\n%s)\r\n" % (
        len(body),
        len(body),
        body,
    )
    parts = _read(raw)
    number, name, _rest = _wire.untagged(parts)
    assert (number, name) == (b"1", b"FETCH")
    items = _wire.parse_fetch_batch([parts])[0]
    assert items["UID"] == "7"
    assert items["FLAGS"] == ["\\Seen", "$Work"]
    assert items["BODY[]"] == body
    msg = message_from_items(items, FetchSpec(body=True))
    assert (msg.uid, msg.flags, msg.size, msg.body) == (7, ("\\Seen", "$Work"), len(body), body)


def test_envelope_with_quoted_nil_and_literal_subject() -> None:
    subject = 'Grüße "x"'.encode()
    raw = (
        b'* 2 FETCH (UID 9 ENVELOPE ("Mon, 1 Jan 2024 00:00:00 +0000" {%d}\r\n%s'
        b' (("Bob \\"B\\"" NIL "bob" "example.test")) NIL NIL'
        b' ((NIL NIL "alice" "example.test")) NIL NIL NIL "<id@x>"))\r\n' % (len(subject), subject)
    )
    env = parse_envelope(_wire.parse_fetch_batch([_read(raw)])[0]["ENVELOPE"])
    assert env.subject == 'Grüße "x"'
    assert env.from_[0].name == 'Bob "B"' and env.from_[0].email == "bob@example.test"
    assert env.sender == () and env.to[0].email == "alice@example.test"
    assert env.message_id == "<id@x>" and env.in_reply_to is None


def test_nil_literal_is_data_not_none() -> None:
    items = _wire.parse_fetch_batch([_read(b"* 1 FETCH (UID 1 BODY[] {3}\r\nNIL)\r\n")])
    assert items[0]["BODY[]"] == b"NIL"


def test_section_with_spaces_is_one_atom() -> None:
    tokens = _wire.tokenize([b"(BODY[HEADER.FIELDS (SUBJECT FROM)] {2}\r\n", _wire.Literal(b"ab"), b")"])
    assert tokens == [[b"BODY[HEADER.FIELDS (SUBJECT FROM)]", b"ab"]]


def test_big_literal_streams_to_spool(tmp_path: Path) -> None:
    body = b"x" * 5000
    sinks: list[str] = []

    def spool(size: int):  # type: ignore[no-untyped-def]
        path = tmp_path / f"s{len(sinks)}"
        sinks.append(str(path))
        return str(path), open(path, "wb")

    parts = _read(b"* 1 FETCH (UID 3 BODY[] {5000}\r\n" + body + b")\r\n", spool=spool, spool_over=1000)
    spooled = [p for p in parts if isinstance(p, _wire.Spooled)]
    assert spooled and spooled[0].size == 5000
    assert Path(spooled[0].path).read_bytes() == body
    assert all(len(p) < 100 for p in parts if isinstance(p, bytes))  # nothing big kept in memory


def test_truncated_literal_is_connection_lost() -> None:
    with pytest.raises(ConnectionLost):
        _read(b"* 1 FETCH (UID 3 BODY[] {50}\r\nshort")


def test_endless_line_is_refused() -> None:
    with pytest.raises(ProtocolError):
        _read(b"* " + b"A" * (_wire.MAX_LINE + 10))


def test_unbalanced_paren() -> None:
    with pytest.raises(ProtocolError):
        _wire.tokenize([b"a)"])


@pytest.mark.parametrize(
    ("uids", "expected"),
    [([1], b"1"), ([3, 1, 2], b"1:3"), ([1, 2, 3, 7, 9, 10], b"1:3,7,9:10"), ([5, 5], b"5")],
)
def test_sequence_set_roundtrip(uids: list[int], expected: bytes) -> None:
    assert _wire.sequence_set(uids) == expected
    assert _wire.parse_sequence_set(expected) == sorted(set(uids))


def test_tagged_status_errors() -> None:
    _wire.tagged_status(b"MK1 OK done\r\n", b"MK1", "X")
    with pytest.raises(PermanentError) as exc:
        _wire.tagged_status(b"MK1 NO [NONEXISTENT] no such mailbox\r\n", b"MK1", "SELECT")
    assert exc.value.reply is not None and exc.value.reply.code == "NO"
    with pytest.raises(TransientError):
        _wire.tagged_status(b"MK1 NO [UNAVAILABLE] later\r\n", b"MK1", "X")
    with pytest.raises(PermanentError):
        _wire.tagged_status(b"MK1 BAD syntax\r\n", b"MK1", "X")


class _Conn:
    def __init__(self) -> None:
        self.sent = b""

    def send(self, data: bytes) -> None:
        self.sent += data


def test_send_command_literal_plus_keeps_one_command() -> None:
    conn = _Conn()
    _wire.send_command(
        conn,
        io.BytesIO(b""),
        b"MK5",
        [b"UID SEARCH SUBJECT ", _wire.Literal(b"a\r\nMK6 DELETE INBOX")],
        literal_plus=True,
    )
    assert conn.sent == b"MK5 UID SEARCH SUBJECT {19+}\r\na\r\nMK6 DELETE INBOX\r\n"


def test_send_command_waits_for_continuation() -> None:
    conn = _Conn()
    _wire.send_command(
        conn, io.BytesIO(b"+ go\r\n"), b"MK5", [b"X ", _wire.Literal(b"ab")], literal_plus=False
    )
    assert conn.sent == b"MK5 X {2}\r\nab\r\n"


def test_send_command_refuses_crlf_in_text() -> None:
    with pytest.raises(ValueError):
        _wire.send_command(_Conn(), io.BytesIO(b""), b"MK1", [b"X\r\nY"], literal_plus=True)


_TRICKY = [
    b"* 1 FETCH (UID 1 FLAGS (\\Seen \\Answered $Label) MODSEQ (12) BODY[HEADER.FIELDS (SUBJECT)] {12}\r\n",
    b"Subject: x\r\n",
    b' ENVELOPE (NIL "a \\"quoted\\" (paren) [x] \\\\ NIL" NIL NIL NIL NIL NIL NIL NIL NIL))\r\n',
    b'* 2 FETCH (UID 2 BODYSTRUCTURE (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 1)'
    b'("text" "html" NIL NIL NIL "7bit" 5 1) "alternative") RFC822.SIZE 8)\r\n',
    b"* 3 FETCH (UID 3 ENVELOPE (NIL {4}\r\n",
    b'\r\nx\r ((NIL NIL "a" "b")) NIL NIL NIL NIL NIL NIL NIL NIL))\r\n',
]


def _responses() -> list[list[bytes | _wire.Literal | _wire.Spooled]]:
    reader = _wire.BulkReader(io.BytesIO(b"".join(_TRICKY)))
    return [reader.response() for _ in range(3)]


def test_bulk_parser_agrees_with_general_tokenizer() -> None:
    fast = _wire.parse_fetch_batch(_responses())
    slow = [
        {str(k): v for k, v in zip(t[0][::2], t[0][1::2], strict=True)}
        for t in (_wire._str_tree(_wire.untagged(p)[2]) for p in _responses())
    ]

    def norm(x: Any) -> Any:
        return x.decode() if isinstance(x, bytes) and not isinstance(x, _wire.Literal) else x

    def deep(v: Any) -> Any:
        if isinstance(v, list):
            return [deep(i) for i in v]
        return v.decode() if isinstance(v, _wire.Literal) else norm(v)

    assert [{k.upper(): deep(v) for k, v in d.items()} for d in slow] == [
        {k: deep(v) for k, v in d.items()} for d in fast
    ]
    assert fast[0]["BODY[HEADER.FIELDS (SUBJECT)]"] == b"Subject: x\r\n"
    assert fast[0]["ENVELOPE"][1] == 'a "quoted" (paren) [x] \\ NIL'
    assert fast[0]["MODSEQ"] == ["12"]
    assert fast[1]["BODYSTRUCTURE"][0][0] == "text" and fast[1]["BODYSTRUCTURE"][2] == "alternative"
    assert fast[2]["ENVELOPE"][1] == b"\r\nx\r"  # a literal holding CRs is not taken for a marker


def test_bulk_parser_falls_back_on_what_json_cannot_say() -> None:
    parts = _read(b'* 1 FETCH (UID 5 ENVELOPE (NIL "bad \\q escape" NIL NIL NIL NIL NIL NIL NIL NIL))\r\n')
    items = _wire.parse_fetch_batch([parts])
    assert items[0]["UID"] == "5" and items[0]["ENVELOPE"][1] == b"bad q escape"


# --- the chunked reader and the block parsers -----------------------------------------------------


class _Drip(io.RawIOBase):
    """A source that hands out at most ``step`` bytes per read, like a socket under TLS."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = data
        self._at = 0
        self._step = step
        self.reads = 0

    def readable(self) -> bool:
        return True

    def readinto1(self, buffer: Any) -> int:
        self.reads += 1
        n = min(len(buffer), self._step, len(self._data) - self._at)
        buffer[:n] = self._data[self._at : self._at + n]
        self._at += n
        return n


_BODY = b"From: a@b\r\n\r\nline with } and {3}\r\n)\r\n* 9 FETCH (x)\r\n"
_STREAM = (
    b"* 1 FETCH (UID 10 RFC822.SIZE 5 FLAGS (\\Seen))\r\n"
    b"* 2 FETCH (UID 11 RFC822.SIZE 7 FLAGS ())\r\n"
    b"* 3 EXISTS\r\n"
    b"* 3 FETCH (UID 12 FLAGS (\\Recent) BODY[] {%d}\r\n%s)\r\n"
    b"MK7 OK done\r\nleft over\r\n" % (len(_BODY), _BODY)
)


def _drain(reader: _wire.BulkReader) -> list[Any]:
    out: list[Any] = []
    while True:
        block = reader.fetch_block()
        if block:
            out.append(("block", block))
            continue
        parts = reader.response()
        out.append(("response", parts))
        if parts[0].startswith(b"MK7 "):
            return out


@pytest.mark.parametrize("step", [1, 7, 64, 1 << 20])
def test_bulk_reader_cuts_blocks_and_literals_at_any_read_size(step: int) -> None:
    source = _Drip(_STREAM, step)
    reader = _wire.BulkReader(source, size=64)  # a tiny buffer: it must grow and compact correctly
    got = _drain(reader)
    blocks = b"".join(v for kind, v in got if kind == "block")
    responses = [v for kind, v in got if kind == "response"]
    assert blocks.count(b"\n") + len(responses) == 5
    assert b"EXISTS" not in blocks and b"BODY[]" not in blocks  # stops before other shapes
    assert [b"* 3 EXISTS\r\n"] in responses
    fetch = next(r for r in responses if r[0].startswith(b"* 3 FETCH"))
    assert fetch[1] == _BODY and isinstance(fetch[1], _wire.Literal)  # byte for byte, never scanned
    assert fetch[2] == b")\r\n"
    assert reader.leftover() == b"left over\r\n"[: len(reader.leftover())]
    assert len(_STREAM) - source._at + len(reader.leftover()) == len(b"left over\r\n")


def test_bulk_reader_block_rows_match_the_general_parser() -> None:
    reader = _wire.BulkReader(_Drip(_STREAM, 1 << 20))
    block = reader.fetch_block()
    assert block.count(b"\n") == 2
    sizes = _wire.parse_size_block(block)
    assert sizes == [(10, 5, ("\\Seen",)), (11, 7, ())]
    general = _wire.parse_fetch_block(block)
    assert general == [
        {"UID": "10", "RFC822.SIZE": "5", "FLAGS": ["\\Seen"]},
        {"UID": "11", "RFC822.SIZE": "7", "FLAGS": []},
    ]
    assert general == _wire.parse_fetch_batch([[line + b"\n"] for line in block.split(b"\n")[:-1]])


def test_size_block_refuses_other_shapes() -> None:
    assert _wire.parse_size_block(b"* 1 FETCH (RFC822.SIZE 5 UID 10 FLAGS ())\r\n") is None
    assert _wire.parse_size_block(b'* 1 FETCH (UID 1 RFC822.SIZE 5 FLAGS ("x"))\r\n') is None


def test_fetch_block_listing_agrees_with_per_response_parse() -> None:
    lines = b"".join(_TRICKY[3:4]) + (
        b'* 4 FETCH (UID 4 FLAGS () ENVELOPE ("d" "s (x) \\\\ NIL" NIL NIL NIL NIL NIL NIL NIL "<m>"))\r\n'
        b'* 5 FETCH (UID 5 ENVELOPE (NIL "q\\"uote" NIL NIL NIL NIL NIL NIL NIL NIL))\r\n'
    )
    reader = _wire.BulkReader(_Drip(lines + b"MK7 OK\r\n", 1 << 20))
    block = reader.fetch_block()
    assert block == lines
    fast = _wire.parse_fetch_block(block)
    slow = _wire.parse_fetch_batch([[line + b"\n"] for line in block.split(b"\n")[:-1]])
    assert fast == slow
    assert fast[1]["ENVELOPE"][1] == "s (x) \\ NIL" and fast[1]["ENVELOPE"][2] is None
    assert fast[2]["ENVELOPE"][1] in ('q"uote', b'q"uote')  # escaped quote: the general path


def test_fast_json_matches_general_conversion() -> None:
    text = '(UID 1 FLAGS () X (NIL "NIL" ((a b))) BODY[] \x01) (UID 2 Y "a b")'
    fast = _wire._fetch_json_fast(text)
    assert fast == (
        '[["UID","1","FLAGS",[],"X",[null,"NIL",[["a","b"]]],"BODY[]","\\r"],["UID","2","Y","a b"]]'
    )
    assert _wire._fetch_json_fast('(X "a\\"b")') is None  # escaped quotes: the general path
    assert _wire._fetch_json_fast("(BODY[HEADER.FIELDS (A)] x)") is None  # a section with spaces
    assert _wire._fetch_json_fast('(X "unterminated)') is None


def test_endless_line_in_bulk_reader_is_refused_with_bounded_buffer() -> None:
    reader = _wire.BulkReader(_Drip(b"* 1 FETCH (UID 1 FLAGS (" + b"A" * (_wire.MAX_LINE + 10), 1 << 16))
    with pytest.raises(ProtocolError):
        reader.fetch_block() or reader.response()
    assert len(reader._buf) <= 2 * _wire.MAX_LINE + (1 << 20)


def test_bulk_reader_truncated_literal_and_huge_announcement() -> None:
    with pytest.raises(ConnectionLost):
        _wire.BulkReader(_Drip(b"* 1 FETCH (UID 3 BODY[] {50}\r\nshort", 3)).response()
    reader = _wire.BulkReader(_Drip(b"* 1 FETCH (UID 3 BODY[] {9999999999}\r\nxx", 64))
    with pytest.raises(ProtocolError):
        reader.response()  # refused before reading: nothing that big is held in memory
    assert len(reader._buf) < 1 << 21


def test_bulk_reader_spools_big_literal(tmp_path: Path) -> None:
    body = bytes(range(256)) * 40
    path = tmp_path / "big"

    def spool(size: int):  # type: ignore[no-untyped-def]
        return str(path), open(path, "wb")

    raw = b"* 1 FETCH (UID 3 BODY[] {%d}\r\n%s)\r\n" % (len(body), body)
    parts = _wire.BulkReader(_Drip(raw, 100), size=256).response(spool=spool, spool_over=1000)
    assert parts[1] == _wire.Spooled(str(path), len(body)) and path.read_bytes() == body
    assert parts[2] == b")\r\n"


def test_prefixed_gives_back_bytes_before_the_file() -> None:
    file = _wire.Prefixed(b"* 1 EXISTS\r\n* 2", io.BufferedReader(io.BytesIO(b" RECENT\r\nrest")))
    assert file.readline(1000) == b"* 1 EXISTS\r\n"
    assert file.readline(1000) == b"* 2 RECENT\r\n"
    assert file.read(4) == b"rest"
    again = _wire.Prefixed(b"abc", io.BufferedReader(io.BytesIO(b"def")))
    buf = bytearray(10)
    assert again.readinto1(memoryview(buf)) == 3 and buf[:3] == b"abc" and again.pending == 0
    assert again.read(3) == b"def"


def test_pipelined_commands_are_plain_lines_only() -> None:
    out = _wire.pipelined([b"MK1", b"MK2"], [[b"UID FETCH ", b"1:5", b" (UID)"], [b"UID FETCH 6 (UID)"]])
    assert out == b"MK1 UID FETCH 1:5 (UID)\r\nMK2 UID FETCH 6 (UID)\r\n"
    with pytest.raises(ValueError):
        _wire.pipelined([b"MK1"], [[b"X ", _wire.Literal(b"a")]])
    with pytest.raises(ValueError):
        _wire.pipelined([b"MK1"], [[b"X\r\nMK9 LOGOUT"]])


def test_deeply_nested_response_is_a_protocol_error_not_recursion() -> None:
    depth = 100_000
    line = b"* 1 FETCH (UID 1 BODYSTRUCTURE " + b"(" * depth + b"x" + b")" * depth + b")\r\n"
    with pytest.raises(ProtocolError):
        _wire.parse_fetch_block(line)
    with pytest.raises(ProtocolError):
        _wire.parse_fetch_batch([[line]])


def test_literal_block_cuts_whole_body_responses_and_stops_at_anything_else() -> None:
    bodies = [b"one )\r\n{2}\r\n", b"", b"x" * 300]
    stream = b"".join(
        b"* %d FETCH (UID %d FLAGS (\\Seen) BODY[] {%d}\r\n%s)\r\n" % (i + 1, i + 1, len(body), body)
        for i, body in enumerate(bodies)
    )
    stream += b"* 9 FETCH (UID 9 BODY[] {2000}\r\nab"  # incomplete: left for response()
    reader = _wire.BulkReader(_Drip(stream, 1 << 20))
    assert reader.fetch_block() == b""  # a literal comes first
    whole = reader.literal_block(limit=1000)
    assert [p[1] for p in whole] == bodies
    assert all(isinstance(p[1], _wire.Literal) and p[2] == b")\r\n" for p in whole)
    assert whole[0][0] == b"* 1 FETCH (UID 1 FLAGS (\\Seen) BODY[] "
    assert _wire.parse_fetch_batch(whole) == _wire.parse_fetch_batch(
        [
            _wire.BulkReader(
                io.BytesIO(
                    b"* %d FETCH (UID %d FLAGS (\\Seen) BODY[] {%d}\r\n%s)\r\n"
                    % (i + 1, i + 1, len(body), body)
                )
            ).response()
            for i, body in enumerate(bodies)
        ]
    )
    assert reader.literal_block(limit=1000) == []  # the incomplete one stays
    assert reader.leftover().startswith(b"* 9 FETCH")
    big = _wire.BulkReader(_Drip(b"* 1 FETCH (UID 1 BODY[] {5}\r\nabcde)\r\n", 1 << 20))
    big._fill()
    assert big.literal_block(limit=4) == []  # bigger than the limit: response() spools it


def test_simple_body_rows_agree_with_the_general_parser() -> None:
    responses = [
        _read(b"* 1 FETCH (UID 4 FLAGS (\\Seen $x) RFC822.SIZE 3 BODY[] {3}\r\nabc)\r\n"),
        _read(b"* 2 FETCH (UID 5 FLAGS () RFC822.SIZE 0 BODY[1.2] {0}\r\n)\r\n"),
    ]
    simple = _wire._simple_rows(responses)
    assert simple == [
        {"UID": "4", "FLAGS": ["\\Seen", "$x"], "RFC822.SIZE": "3", "BODY[]": b"abc"},
        {"UID": "5", "FLAGS": [], "RFC822.SIZE": "0", "BODY[1.2]": b""},
    ]
    texts = [[b'* 1 FETCH (UID 4 X "q" BODY[] ', _wire.Literal(b"a"), b")\r\n"]]
    assert _wire._simple_rows(texts) is None  # a quoted string: the general parser's job
    assert _wire.parse_fetch_batch(texts)[0]["X"] == "q"


# --- the pipelined exchange on a scripted connection (no sockets) --------------------------------


class _FakeIMAP:
    def __init__(self, replies: bytes) -> None:
        self.file: Any = io.BufferedReader(io.BytesIO(replies))  # type: ignore[arg-type]
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)


def _session(fake: _FakeIMAP) -> Any:
    from types import SimpleNamespace

    from mailkit.imap._session import Session

    session = Session.__new__(Session)
    session._client = SimpleNamespace(_imap=fake)  # type: ignore[assignment]
    session._socket = None
    session._caps = frozenset({"LITERAL+"})
    session.selected = SimpleNamespace(name="INBOX")  # type: ignore[assignment]
    session.broken = False
    return session


def test_pipelined_fetch_reads_every_reply_in_order_and_gives_back_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tags = iter([b"T1", b"T2", b"T3"])
    monkeypatch.setattr(_wire, "new_tag", lambda: next(tags))
    replies = (
        b"* 1 FETCH (UID 1 FLAGS (\\Seen) RFC822.SIZE 3)\r\n"
        b"* 5 EXISTS\r\n"
        b"* 2 FETCH (UID 2 FLAGS () RFC822.SIZE 4)\r\n"
        b"T1 OK done\r\n"
        b"* 3 FETCH (UID 3 FLAGS () BODY[] {3}\r\nabc)\r\n"
        b"T2 OK done\r\n"
        b"* 4 FETCH (UID 4 FLAGS () RFC822.SIZE 1)\r\n"
        b"T3 OK done\r\n"
        b"* 6 EXPUNGE\r\n"  # arrived after our last reply: imaplib's to read
    )
    fake = _FakeIMAP(replies)
    session = _session(fake)
    rows = session.uid_fetch_many([b"1:2", b"3", b"4"], b"(UID FLAGS)")
    assert fake.sent == [
        b"T1 UID FETCH 1:2 (UID FLAGS)\r\nT2 UID FETCH 3 (UID FLAGS)\r\nT3 UID FETCH 4 (UID FLAGS)\r\n"
    ]
    assert [r["UID"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[2]["BODY[]"] == b"abc" and rows[0]["FLAGS"] == ["\\Seen"]
    assert isinstance(fake.file, _wire.Prefixed)
    assert fake.file.readline(100) == b"* 6 EXPUNGE\r\n" and not session.broken


def test_pipelined_fetch_refusal_is_raised_after_all_replies(monkeypatch: pytest.MonkeyPatch) -> None:
    tags = iter([b"T1", b"T2"])
    monkeypatch.setattr(_wire, "new_tag", lambda: next(tags))
    fake = _FakeIMAP(b"T1 NO [SERVERBUG] broken\r\n* 2 FETCH (UID 2)\r\nT2 OK done\r\n")
    session = _session(fake)
    with pytest.raises(PermanentError) as exc:
        session.uid_fetch_many([b"1", b"2"], b"(UID)")
    assert exc.value.reply is not None and "SERVERBUG" in exc.value.reply.text
    assert not session.broken  # the stream is in step: the connection stays usable
    assert fake.file.read() == b""  # T2's reply was read too


def test_pipelined_fetch_garbage_closes_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_wire, "new_tag", lambda: b"T1")
    fake = _FakeIMAP(b"* 1 FETCH (UID 1 FLAGS (\\Seen)))\r\nT1 OK done\r\n")
    session = _session(fake)
    with pytest.raises(ProtocolError):
        session.uid_fetch_many([b"1"], b"(UID FLAGS)")
    assert session.broken


def test_pipelined_replies_may_interleave_and_complete_in_any_order(monkeypatch: pytest.MonkeyPatch) -> None:
    tags = iter([b"T1", b"T2"])
    monkeypatch.setattr(_wire, "new_tag", lambda: next(tags))
    replies = (
        b"* 1 FETCH (UID 1 FLAGS ())\r\n"
        b"* 3 FETCH (UID 3 FLAGS () BODY[] {1}\r\nc)\r\n"  # T2's, before T1 is done
        b"T2 OK done\r\n"
        b"* 2 FETCH (UID 2 FLAGS (\\Seen))\r\n"
        b"T1 OK done\r\n"
    )
    fake = _FakeIMAP(replies)
    rows = _session(fake).uid_fetch_many([b"1:2", b"3"], b"(UID FLAGS)")
    assert sorted(r["UID"] for r in rows) == ["1", "2", "3"]
    assert next(r for r in rows if r["UID"] == "3")["BODY[]"] == b"c"
    assert fake.file.read() == b""  # both replies read, nothing left behind


# --- the bulk-body reader (body_rows) and fetching one batch ahead --------------------------------

_HEAD = _wire.body_head("", flags=True, size=True)
_BODIES = [
    b"Subject: a\r\n\r\n)\r\n* 2 FETCH (UID 9 BODY[] {3}\r\nT1 OK\r\n",  # looks like protocol: data
    b"",
    b"x" * 37,
    "Grüße )\r\n".encode(),
]
_FLAGS = [b"\\Seen", b"", b"\\Seen $Work \\Answered", "$Ärger".encode()]


def _body_stream() -> bytes:
    out = b""
    for i, (body, flags) in enumerate(zip(_BODIES, _FLAGS, strict=True)):
        out += b"* %d FETCH (UID %d FLAGS (%s) RFC822.SIZE %d BODY[] {%d}\r\n%s)\r\n" % (
            i + 1, 100 + i, flags, len(body), len(body), body,
        )  # fmt: skip
    return out + b"* 7 FETCH (UID 107 FLAGS (\\Deleted))\r\n* 8 EXISTS\r\n" + b"T1 OK done\r\nrest"


def _general_rows(stream: bytes) -> list[tuple[int, Any, Any, Any]]:
    """What the general reader and parser make of the same bytes (the fast path must agree)."""
    source = _wire.BulkReader(io.BytesIO(stream))
    rows = []
    while True:
        parts = source.response()
        if parts[0].startswith(b"T1 "):
            return rows
        if b" FETCH (" in parts[0]:
            msg = message_from_items(_wire.parse_fetch_batch([parts])[0], FetchSpec(body=True))
            rows.append((msg.uid, msg.flags, msg.size, msg.body))


def _drain_bodies(reader: _wire.BulkReader, limit: int = 1 << 20) -> tuple[list[Any], list[Any]]:
    fast: list[Any] = []
    other: list[Any] = []
    while True:
        rows = reader.body_rows(_HEAD, limit)
        if rows:
            fast.extend(rows)
            continue
        parts = reader.response()
        if parts[0].startswith(b"T1 "):
            return fast, other
        other.append(parts)


class _Split:
    """Hands out the stream in two reads cut at ``at``, then one read per call of the rest."""

    def __init__(self, data: bytes, at: int) -> None:
        self._chunks = [data[:at], data[at:]] if at else [data]

    def readinto1(self, buffer: Any) -> int:
        while self._chunks and not self._chunks[0]:
            self._chunks.pop(0)
        if not self._chunks:
            return 0
        chunk = self._chunks[0]
        n = min(len(buffer), len(chunk))
        buffer[:n] = chunk[:n]
        self._chunks[0] = chunk[n:]
        return n


def test_body_rows_agree_with_the_general_parser_at_every_split() -> None:
    stream = _body_stream()
    expected = _general_rows(stream)
    assert [r[0] for r in expected] == [100, 101, 102, 103, 107]
    for at in range(len(stream)):
        reader = _wire.BulkReader(_Split(stream, at), size=128)  # small: grows and compacts
        fast, other = _drain_bodies(reader)
        assert fast == [r for r in expected if r[0] != 107], at  # byte for byte, flags decoded
        assert [p[0][:12] for p in other] == [b"* 7 FETCH (U", b"* 8 EXISTS\r\n"], at
        assert reader.leftover() == b"rest"[: len(reader.leftover())]


@pytest.mark.parametrize("step", [1, 2, 3, 5, 64, 1 << 20])
def test_body_rows_at_any_read_size(step: int) -> None:
    fast, _other = _drain_bodies(_wire.BulkReader(_Drip(_body_stream(), step), size=64))
    assert [row[3] for row in fast] == _BODIES
    assert fast[2][1] == ("\\Seen", "$Work", "\\Answered") and fast[1][1] == ()


def test_body_rows_without_flags_or_size_and_for_a_part() -> None:
    head = _wire.body_head("1.2", flags=False, size=False)
    reader = _wire.BulkReader(_Drip(b"* 1 FETCH (UID 4 BODY[1.2] {2}\r\nhi)\r\nT1 OK\r\n", 5))
    assert reader.body_rows(head, 100) == [(4, None, None, b"hi")]
    other = _wire.BulkReader(_Drip(b"* 1 FETCH (UID 4 BODY[1.3] {2}\r\nhi)\r\n", 5))
    assert other.body_rows(head, 100) == []  # another section: not this shape


@pytest.mark.parametrize(
    "response",
    [
        b"* 1 FETCH (UID 4 FLAGS (\\Seen) RFC822.SIZE 3 BODY[] {3}\r\nabc FLAGS (\\Seen))\r\n",  # items after
        b"* 1 FETCH (UID 4 FLAGS (NIL) RFC822.SIZE 3 BODY[] {3}\r\nabc)\r\n",  # NIL is not a flag
        b"* 1 FETCH (UID 4 FLAGS (\\Seen) RFC822.SIZE 3 BODY[] {3}\r\nabc) \r\n",  # not ")\r\n"
        b'* 1 FETCH (UID 4 FLAGS ("q") RFC822.SIZE 3 BODY[] {3}\r\nabc)\r\n',  # quoted
        b"* 1 fetch (uid 4 flags (\\Seen) rfc822.size 3 body[] {3}\r\nabc)\r\n",  # lower case
        b"* 1 FETCH (RFC822.SIZE 3 UID 4 FLAGS (\\Seen) BODY[] {3}\r\nabc)\r\n",  # another order
        b"* 1 FETCH (UID 4 FLAGS (\\Seen) RFC822.SIZE 3 BODY[] {9999999999999}\r\nabc)\r\n",  # 13 digits
    ],
)
def test_body_rows_leave_every_other_shape_to_the_general_reader(response: bytes) -> None:
    first = b"* 9 FETCH (UID 1 FLAGS () RFC822.SIZE 1 BODY[] {1}\r\nz)\r\n"
    reader = _wire.BulkReader(_Drip(first + response + b"T1 OK\r\n", 7))
    assert reader.body_rows(_HEAD, 1 << 20) == [(1, (), 1, b"z")]
    assert reader.body_rows(_HEAD, 1 << 20) == []  # stopped at the response, nothing consumed
    if b"9999999999999" in response:
        with pytest.raises(ProtocolError):
            reader.response()
        return
    parts = reader.response()
    assert b"".join(p for p in parts if isinstance(p, bytes)).startswith(response.split(b"{")[0])
    assert any(p == b"abc" for p in parts)


def test_body_rows_stop_at_a_literal_over_the_limit() -> None:
    reader = _wire.BulkReader(_Drip(b"* 1 FETCH (UID 4 FLAGS () RFC822.SIZE 5 BODY[] {5}\r\nabcde)\r\n", 3))
    assert reader.body_rows(_HEAD, 4) == []  # response() streams it to a file instead
    assert reader.response()[1] == b"abcde"


def test_body_rows_truncated_input_is_connection_lost() -> None:
    stream = b"* 1 FETCH (UID 4 FLAGS () RFC822.SIZE 5 BODY[] {5}\r\nabcde)\r\n"
    for cut in range(1, len(stream)):
        with pytest.raises(ConnectionLost):
            _wire.BulkReader(_Drip(stream[:cut], 4)).body_rows(_HEAD, 100)


def test_body_rows_endless_head_line_is_bounded() -> None:
    reader = _wire.BulkReader(_Drip(b"* 1 FETCH (UID 4 FLAGS (" + b"A" * 50_000, 1000), size=4096)
    assert reader.body_rows(_HEAD, 100) == []  # not read to its end: the line reader refuses it
    assert reader._end - reader._pos < 16_000


class _Drained:
    """imaplib's file (buffered) over a raw stream, and that stream's own ``readinto``."""

    def __init__(self, data: bytes) -> None:
        self.raw = io.BytesIO(data)
        self.file = io.BufferedReader(self.raw, buffer_size=8192)  # type: ignore[arg-type]
        self.recv_calls = 0

    def recv(self, size: int, buffer: Any) -> int:
        self.recv_calls += 1
        return self.raw.readinto(buffer[:size])


def test_reader_switches_to_the_socket_only_after_imaplib_buffer_is_empty() -> None:
    stream = b"".join(
        _reply(i, bytes([65 + i]) * 3000) for i in range(1, 40)
    ) + b"T1 OK\r\n"
    source = _Drained(b"* 1 EXISTS\r\n" + stream)
    assert source.file.readline() == b"* 1 EXISTS\r\n"  # imaplib read ahead: 8 KB sit in its buffer
    reader = _wire.BulkReader(source.file, size=70_000, recv=source.recv)
    fast, _ = _drain_bodies(reader)
    assert [row[3] for row in fast] == [bytes([65 + i]) * 3000 for i in range(1, 40)]  # nothing lost
    assert source.recv_calls > 0


def _ahead_session(monkeypatch: pytest.MonkeyPatch, replies: bytes) -> tuple[Any, _FakeIMAP]:
    tags = iter([b"T1", b"T2", b"T3", b"T4"])
    monkeypatch.setattr(_wire, "new_tag", lambda: next(tags))
    monkeypatch.setattr("mailkit.imap._session.PIPELINE_DATA", 2)  # two commands per batch
    fake = _FakeIMAP(replies)
    return _session(fake), fake


def _reply(uid: int, body: bytes) -> bytes:
    return b"* %d FETCH (UID %d FLAGS () RFC822.SIZE %d BODY[] {%d}\r\n%s)\r\n" % (
        uid, uid, len(body), len(body), body,
    )  # fmt: skip


_AHEAD = (
    _reply(1, b"one") + _reply(2, b"two") + b"T1 OK done\r\n" + _reply(3, b"three") + b"T2 OK done\r\n"
    + _reply(4, b"four") + _reply(5, b"five") + b"T3 OK done\r\n" + _reply(6, b"six") + b"T4 OK done\r\n"
    + b"* 9 EXPUNGE\r\n"
)  # fmt: skip


def test_fetch_sends_the_next_batch_before_reading_this_one(monkeypatch: pytest.MonkeyPatch) -> None:
    session, fake = _ahead_session(monkeypatch, _AHEAD)
    spec = FetchSpec(body=True)
    first = session.fetch([1, 2, 3], spec, then=[4, 5, 6])
    assert [(m.uid, m.body, m.flags, m.size) for m in first] == [
        (1, b"one", (), 3), (2, b"two", (), 3), (3, b"three", (), 5),
    ]  # fmt: skip
    general = {"UID": "1", "FLAGS": [], "RFC822.SIZE": "3", "BODY[]": b"one"}
    assert first[0] == message_from_items(general, spec)
    items = b" (UID FLAGS RFC822.SIZE BODY.PEEK[])\r\n"
    assert fake.sent == [
        b"T1 UID FETCH 1:2" + items + b"T2 UID FETCH 3" + items,
        b"T3 UID FETCH 4:5" + items + b"T4 UID FETCH 6" + items,
    ]  # the second batch went out before the first was read
    assert not isinstance(fake.file, _wire.Prefixed)  # still ours: a batch is in flight
    second = session.fetch([4, 5, 6], spec)
    assert [m.body for m in second] == [b"four", b"five", b"six"] and len(fake.sent) == 2  # nothing resent
    assert isinstance(fake.file, _wire.Prefixed) and fake.file.readline(100) == b"* 9 EXPUNGE\r\n"
    assert not session.broken


def test_any_other_command_first_reads_the_batch_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    session, fake = _ahead_session(monkeypatch, _AHEAD)
    spec = FetchSpec(body=True)
    session.fetch([1, 2, 3], spec, then=[4, 5, 6])
    assert session.client is not None  # what every imapclient command goes through
    assert isinstance(fake.file, _wire.Prefixed) and fake.file.readline(100) == b"* 9 EXPUNGE\r\n"
    assert [m.body for m in session.fetch([4, 5, 6], spec)] == [b"four", b"five", b"six"]  # kept for it
    assert len(fake.sent) == 2


def test_a_batch_in_flight_that_nobody_asks_for_is_dropped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    big = b"B" * 100
    replies = _AHEAD.replace(_reply(4, b"four"), _reply(4, big))
    session, _fake = _ahead_session(monkeypatch, replies)
    spec = FetchSpec(body=True)
    session.fetch([1, 2, 3], spec, then=[4, 5, 6], spool_dir=str(tmp_path), stream_over=50)
    assert session.client is not None  # read off now; the big body went to a file
    assert len(list(tmp_path.iterdir())) == 1
    session.drop_ahead()
    assert list(tmp_path.iterdir()) == []  # nobody will take it: its file is gone too
    assert session._ahead is None and not session.broken


def test_a_different_next_batch_drops_the_one_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    replies = _AHEAD[: _AHEAD.index(b"* 9 EXPUNGE")] + _reply(7, b"seven") + b"T5 OK done\r\n"
    tags = iter([b"T1", b"T2", b"T3", b"T4", b"T5"])
    monkeypatch.setattr(_wire, "new_tag", lambda: next(tags))
    monkeypatch.setattr("mailkit.imap._session.PIPELINE_DATA", 2)
    fake = _FakeIMAP(replies)
    session = _session(fake)
    spec = FetchSpec(body=True)
    session.fetch([1, 2, 3], spec, then=[4, 5, 6])
    assert [m.body for m in session.fetch([7], spec)] == [b"seven"]
    assert fake.sent[-1] == b"T5 UID FETCH 7 (UID FLAGS RFC822.SIZE BODY.PEEK[])\r\n"
    assert fake.file.read() == b""


def test_a_refused_batch_in_flight_is_raised_when_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    replies = _AHEAD.replace(_reply(4, b"four") + _reply(5, b"five") + b"T3 OK", b"T3 NO [UNAVAILABLE]")
    session, _fake = _ahead_session(monkeypatch, replies)
    spec = FetchSpec(body=True)
    assert len(session.fetch([1, 2, 3], spec, then=[4, 5, 6])) == 3
    with pytest.raises(TransientError):
        session.fetch([4, 5, 6], spec)
    assert not session.broken  # the stream is in step


def test_garbage_in_the_batch_in_flight_closes_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    replies = _AHEAD.replace(_reply(4, b"four"), b"* 4 FETCH (UID 4 FLAGS (\\Seen)))\r\n")
    session, _fake = _ahead_session(monkeypatch, replies)
    spec = FetchSpec(body=True)
    session.fetch([1, 2, 3], spec, then=[4, 5, 6])
    with pytest.raises(ProtocolError):
        session.fetch([4, 5, 6], spec)
    assert session.broken and session._ahead is None


def test_bulk_built_messages_are_the_same_values() -> None:
    from mailkit.imap._types import Message

    fast = Message._of_body(5, ("\\Seen",), 3, b"abc")
    slow = Message(5, ("\\Seen",), 3, body=b"abc")
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    env = [None, "s", None, None, None, None, None, None, None, "<id>"]
    full = Message._of_fields(7, None, None, None, env, b"H: v\r\n\r\n", None, "/p", None, 9)
    assert full == Message(7, headers=b"H: v\r\n\r\n", body_path="/p", raw_envelope=env, modseq=9)
    assert full.envelope is not None and full.envelope.subject == "s"  # cached_property still works
    with pytest.raises(AttributeError):
        fast.uid = 6  # type: ignore[misc]  # still frozen


def test_fetch_of_bodies_with_other_items_and_of_a_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    env = b'("d" "subj" NIL NIL NIL NIL NIL NIL NIL "<i>")'
    replies = (
        b"* 1 FETCH (UID 1 FLAGS (\\Seen) RFC822.SIZE 3 ENVELOPE %s BODY[] {3}\r\nabc)\r\n" % env
        + b"* 2 FETCH (UID 2 FLAGS () RFC822.SIZE 2 ENVELOPE %s BODY[] {2}\r\nde)\r\n" % env
        + b"T1 OK done\r\n"
        + b"* 1 FETCH (UID 1 FLAGS (\\Seen) ENVELOPE %s)\r\n" % env
        + b"* 2 FETCH (UID 2 FLAGS () ENVELOPE %s)\r\n" % env
        + b"T2 OK done\r\n"
    )
    session, fake = _ahead_session(monkeypatch, replies)
    both = session.fetch([1, 2], FetchSpec(body=True, envelope=True))
    assert [(m.uid, m.body, m.flags) for m in both] == [(1, b"abc", ("\\Seen",)), (2, b"de", ())]
    assert both[0].envelope is not None and both[0].envelope.subject == "subj"
    listing = session.fetch([1, 2], FetchSpec(envelope=True, size=False))
    assert [m.envelope.subject for m in listing if m.envelope] == ["subj", "subj"]
    assert [m.body for m in listing] == [None, None]
    assert isinstance(fake.file, _wire.Prefixed) and not session.broken


def test_pipelined_try_later_refusal_keeps_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    tags = iter([b"T1", b"T2"])
    monkeypatch.setattr(_wire, "new_tag", lambda: next(tags))
    fake = _FakeIMAP(b"T1 NO [UNAVAILABLE] busy\r\n* 2 FETCH (UID 2)\r\nT2 OK done\r\n")
    session = _session(fake)
    with pytest.raises(TransientError):
        session.uid_fetch_many([b"1", b"2"], b"(UID)")
    assert not session.broken and fake.file.read() == b""  # every reply read: still in step


def test_fetch_plan_sizes_only_the_messages_that_could_overflow_a_batch() -> None:
    from mailkit.imap.client import _fetch_plan

    sizes = {uid: 100 for uid in range(1, 21)} | {7: 5_000, 8: 9_000}

    class _Sizer:
        def __init__(self) -> None:
            self.searched: list[bytes] = []
            self.sized: list[bytes] = []

        def search(self, query: Any) -> list[int]:
            self.searched.append(b" ".join(t for t in query.tokens if isinstance(t, bytes)))
            bound = int(query.tokens[-1])
            return [uid for uid, n in sizes.items() if n > bound]

        def sizes(self, sets: list[bytes]) -> list[tuple[int, int, tuple[str, ...]]]:
            self.sized.extend(sets)
            return [(uid, sizes[uid], ()) for s in sets for uid in _wire.parse_sequence_set(s)]

    sizer = _Sizer()
    groups = _fetch_plan(sizer, list(range(1, 21)), 4, 10_000)  # type: ignore[arg-type]
    assert len(sizer.searched) == 1 and sizer.searched[0].endswith(b"LARGER 2500")
    assert sizer.sized == [b"7:8"]  # the small ones are never asked for their size
    assert [uid for group in groups for uid in group] == list(range(1, 21))
    assert all(len(group) <= 4 for group in groups)
    assert not any(7 in group and 8 in group for group in groups)  # together: over 10,000 bytes
    # every group fits, counting each small message at the bound (2,500) it is known to be under
    assert all(sum(sizes[u] if u in (7, 8) else 2_500 for u in group) <= 10_000 for group in groups)


def test_listing_shortcut_makes_the_same_messages_as_the_general_conversion() -> None:
    from mailkit.imap._session import _listing_messages

    block = (
        b'* 1 FETCH (UID 4 FLAGS (\\Seen $x) RFC822.SIZE 120 ENVELOPE ("d" "s \\"q\\"" '
        b'(("A" NIL "a" "h")) NIL NIL NIL NIL NIL NIL "<i>"))\r\n'
        b"* 2 FETCH (UID 5 FLAGS () RFC822.SIZE 7 ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL))\r\n"
    )
    values = _wire.fetch_block_values(block)
    assert values is not None
    fast = _listing_messages(values)
    spec = FetchSpec(envelope=True)
    general = [message_from_items(row, spec) for row in _wire.parse_fetch_block(block)]
    assert fast is not None and fast == general
    assert [m.raw_envelope for m in fast] == [m.raw_envelope for m in general]  # not in ==
    assert fast[0].envelope is not None and fast[0].envelope.from_[0].email == "a@h"
    other = _wire.fetch_block_values(b"* 1 FETCH (FLAGS () UID 4 RFC822.SIZE 1 ENVELOPE (NIL))\r\n")
    assert other is not None and _listing_messages(other) is None  # another order: the general path
