"""The sans-I/O POP3 core from byte transcripts: well-formed, fragmented, pipelined and malformed."""

from __future__ import annotations

import base64

import pytest

from mailkit.errors import ConfigError, ConnectionLost, ProtocolError
from mailkit.pop3._protocol import (
    NEED_DATA,
    BodyChunk,
    Command,
    Continuation,
    Limits,
    POP3Core,
    Response,
    Unstuffer,
    apop_digest,
    parse_capa,
    parse_scan_listing,
    parse_stat,
    parse_uidl_listing,
    sasl_login,
    unstuff,
)

GREETING = b"+OK POP3 ready <1896.697170952@dbc.mtview.ca.us>\r\n"


def events(core: POP3Core) -> list[object]:
    out: list[object] = []
    while True:
        event = core.next_event()
        if event is NEED_DATA:
            return out
        out.append(event)


def feed(core: POP3Core, data: bytes, step: int | None = None) -> list[object]:
    """Feed ``data`` in pieces of ``step`` bytes (all at once if None), collecting events."""
    out: list[object] = []
    if step is None:
        core.receive_data(data)
        return events(core)
    for i in range(0, len(data), step):
        core.receive_data(data[i : i + step])
        out.extend(events(core))
    return out


def greeted(limits: Limits | None = None) -> POP3Core:
    core = POP3Core(limits)
    [greeting] = feed(core, GREETING)
    assert isinstance(greeting, Response) and greeting.ok and greeting.command is None
    return core


def test_greeting_and_single_line_replies() -> None:
    core = greeted()
    assert core.send(Command("STAT")) == b"STAT\r\n"
    [stat] = feed(core, b"+OK 2 320\r\n")
    assert isinstance(stat, Response) and stat.ok and stat.body is None
    assert parse_stat(stat) == (2, 320)
    core.send(Command("DELE", ("9",)))
    [err] = feed(core, b"-ERR no such message\r\n")
    assert isinstance(err, Response) and not err.ok and err.text == "no such message"
    assert err.reply.code == "-ERR" and err.reply.protocol == "pop3"


RETR_WIRE = b"+OK 120 octets\r\nSubject: hi\r\n\r\n..leading dot\r\n...two dots\r\nend\r\n.\r\n"
RETR_BODY = b"Subject: hi\r\n\r\n.leading dot\r\n..two dots\r\nend\r\n"


@pytest.mark.parametrize("step", [None, 1, 2, 3, 5, 7])
def test_multiline_body_is_unstuffed_whatever_the_fragmentation(step: int | None) -> None:
    core = greeted()
    core.send(Command("RETR", ("1",)))
    [retr] = feed(core, RETR_WIRE, step)
    assert isinstance(retr, Response) and retr.body == RETR_BODY and retr.text == "120 octets"
    assert core.pending == 0 and core.buffered == 0


def test_pipelined_responses_in_one_chunk_match_their_commands_in_order() -> None:
    core = greeted()
    commands = [Command("UIDL"), Command("LIST"), Command("RETR", ("1",)), Command("DELE", ("1",))]
    for c in commands:
        core.send(c)
    wire = (
        b"+OK\r\n1 abc\r\n2 def\r\n.\r\n"
        b"+OK 2 messages\r\n1 100\r\n2 200\r\n.\r\n" + RETR_WIRE + b"+OK deleted\r\n"
    )
    got = feed(core, wire)
    assert [r.command for r in got] == commands  # type: ignore[attr-defined]
    uidl, listing, retr, dele = got
    assert parse_uidl_listing(uidl) == {1: "abc", 2: "def"}  # type: ignore[arg-type]
    assert parse_scan_listing(listing) == {1: 100, 2: 200}  # type: ignore[arg-type]
    assert retr.body == RETR_BODY  # type: ignore[attr-defined]
    assert dele.ok  # type: ignore[attr-defined]


@pytest.mark.parametrize("split", range(1, 12))
def test_terminator_split_at_every_offset(split: int) -> None:
    wire = b"+OK\r\nA\r\n.\r\n+OK next\r\n"
    core = greeted()
    core.send(Command("RETR", ("1",)))
    core.send(Command("NOOP"))
    got = feed(core, wire[:split]) + feed(core, wire[split:])
    assert [(r.body, r.text) for r in got] == [(b"A\r\n", ""), (None, "next")]  # type: ignore[attr-defined]


