"""The SEARCH query builder: what reaches the wire."""

from __future__ import annotations

from datetime import date

import pytest

from mailkit.errors import ConfigError
from mailkit.imap import Q
from mailkit.imap._wire import Literal
from mailkit.imap.query import parse_query


def _wire(q: Q) -> bytes:
    return b"".join(b"{%d}" % len(s) + s if isinstance(s, Literal) else s for s in q.segments())


def test_simple_and_combined() -> None:
    assert _wire(Q.unseen()) == b"UNSEEN"
    assert _wire(Q.from_("bob") & Q.unseen()) == b'FROM "bob" UNSEEN'
    assert _wire(Q.from_("a") | Q.from_("b")) == b'OR FROM "a" FROM "b"'
    assert _wire(~Q.seen()) == b"NOT SEEN"
    assert _wire(~(Q.seen() & Q.flagged())) == b"NOT (SEEN FLAGGED)"
    assert _wire(Q.since(date(2024, 3, 5)) & Q.larger(10)) == b"SINCE 5-Mar-2024 LARGER 10"
    assert _wire(Q.uid([1, 2, 3, 9])) == b"UID 1:3,9"


def test_non_ascii_goes_as_utf8_literal_with_charset() -> None:
    segments = Q.subject("Grüße").segments()
    assert segments[0] == b"CHARSET UTF-8 "
    literal = [s for s in segments if isinstance(s, Literal)]
    assert literal == ["Grüße".encode()]


@pytest.mark.parametrize("term", ["a\r\nA1 DELETE INBOX", "x\ny", 'say "hi"', "back\\slash"])
def test_dangerous_terms_travel_as_literals(term: str) -> None:
    segments = Q.text(term).segments()
    assert term.encode() in [s for s in segments if isinstance(s, Literal)]
    assert not any(b"\r" in s or b"\n" in s for s in segments if not isinstance(s, Literal))


def test_nul_and_raw_crlf_rejected() -> None:
    with pytest.raises(ConfigError):
        Q.text("a\x00b")
    with pytest.raises(ConfigError):
        Q.raw("ALL\r\nA2 LOGOUT")
    with pytest.raises(ConfigError):
        Q.raw("SUBJECT ü")
    with pytest.raises(ConfigError):
        Q.keyword("bad keyword")
    with pytest.raises(ConfigError):
        Q.header("X:Y", "v")


def test_raw_is_grouped_when_negated() -> None:
    assert _wire(~Q.raw("FROM a SUBJECT b")) == b"NOT (FROM a SUBJECT b)"


def test_cli_query_parsing() -> None:
    assert _wire(parse_query("UNSEEN FROM bob")) == b"UNSEEN FROM bob"
    assert _wire(parse_query("invoice march")) == b'TEXT "invoice march"'
