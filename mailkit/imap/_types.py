"""Values the IMAP API returns: folders, mailbox state, fetched messages, envelopes, sync changes.

Rule: plain frozen values, no I/O; names decoded from modified UTF-7, flags as ``str``.
"""

from __future__ import annotations

import email.header
import enum
import functools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..errors import ProtocolError

__all__ = [
    "Address",
    "Change",
    "ChangeKind",
    "Envelope",
    "Folder",
    "FolderStatus",
    "Mailbox",
    "Message",
    "SpecialUse",
]


class SpecialUse(enum.StrEnum):
    """RFC 6154 roles: find the Sent folder whatever it is called."""

    ALL = "\\All"
    ARCHIVE = "\\Archive"
    DRAFTS = "\\Drafts"
    FLAGGED = "\\Flagged"
    JUNK = "\\Junk"
    SENT = "\\Sent"
    TRASH = "\\Trash"


# Names a server without SPECIAL-USE commonly uses, checked case-insensitively as a fallback.
FALLBACK_NAMES: dict[SpecialUse, tuple[str, ...]] = {
    SpecialUse.SENT: ("Sent", "Sent Items", "Sent Messages", "Sent Mail"),
    SpecialUse.TRASH: ("Trash", "Deleted Items", "Deleted Messages", "Bin"),
    SpecialUse.JUNK: ("Junk", "Spam", "Junk E-mail", "Bulk Mail"),
    SpecialUse.DRAFTS: ("Drafts", "Draft"),
    SpecialUse.ARCHIVE: ("Archive", "Archives"),
}


@dataclass(frozen=True)
class Folder:
    name: str
    delimiter: str | None
    flags: tuple[str, ...]

    @property
    def special_use(self) -> SpecialUse | None:
        for flag in self.flags:
            for role in SpecialUse:
                if flag.lower() == role.value.lower():
                    return role
        return None

    @property
    def selectable(self) -> bool:
        return not any(f.lower() in ("\\noselect", "\\nonexistent") for f in self.flags)


@dataclass(frozen=True)
class FolderStatus:
    name: str
    messages: int | None = None
    recent: int | None = None
    uidnext: int | None = None
    uidvalidity: int | None = None
    unseen: int | None = None
    highestmodseq: int | None = None


@dataclass(frozen=True)
class Mailbox:
    """What SELECT/EXAMINE told us about the selected mailbox."""

    name: str
    exists: int
    uidvalidity: int
    uidnext: int | None
    highestmodseq: int | None
    flags: tuple[str, ...]
    permanent_flags: tuple[str, ...]
    read_only: bool


@dataclass(frozen=True)
class Address:
    name: str | None
    mailbox: str | None
    host: str | None

    @property
    def email(self) -> str:
        if self.host is None:
            return self.mailbox or ""
        return f"{self.mailbox}@{self.host}"

    def __str__(self) -> str:
        name = _decode_words(self.name) if self.name else ""
        return f"{name} <{self.email}>" if name else self.email


def _decode_words(text: str) -> str:
    if "=?" not in text:
        return text
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except (ValueError, LookupError, UnicodeError):
        return text


@dataclass(frozen=True)
class Envelope:
    date: str | None
    raw_subject: str | None
    from_: tuple[Address, ...]
    sender: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    in_reply_to: str | None
    message_id: str | None

    @property
    def subject(self) -> str | None:
        """The subject with RFC 2047 encoded words decoded."""
        return None if self.raw_subject is None else _decode_words(self.raw_subject)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _addresses(value: Any) -> tuple[Address, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(
        Address(_text(item[0]), _text(item[2]), _text(item[3]))
        for item in value
        if isinstance(item, list) and len(item) == 4
    )


def parse_envelope(value: Any) -> Envelope:
    """An ENVELOPE as parsed from the wire (a 10-item list) -> Envelope."""
    if not isinstance(value, list) or len(value) != 10:
        raise ProtocolError("malformed ENVELOPE in FETCH response")
    return Envelope(
        date=_text(value[0]),
        raw_subject=_text(value[1]),
        from_=_addresses(value[2]),
        sender=_addresses(value[3]),
        reply_to=_addresses(value[4]),
        to=_addresses(value[5]),
        cc=_addresses(value[6]),
        bcc=_addresses(value[7]),
        in_reply_to=_text(value[8]),
        message_id=_text(value[9]),
    )


@dataclass(frozen=True)
class Message:
    """One fetched message; fields not asked for are None.

    ``body`` holds the whole message (or the requested part) byte for byte; when it was too big to
    keep in memory it was streamed to ``body_path`` instead. ``envelope`` is parsed on first use.
    """

    uid: int
    flags: tuple[str, ...] | None = None
    size: int | None = None
    internal_date: datetime | None = None
    raw_envelope: Any = field(default=None, repr=False, compare=False)
    headers: bytes | None = None
    body: bytes | None = None
    body_path: str | None = None
    bodystructure: Any = None
    modseq: int | None = None

    @functools.cached_property
    def envelope(self) -> Envelope | None:
        """The ENVELOPE, built on first access (listings of thousands stay cheap)."""
        return None if self.raw_envelope is None else parse_envelope(self.raw_envelope)

    @classmethod
    def _of_body(cls, uid: int, flags: tuple[str, ...] | None, size: int | None, body: bytes, /) -> Message:
        """The same value as ``Message(uid, flags, size, body=body)``, built for bulk fetches:
        the fields are set in one dict update instead of one frozen ``__setattr__`` each."""
        message = object.__new__(cls)
        message.__dict__.update(
            uid=uid, flags=flags, size=size, internal_date=None, raw_envelope=None, headers=None,
            body=body, body_path=None, bodystructure=None, modseq=None,
        )  # fmt: skip
        return message

    @classmethod
    def _of_fields(
        cls,
        uid: int,
        flags: tuple[str, ...] | None,
        size: int | None,
        internal_date: datetime | None,
        raw_envelope: Any,
        headers: bytes | None,
        body: bytes | None,
        body_path: str | None,
        bodystructure: Any,
        modseq: int | None,
        /,
    ) -> Message:
        """``Message(...)`` with every field, positional, built as ``_of_body`` is."""
        message = object.__new__(cls)
        message.__dict__.update(
            uid=uid, flags=flags, size=size, internal_date=internal_date, raw_envelope=raw_envelope,
            headers=headers, body=body, body_path=body_path, bodystructure=bodystructure, modseq=modseq,
        )  # fmt: skip
        return message


class ChangeKind(enum.StrEnum):
    NEW = "new"
    FLAGS = "flags"
    VANISHED = "vanished"
    RESET = "reset"  # UIDVALIDITY changed: the old UIDs mean nothing any more


@dataclass(frozen=True)
class Change:
    """One change seen by ``sync``/``watch``.

    ``path`` is the Maildir file when mirroring (``into=``); ``raw`` the message bytes when
    ``bodies=True`` and not mirroring.
    """

    kind: ChangeKind
    mailbox: str
    uid: int | None = None
    flags: tuple[str, ...] = ()
    size: int | None = None
    uidvalidity: int | None = None
    path: str | None = None
    raw: bytes | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "mailbox": self.mailbox,
            "uid": self.uid,
            "flags": list(self.flags),
            "size": self.size,
            "uidvalidity": self.uidvalidity,
            "path": self.path,
        }