def test_empty_body_and_error_on_a_multiline_command() -> None:
    core = greeted()
    core.send(Command("UIDL"))
    core.send(Command("RETR", ("5",)))
    core.send(Command("TOP", ("1", "0")))
    uidl, retr, top = feed(core, b"+OK\r\n.\r\n-ERR no such message\r\n+OK\r\nSubject: x\r\n\r\n.\r\n")
    assert uidl.body == b"" and uidl.lines() == []  # type: ignore[attr-defined]
    assert not retr.ok and retr.body is None  # type: ignore[attr-defined]
    assert top.body == b"Subject: x\r\n\r\n"  # type: ignore[attr-defined]


def test_a_lone_dot_body_line_and_a_first_line_dot() -> None:
    core = greeted()
    core.send(Command("RETR", ("1",)))
    [retr] = feed(core, b"+OK\r\n..\r\n.x\r\n..\r\n.\r\n")
    assert retr.body == b".\r\nx\r\n.\r\n"  # type: ignore[attr-defined]


def test_lf_only_server_is_understood() -> None:
    core = POP3Core()
    feed(core, b"+OK hi\n")
    core.send(Command("RETR", ("1",)))
    [retr] = feed(core, b"+OK\nline\n..dot\n.\n")
    assert retr.body == b"line\n.dot\n"  # type: ignore[attr-defined]


def test_long_lines_and_big_bodies_arrive_whole() -> None:
    long_line = b"x" * 200_000 + b"\r\n"
    big = (b"y" * 998 + b"\r\n") * 3000 + b".stuffed\r\n" + long_line
    stuffed = big.replace(b"\r\n.", b"\r\n..")
    core = greeted()
    core.send(Command("RETR", ("1",)))
    [retr] = feed(core, b"+OK\r\n" + stuffed + b".\r\n", 65536)
    assert retr.body == big  # type: ignore[attr-defined]


def test_unstuff_removes_exactly_one_leading_dot_per_line() -> None:
    assert unstuff(b"..a\r\n...b\r\n.c\r\nd.\r\n") == b".a\r\n..b\r\nc\r\nd.\r\n"
    assert unstuff(b"no dots\r\n") == b"no dots\r\n"


# -- limits and malformed input -------------------------------------------------------------------


def test_status_line_over_max_line_is_refused_even_without_a_line_end() -> None:
    core = POP3Core(Limits(max_line=100))
    core.receive_data(b"+OK " + b"A" * 200)
    with pytest.raises(ProtocolError, match="longer than 100"):
        core.next_event()


def test_message_over_max_message_is_refused_while_it_streams() -> None:
    core = greeted(Limits(max_message=1000))
    core.send(Command("RETR", ("1",)))
    core.receive_data(b"+OK\r\n" + b"z" * 900)
    assert core.next_event() is NEED_DATA
    core.receive_data(b"z" * 200)
    with pytest.raises(ProtocolError, match="larger than 1000"):
        core.next_event()


def test_listing_over_max_response_is_refused() -> None:
    core = greeted(Limits(max_response=100, max_message=10_000))
    core.send(Command("UIDL"))
    core.receive_data(b"+OK\r\n" + b"1 abc\r\n" * 40)
    with pytest.raises(ProtocolError, match="larger than 100"):
        core.next_event()


@pytest.mark.parametrize(
    "garbage", [b"HELLO there\r\n", b"OK\r\n", b"\x16\x03\x01\x00\r\n", b"+ challenge\r\n"]
)
def test_garbage_status_line_raises_protocol_error_carrying_it(garbage: bytes) -> None:
    core = greeted()
    core.send(Command("STAT"))
    core.receive_data(garbage)
    with pytest.raises(ProtocolError) as info:
        core.next_event()
    assert info.value.reply is not None
    assert info.value.reply.text == garbage.rstrip(b"\r\n").decode("utf-8", "replace")


def test_unsolicited_data_is_a_protocol_error() -> None:
    core = greeted()
    core.receive_data(b"+OK surprise\r\n")
    with pytest.raises(ProtocolError, match="nobody asked for"):
        core.next_event()


