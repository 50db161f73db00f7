"""A small SEARCH query builder: ``Q.from_("bob") & Q.unseen() | Q.subject("Rechnung für")``.

Rule: a user's string never becomes raw command text. Plain printable ASCII is sent quoted;
anything else (non-ASCII, CR/LF, quotes) is sent as a literal with ``CHARSET UTF-8``, so a search
term can never end the command line. Raw criteria (``Q.raw``) are checked: CR, LF, NUL rejected.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

from ..config import check_line_safe
from ..errors import ConfigError
from ._wire import Literal, sequence_set

__all__ = ["Q"]

_ATOM_SAFE = re.compile(rb"^[\x21\x23-\x5b\x5d-\x7e ]*$")  # printable ASCII but '"' and '\'
_KEYWORD = re.compile(r"^\\?[A-Za-z0-9$_.\-]+$")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

Token = bytes | Literal


def imap_date(value: date) -> bytes:
    if isinstance(value, datetime):
        value = value.date()
    return b"%d-%s-%d" % (value.day, _MONTHS[value.month - 1].encode(), value.year)


def astring(value: str) -> Token:
    """A user string as a quoted string when safe, else a literal (CR/LF travel inside it)."""
    if "\x00" in value:
        raise ConfigError("search terms must not contain NUL")
    data = value.encode("utf-8")
    if _ATOM_SAFE.match(data):
        return b'"' + data + b'"'
    return Literal(data)


def check_flag(flag: str) -> str:
    if not _KEYWORD.match(flag):
        raise ConfigError(f"not a valid IMAP flag or keyword: {flag!r}")
    return flag


@dataclass(frozen=True)
class Q:
    """A search key; combine with ``&`` (and), ``|`` (or) and ``~`` (not)."""

    tokens: tuple[Token, ...]
    single: bool = True  # one search key (with its arguments): needs no parentheses

    # --- combining -------------------------------------------------------------------------
    def __and__(self, other: Q) -> Q:
        return Q(self._grouped() + other._grouped(), single=False)

    def __or__(self, other: Q) -> Q:
        return Q((b"OR", *self._grouped(), *other._grouped()))

    def __invert__(self) -> Q:
        return Q((b"NOT", *self._grouped()))

    def _grouped(self) -> tuple[Token, ...]:
        return self.tokens if self.single else (b"(", *self.tokens, b")")

    # --- keys ------------------------------------------------------------------------------
    @classmethod
    def all(cls) -> Q:
        return cls((b"ALL",))

    @classmethod
    def seen(cls) -> Q:
        return cls((b"SEEN",))

    @classmethod
    def unseen(cls) -> Q:
        return cls((b"UNSEEN",))

    @classmethod
    def flagged(cls) -> Q:
        return cls((b"FLAGGED",))

    @classmethod
    def answered(cls) -> Q:
        return cls((b"ANSWERED",))

    @classmethod
    def deleted(cls) -> Q:
        return cls((b"DELETED",))

    @classmethod
    def draft(cls) -> Q:
        return cls((b"DRAFT",))

    @classmethod
    def keyword(cls, name: str) -> Q:
        return cls((b"KEYWORD", check_flag(name).encode("ascii")))

    @classmethod
    def from_(cls, text: str) -> Q:
        return cls((b"FROM", astring(text)))

    @classmethod
    def to(cls, text: str) -> Q:
        return cls((b"TO", astring(text)))

    @classmethod
    def cc(cls, text: str) -> Q:
        return cls((b"CC", astring(text)))

    @classmethod
    def subject(cls, text: str) -> Q:
        return cls((b"SUBJECT", astring(text)))

    @classmethod
    def body(cls, text: str) -> Q:
        return cls((b"BODY", astring(text)))

    @classmethod
    def text(cls, text: str) -> Q:
        return cls((b"TEXT", astring(text)))

    @classmethod
    def header(cls, name: str, value: str) -> Q:
        if not re.match(r"^[!-9;-~]+$", name):
            raise ConfigError(f"not a valid header name: {name!r}")
        return cls((b"HEADER", name.encode("ascii"), astring(value)))

    @classmethod
    def since(cls, day: date) -> Q:
        return cls((b"SINCE", imap_date(day)))

    @classmethod
    def before(cls, day: date) -> Q:
        return cls((b"BEFORE", imap_date(day)))

    @classmethod
    def on(cls, day: date) -> Q:
        return cls((b"ON", imap_date(day)))

    @classmethod
    def larger(cls, size: int) -> Q:
        return cls((b"LARGER", b"%d" % int(size)))

    @classmethod
    def smaller(cls, size: int) -> Q:
        return cls((b"SMALLER", b"%d" % int(size)))

    @classmethod
    def uid(cls, uids: Iterable[int]) -> Q:
        return cls((b"UID", sequence_set(uids)))

    @classmethod
    def raw(cls, criteria: str) -> Q:
        """Criteria written in IMAP syntax (e.g. ``'OR FROM a FROM b'``); ASCII, one line."""
        check_line_safe(criteria, "search criteria")
        if not criteria.strip():
            raise ConfigError("empty search criteria")
        try:
            data = criteria.strip().encode("ascii")
        except UnicodeEncodeError:
            raise ConfigError(
                "raw search criteria must be ASCII; use Q.subject(...) etc. for other text"
            ) from None
        return cls((data,), single=b" " not in data)

    # --- output ----------------------------------------------------------------------------
    def segments(self) -> list[bytes]:
        """Command segments after ``UID SEARCH``: CHARSET when needed, tokens space-separated."""
        out: list[bytes] = []
        if any(isinstance(t, Literal) for t in self.tokens):
            out.append(b"CHARSET UTF-8 ")
        prev: Token | None = None
        for token in self.tokens:
            if prev is not None and prev != b"(" and token != b")":
                out.append(b" ")
            out.append(token)
            prev = token
        return out


def parse_query(text: str) -> Q:
    """The CLI's QUERY: IMAP search syntax when it starts with a key, else a TEXT search."""
    words = text.split()
    if words and words[0].upper() in _KEYS:
        return Q.raw(text)
    return Q.text(text)


_KEYS = {
    "ALL", "ANSWERED", "BCC", "BEFORE", "BODY", "CC", "DELETED", "DRAFT", "FLAGGED", "FROM",
    "HEADER", "KEYWORD", "LARGER", "NEW", "NOT", "OLD", "ON", "OR", "RECENT", "SEEN",
    "SENTBEFORE", "SENTON", "SENTSINCE", "SINCE", "SMALLER", "SUBJECT", "TEXT", "TO", "UID",
    "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNKEYWORD", "UNSEEN", "MODSEQ", "(",
}  # fmt: skip
