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
    return _wire.read_response(io.BytesIO(data), **kw)


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
    stream = io.BytesIO(b"".join(_TRICKY))
    return [_wire.read_response(stream) for _ in range(3)]


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