def test_eof_before_the_greeting_and_in_the_middle_of_a_body() -> None:
    core = POP3Core()
    core.receive_eof()
    with pytest.raises(ConnectionLost, match="greeting"):
        core.next_event()
    core = greeted()
    core.send(Command("RETR", ("1",)))
    core.receive_data(b"+OK\r\nhalf a mess")
    assert core.next_event() is NEED_DATA
    assert core.in_body
    core.receive_eof()
    with pytest.raises(ConnectionLost, match="RETR 1"):
        core.next_event()
    with pytest.raises(ConnectionLost):
        core.send(Command("QUIT"))


def test_malformed_listings() -> None:
    bad_uidl = Response(Command("UIDL"), True, "", b"1 \x01bad\r\n")
    with pytest.raises(ProtocolError, match="UIDL"):
        parse_uidl_listing(bad_uidl)
    with pytest.raises(ProtocolError, match="LIST"):
        parse_scan_listing(Response(Command("LIST"), True, "", b"one 100\r\n"))
    with pytest.raises(ProtocolError, match="STAT"):
        parse_stat(Response(Command("STAT"), True, "lots"))


def test_capa_parsing() -> None:
    capa = Response(Command("CAPA"), True, "", b"TOP\r\nUIDL\r\nSASL PLAIN LOGIN\r\npipelining\r\n")
    caps = parse_capa(capa)
    assert caps.pipelining and "UIDL" in caps and "uidl" in caps and "STLS" not in caps
    assert caps.sasl == ("PLAIN", "LOGIN")


# -- SASL -----------------------------------------------------------------------------------------


def test_sasl_continuations_hand_over_to_the_next_line() -> None:
    core = greeted()
    core.send(Command("AUTH", ("LOGIN",)))
    [challenge] = feed(core, b"+ VXNlcm5hbWU6\r\n")
    assert isinstance(challenge, Continuation) and challenge.challenge == b"Username:"
    core.send(Command.continuation(sasl_login("u", "p", challenge.challenge)))
    [challenge2] = feed(core, b"+ UGFzc3dvcmQ6\r\n")
    assert isinstance(challenge2, Continuation)
    core.send(Command.continuation(sasl_login("u", "p", challenge2.challenge)))
    core.send(Command("STAT"))
    ok, stat = feed(core, b"+OK logged in\r\n+OK 0 0\r\n")
    assert ok.ok and ok.command.raw is not None  # type: ignore[attr-defined]
    assert stat.command == Command("STAT")  # type: ignore[attr-defined]


def test_invalid_sasl_challenge_is_a_protocol_error() -> None:
    core = greeted()
    core.send(Command("AUTH", ("PLAIN",)))
    core.receive_data(b"+ not*base64!\r\n")
    with pytest.raises(ProtocolError, match="SASL"):
        core.next_event()


def test_sasl_login_answers_the_prompt_it_is_given() -> None:
    # (the other mechanisms' payloads are shared by all protocols: tests/unit/test_sasl.py)
    assert base64.b64decode(sasl_login("u", "pw", b"Username:")) == b"u"
    assert base64.b64decode(sasl_login("u", "pw", b"Password:")) == b"pw"


def test_apop_digest_matches_rfc_1939_example() -> None:
    assert apop_digest(GREETING.decode()[4:], "tanstaaf") == "c4c9334bac560ecc979e58001b3e22fb"
    assert apop_digest("POP3 ready", "x") is None


# -- commands -------------------------------------------------------------------------------------


@pytest.mark.parametrize("arg", ["a\r\nDELE 1", "a\nb", "nul\x00", "two words", ""])
def test_command_arguments_cannot_smuggle_lines(arg: str) -> None:
    with pytest.raises(ConfigError):
        Command("USER", (arg,))


def test_secret_commands_do_not_show_their_arguments() -> None:
    with pytest.raises(ConfigError) as info:
        Command("PASS", ("sec\r\nret",))
    assert "sec" not in str(info.value)
    assert "hunter2" not in str(Command("PASS", ("hunter2",)))
    assert "hunter2" not in repr(Command.continuation("hunter2"))
    assert "abc" not in str(Command("AUTH", ("PLAIN", "abc")))
    assert Command("LIST").multiline and not Command("LIST", ("1",)).multiline
    assert Command("TOP", ("1", "0")).multiline and not Command("DELE", ("1",)).multiline


def test_limits_are_validated() -> None:
    with pytest.raises(ConfigError):
        Limits(max_line=0)
    with pytest.raises(ConfigError):
        Limits(max_message=True)  # type: ignore[arg-type]


@pytest.mark.parametrize("chunk", [8_192, 9_001, 37_000, 65_536, 100_003, 262_144])
@pytest.mark.parametrize("ending", [b"\r\n", b"x\r\n", b"xy\r\n", b"xyz\r\n"])
def test_big_bodies_in_big_chunks_keep_every_byte_and_the_next_reply(chunk: int, ending: bytes) -> None:
    # Big chunks in the middle of a big body are scanned in place: the terminator and stuffed
    # lines may fall on any chunk boundary, and the next pipelined reply may share the chunk.
    lines = [b"%06d ." % i + b"." * (i % 3) + b"q" * (i % 97) + b"\r\n" for i in range(9000)]
    lines[4000] = b".starts with a dot\r\n"
    lines[8999] = b"." + ending
    body = b"".join(lines)
    stuffed = b"".join(b"." + line if line.startswith(b".") else line for line in lines)
    first = b"+OK\r\n" + stuffed + b".\r\n"
    wire = first + b"+OK\r\n" + stuffed + b".\r\n+OK 1 2\r\n"
    end = len(first) - 5  # where the first body's "\r\n.\r\n" starts
    for shift in range(7):
        start = (end + shift) % chunk  # a chunk boundary falls `shift` bytes into the terminator
        core = greeted()
        for c in (Command("RETR", ("1",)), Command("RETR", ("2",)), Command("STAT")):
            core.send(c)
        got = feed(core, wire[:start]) + feed(core, wire[start:], chunk)
        assert [(r.body, r.text) for r in got] == [(body, ""), (body, ""), (None, "1 2")]  # type: ignore[attr-defined]
        assert core.buffered == 0 and core.pending == 0


# -- streamed bodies -------------------------------------------------------------------------------


def stuff(body: bytes) -> bytes:
    """What a server sends for ``body`` (CRLF lines): every line starting with '.' gets another."""
    return b"\r\n".join(b"." + line if line.startswith(b".") else line for line in body.split(b"\r\n"))


TRICKY_BODIES = [
    b"",
    b".\r\n",
    b"..\r\n",
    b".x\r\n",
    b"\r\n",
    b"a\r\n.\r\nb\r\n",  # a body line that is a lone dot (stuffed to '..')
    b"a\r\n..\r\n...\r\n.b\r\n",
    b"x\r\n.\r\n.\r\n",
    b".\r\n.\r\n",
    b"no dots at all\r\nsecond\r\n",
    b"a dot then CR.\r\n.\r.\r\n",  # '.\r' not followed by LF is a stuffed dot, not the end
    b"\r\n.\r\n\r\n",
]


@pytest.mark.parametrize("body", TRICKY_BODIES)
def test_unstuffer_gives_the_body_and_the_rest_for_every_pair_of_split_positions(body: bytes) -> None:
    wire = stuff(body) + b".\r\n+OK next\r\n"
    assert unstuff(stuff(body)) == body
    for i in range(len(wire) + 1):
        for j in range(i, len(wire) + 1):
            unstuffer = Unstuffer()
            out: list[bytes] = []
            rest: bytes | None = None
            for piece in (wire[:i], wire[i:j], wire[j:]):
                if rest is not None:
                    rest += piece
                elif piece:
                    chunk, rest = unstuffer.feed(piece)
                    out.append(chunk)
            assert b"".join(out) == body, (i, j)
            assert rest == b"+OK next\r\n", (i, j)
            assert unstuffer.done and unstuffer.size == len(body)


def test_unstuffer_byte_by_byte_and_lf_only_terminator() -> None:
    body = b"..a\n.b\nc\n"
    wire = b"...a\n..b\nc\n.\nREST"
    unstuffer = Unstuffer()
    out, rest = [], None
    for k in range(len(wire)):
        chunk, rest = unstuffer.feed(wire[k : k + 1])
        out.append(chunk)
        if rest is not None:
            rest += wire[k + 1 :]
            break
    assert b"".join(out) == body and rest == b"REST"
    with pytest.raises(ProtocolError):
        unstuffer.feed(b"more")  # nothing belongs to a body after its end


def test_unstuffer_holds_back_no_more_than_a_possible_terminator() -> None:
    unstuffer = Unstuffer()
    assert unstuffer.feed(b"line one\r\nline two\r\n") == (b"line one\r\nline two\r", None)
    assert unstuffer.feed(b".") == (b"", None)  # "\n." could start the terminator
    assert unstuffer.feed(b".x\r\n") == (b"\n.x\r", None)  # it was a stuffed dot
    assert unstuffer.feed(b".\r\n") == (b"\n", b"")


@pytest.mark.parametrize("step", [1, 2, 3, 5, 64, 10_000])
def test_a_streamed_retr_gives_chunks_then_a_response_and_the_next_reply(step: int) -> None:
    body = b"Subject: s\r\n\r\n" + b"".join(TRICKY_BODIES) + b"Z" * 30_000 + b"\r\n..\r\n"
    core = greeted()
    core.send(Command("RETR", ("1",), stream=True))
    core.send(Command("RETR", ("2",), stream=True))
    core.send(Command("DELE", ("1",)))
    wire = b"+OK big\r\n" + stuff(body) + b".\r\n-ERR no such message\r\n+OK marked\r\n"
    got = feed(core, wire, step)
    chunks = [e for e in got if isinstance(e, BodyChunk)]
    responses = [e for e in got if isinstance(e, Response)]
    assert b"".join(c.data for c in chunks) == body
    assert all(c.command == Command("RETR", ("1",)) and c.data for c in chunks)
    assert [(r.ok, r.text, r.body) for r in responses] == [
        (True, "big", None),
        (False, "no such message", None),
        (True, "marked", None),
    ]
    assert got.index(responses[0]) == len(chunks)  # every chunk before its response
    assert core.pending == 0


def test_a_streamed_body_over_max_message_is_refused_and_eof_inside_it_is_connection_lost() -> None:
    core = greeted(Limits(max_message=1000))
    core.send(Command("RETR", ("1",), stream=True))
    with pytest.raises(ProtocolError, match="larger than 1000"):
        feed(core, b"+OK\r\n" + b"x" * 600 + b"\r\n" + b"y" * 600, 100)
    core = greeted()
    core.send(Command("RETR", ("1",), stream=True))
    assert [type(e) for e in feed(core, b"+OK\r\npart\r\n")] == [BodyChunk]
    core.receive_eof()
    with pytest.raises(ConnectionLost):
        events(core)


def test_listings_in_the_usual_form_and_in_odd_spacing_parse_the_same() -> None:
    usual = b"".join(b"%d uid-%d\r\n" % (n, n) for n in range(1, 500))
    odd = b"".join(b"%d\t uid-%d  \r\n" % (n, n) for n in range(1, 500))
    expected = {n: f"uid-{n}" for n in range(1, 500)}
    assert parse_uidl_listing(Response(Command("UIDL"), True, "", usual)) == expected
    assert parse_uidl_listing(Response(Command("UIDL"), True, "", odd)) == expected
    sizes = b"1 100\r\n2 200\n3  300 extra\r\n"
    assert parse_scan_listing(Response(Command("LIST"), True, "", sizes)) == {1: 100, 2: 200, 3: 300}
    # Words that line up in pairs over the whole body but not per line are still refused.
    with pytest.raises(ProtocolError, match="malformed LIST line"):
        parse_scan_listing(Response(Command("LIST"), True, "", b"1 2 3\r\n4\r\n"))
    with pytest.raises(ProtocolError, match="malformed UIDL line"):
        parse_uidl_listing(Response(Command("UIDL"), True, "", b"1 " + b"u" * 71 + b"\r\n"))


def test_a_big_body_leaves_the_buffer_at_once_whatever_the_piece_sizes() -> None:
    # After the first 256 KB the body grows as parts: a small piece must not send the following
    # big pieces through the buffer again (they are scanned in place); the body stays exact.
    core = POP3Core()
    feed(core, GREETING)
    core.send(Command("RETR", ("1",)))
    lines = [b"line %06d of a long message\r\n" % i for i in range(20000)]
    lines[9000] = b"..a stuffed line\r\n"
    wire = b"+OK big\r\n" + b"".join(lines) + b".\r\n"
    pieces = [wire[:300_000], wire[300_000:300_100], wire[300_100:340_000], wire[340_000:]]
    got: list[object] = []
    for piece in pieces[:-1]:
        core.receive_data(piece)
        got += events(core)
        assert core.buffered <= 3, "the body in progress stays out of the buffer"
    core.receive_data(pieces[-1])
    got += events(core)
    [response] = got
    assert isinstance(response, Response)
    lines[9000] = b".a stuffed line\r\n"
    assert response.body == b"".join(lines)
