"""Compose messages over ``email.message.EmailMessage`` and prepare them for the wire.

Rule: what leaves ``prepare`` is final: CRLF line endings only, no line over 998 octets, no Bcc
header, a Message-ID and Date set once (retries resend the very same bytes), every address
validated, and no CR/LF/NUL in anything that reaches a header or an SMTP command.
"""

from __future__ import annotations

import email.policy
import email.utils
import mimetypes
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path
from typing import BinaryIO, Union

from email_validator import EmailNotValidError, validate_email

from .config import check_line_safe
from .errors import ConfigError

__all__ = [
    "AddressLike",
    "AddressPolicy",
    "Attachment",
    "Outgoing",
    "check_address",
    "compose",
    "parse_address",
    "prepare",
]

AddressLike = Union[str, Address, tuple[str, str]]  # noqa: UP007 - a runtime alias
AttachmentLike = Union[str, "os.PathLike[str]", "Attachment", tuple[str, "bytes | BinaryIO"]]

MAX_LINE = 998  # octets, without the CRLF (RFC 5322 section 2.1.1)

# Non-ASCII text bodies get quoted-printable or base64 (never raw 8bit), so that the message
# needs no 8BITMIME; headers are folded at 78 and encoded per RFC 2047; CRLF line endings.
_POLICY = email.policy.SMTP.clone(cte_type="7bit")
_POLICY_UTF8 = email.policy.SMTPUTF8.clone(cte_type="7bit")

_HEADER_NAME = re.compile(r"^[!-9;-~]+$")
# Anchored at line starts: unanchored, the engine retries at every offset (seconds per MB).
_LONG_LINE = re.compile(rb"^[^\r\n]{%d}" % (MAX_LINE + 1), re.MULTILINE)
_BARE_EOL = re.compile(rb"\r\n|\r|\n")
_QUEUE_HEADERS = {"bcc", "resent-bcc"}


@dataclass(frozen=True)
class AddressPolicy:
    """How addresses are checked: syntax always; DNS deliverability only when asked."""

    test_environment: bool = False
    check_deliverability: bool = False


@dataclass(frozen=True)
class Attachment:
    """An attachment (or, with ``cid``, an inline part) from a path, bytes or a binary file object."""

    content: bytes | BinaryIO | str | os.PathLike[str]
    filename: str | None = None
    content_type: str | None = None  # guessed from the file name when not given
    cid: str | None = None

    def __post_init__(self) -> None:
        if self.filename is not None:
            check_line_safe(self.filename, "attachment file name")
        if self.cid is not None:
            check_line_safe(self.cid, "content id")
            if any(c in self.cid for c in "<> \t"):
                raise ConfigError(f"content id must not contain '<', '>' or blanks: {self.cid!r}")
        if self.content_type is not None:
            check_line_safe(self.content_type, "content type")
            if self.content_type.count("/") != 1:
                raise ConfigError(f"content type must look like 'type/subtype': {self.content_type!r}")

    def read(self) -> tuple[bytes, str, str, str]:
        """Return (data, file name, maintype, subtype)."""
        content = self.content
        filename = self.filename
        if isinstance(content, bytes | bytearray | memoryview):
            data = bytes(content)
        elif isinstance(content, str | os.PathLike):
            path = Path(content)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read attachment {os.fspath(path)!r}: {exc.strerror}") from None
            filename = filename or path.name
        else:
            data = content.read()
            if not isinstance(data, bytes):
                raise ConfigError("attachment file objects must be opened in binary mode")
            name = getattr(content, "name", None)
            if filename is None and isinstance(name, str):
                filename = os.path.basename(name)
        filename = filename or "attachment.bin"
        check_line_safe(filename, "attachment file name")
        ctype = self.content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        maintype, _, subtype = ctype.partition("/")
        return data, filename, maintype, subtype


def _as_attachment(item: AttachmentLike | Attachment) -> Attachment:
    if isinstance(item, Attachment):
        return item
    if isinstance(item, tuple):
        name, content = item
        return Attachment(content, filename=name)
    return Attachment(item)


def check_address(address: str, policy: AddressPolicy = AddressPolicy()) -> tuple[str, bool]:
    """Validate an addr-spec; return (address to put in the envelope, needs SMTPUTF8)."""
    check_line_safe(address, "address")
    try:
        info = validate_email(
            address,
            check_deliverability=policy.check_deliverability,
            test_environment=policy.test_environment,
            allow_smtputf8=True,
        )
    except EmailNotValidError as exc:
        raise ConfigError(f"invalid address {address!r}: {exc}") from None
    if info.ascii_email is not None:
        return info.ascii_email, False
    return info.normalized, True


def parse_address(value: AddressLike) -> Address:
    """``"Name <a@b>"``, ``"a@b"``, ``("Name", "a@b")`` or an ``Address`` -> ``Address``."""
    if isinstance(value, Address):
        name, spec = value.display_name, value.addr_spec
    elif isinstance(value, tuple):
        name, spec = value
    elif isinstance(value, str):
        check_line_safe(value, "address")
        if "<" in value:
            name, spec = email.utils.parseaddr(value)
            if not spec:
                raise ConfigError(f"cannot parse address {value!r}")
        else:
            name, spec = "", value.strip()
    else:
        raise ConfigError(f"not an address: {value!r}")
    check_line_safe(name, "display name")
    check_line_safe(spec, "address")
    if spec.count("@") < 1:
        raise ConfigError(f"invalid address {spec!r}: no '@'")
    local, _, domain = spec.rpartition("@")
    try:
        return Address(display_name=name, username=local, domain=domain)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid address {spec!r}: {exc}") from None


def _addresses(value: AddressLike | Sequence[AddressLike] | None) -> list[Address]:
    if value is None:
        return []
    if isinstance(value, str | Address | tuple):
        if isinstance(value, tuple) and not (len(value) == 2 and all(isinstance(v, str) for v in value)):
            return [parse_address(v) for v in value]
        return [parse_address(value)]  # type: ignore[arg-type]
    return [parse_address(v) for v in value]


def compose(
    *,
    sender: AddressLike,
    to: AddressLike | Sequence[AddressLike] | None = None,
    cc: AddressLike | Sequence[AddressLike] | None = None,
    bcc: AddressLike | Sequence[AddressLike] | None = None,
    reply_to: AddressLike | Sequence[AddressLike] | None = None,
    subject: str = "",
    text: str | None = None,
    html: str | None = None,
    attachments: Iterable[AttachmentLike | Attachment] = (),
    inline: Mapping[str, AttachmentLike | Attachment] | Iterable[Attachment] = (),
    headers: Mapping[str, str] | None = None,
    message_id: str | None = None,
    date: str | None = None,
) -> EmailMessage:
    """Build a message: text and/or HTML (multipart/alternative), inline images, attachments.

    ``inline`` maps a content id to an image the HTML shows with ``<img src="cid:ID">``. Bcc is
    kept as a header here and moved to the envelope by ``prepare``.
    """
    msg = EmailMessage(policy=_POLICY)
    sender_addr = parse_address(sender)
    msg["From"] = sender_addr
    for name, value in (("To", to), ("Cc", cc), ("Bcc", bcc), ("Reply-To", reply_to)):
        addrs = _addresses(value)
        if addrs:
            msg[name] = addrs
    check_line_safe(subject, "subject")
    msg["Subject"] = subject
    msg["Date"] = check_line_safe(date, "date") if date else email.utils.formatdate(localtime=True)
    if message_id is None:
        message_id = email.utils.make_msgid(domain=sender_addr.domain.encode("idna").decode("ascii"))
    msg["Message-ID"] = check_line_safe(message_id, "Message-ID")
    for name, value in (headers or {}).items():
        if not _HEADER_NAME.match(name):
            raise ConfigError(f"invalid header name {name!r}")
        check_line_safe(value, f"header {name}")
        msg[name] = value

    inline_parts = (
        [Attachment(a.content, a.filename, a.content_type, cid) if isinstance(a, Attachment)
         else Attachment(_as_attachment(a).content, _as_attachment(a).filename, None, cid)
         for cid, a in inline.items()]
        if isinstance(inline, Mapping) else list(inline)
    )  # fmt: skip
    if inline_parts and html is None:
        raise ConfigError("inline images need an HTML body that refers to them with cid:")
    if text is None and html is None:
        text = ""
    if text is not None:
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    else:
        msg.set_content(html or "", subtype="html")
    if inline_parts:
        html_part: EmailMessage = msg if text is None else msg.get_payload()[1]  # type: ignore[index,assignment]
        for part in inline_parts:
            if part.cid is None:
                raise ConfigError("an inline part needs a content id (cid)")
            data, filename, maintype, subtype = part.read()
            html_part.add_related(
                data, maintype, subtype, cid=f"<{part.cid}>", filename=filename, disposition="inline"
            )
    for item in attachments:
        data, filename, maintype, subtype = _as_attachment(item).read()
        msg.add_attachment(data, maintype, subtype, filename=filename)
    return msg


@dataclass(frozen=True)
class Outgoing:
    """A message ready for SMTP: envelope and final bytes (CRLF, not dot-stuffed)."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes = field(repr=False)
    message_id: str
    key: str
    smtputf8: bool = False
    eight_bit: bool = False

    def __post_init__(self) -> None:
        check_line_safe(self.sender, "envelope sender")
        for rcpt in self.recipients:
            check_line_safe(rcpt, "envelope recipient")
        if not self.recipients:
            raise ConfigError("a message needs at least one recipient")

    def with_recipients(self, recipients: Iterable[str]) -> Outgoing:
        """The same bytes for a subset of the recipients (retrying only the deferred ones)."""
        return Outgoing(
            self.sender, tuple(recipients), self.data, self.message_id, self.key,
            self.smtputf8, self.eight_bit,
        )  # fmt: skip


def _normalize_eol(data: bytes) -> bytes:
    crlf = data.count(b"\r\n")
    if crlf == data.count(b"\n") == data.count(b"\r"):
        return data if data.endswith(b"\r\n") else data + b"\r\n"
    data = _BARE_EOL.sub(b"\r\n", data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def _split_headers(data: bytes) -> tuple[list[bytes], memoryview]:
    """Header fields (each with its folded continuation lines and CRLF) and the rest (not copied)."""
    if data.startswith(b"\r\n"):
        return [], memoryview(data)
    end = data.find(b"\r\n\r\n")
    head, body = (data, memoryview(b"")) if end < 0 else (data[: end + 2], memoryview(data)[end + 2 :])
    fields: list[bytes] = []
    lines = head[:-2].split(b"\r\n")
    for line in lines:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line + b"\r\n"
        else:
            fields.append(line + b"\r\n")
    return fields, body


def _field_name(field_bytes: bytes) -> str:
    return field_bytes.split(b":", 1)[0].strip().decode("ascii", "replace").lower()


def _field_value(field_bytes: bytes) -> str:
    value = field_bytes.split(b":", 1)[1] if b":" in field_bytes else b""
    return re.sub(r"\r\n[ \t]", " ", value.decode("utf-8", "surrogateescape")).strip()


def prepare(
    message: EmailMessage | bytes,
    *,
    sender: str,
    recipients: Iterable[str] | None = None,
    key: str | None = None,
    policy: AddressPolicy = AddressPolicy(),
) -> Outgoing:
    """Turn a message into final bytes plus envelope.

    Envelope recipients are ``recipients`` when given, else To + Cc + Bcc. Bcc headers are
    removed; a missing Message-ID or Date is added once, here.
    """
    if isinstance(message, EmailMessage):
        data = _serialize(message)
    elif isinstance(message, bytes | bytearray | memoryview):
        data = bytes(message)
    else:
        raise ConfigError(f"cannot send a {type(message).__name__}; pass an EmailMessage or bytes")
    if b"\x00" in data:
        raise ConfigError("the message contains a NUL byte")
    data = _normalize_eol(data)
    fields, body = _split_headers(data)
    kept: list[bytes] = []
    found: dict[str, list[str]] = {}
    for f in fields:
        name = _field_name(f)
        if name in ("to", "cc", "bcc", "from", "message-id", "date"):
            found.setdefault(name, []).append(_field_value(f))
        if name not in _QUEUE_HEADERS:
            kept.append(f)
    sender_addr, sender_utf8 = check_address(sender, policy)
    extra: list[bytes] = []
    message_id = (found.get("message-id") or [""])[0]
    if not message_id:
        message_id = email.utils.make_msgid(domain=sender_addr.rpartition("@")[2])
        extra.append(b"Message-ID: " + message_id.encode("ascii") + b"\r\n")
    if not found.get("date"):
        extra.append(b"Date: " + email.utils.formatdate(localtime=True).encode("ascii") + b"\r\n")
    if extra or len(kept) != len(fields):
        data = b"".join([*extra, *kept, body])
    if recipients is None:
        heads = found.get("to", []) + found.get("cc", []) + found.get("bcc", [])
        rcpt_list = [a for _, a in email.utils.getaddresses(heads) if a]
    else:
        rcpt_list = [recipients] if isinstance(recipients, str) else list(recipients)
    smtputf8 = sender_utf8
    envelope: list[str] = []
    seen: set[str] = set()
    for rcpt in rcpt_list:
        addr, utf8 = check_address(rcpt, policy)
        smtputf8 = smtputf8 or utf8
        if addr.lower() not in seen:
            seen.add(addr.lower())
            envelope.append(addr)
    if not envelope:
        raise ConfigError("the message has no recipients (no To, Cc or Bcc, and none given)")
    match = _LONG_LINE.search(data)
    if match is not None:
        line_no = data.count(b"\r\n", 0, match.start()) + 1
        raise ConfigError(f"line {line_no} of the message is longer than {MAX_LINE} octets")
    eight_bit = not data.isascii()
    if eight_bit and not b"".join(kept).isascii():
        smtputf8 = True  # raw UTF-8 in header fields is only allowed under SMTPUTF8
    return Outgoing(
        sender=sender_addr,
        recipients=tuple(envelope),
        data=data,
        message_id=message_id,
        key=key if key is not None else message_id,
        smtputf8=smtputf8,
        eight_bit=eight_bit,
    )


_ADDRESS_HEADERS = ("from", "sender", "to", "cc", "bcc", "reply-to")


def _serialize(message: EmailMessage) -> bytes:
    # Internationalized addresses cannot be RFC 2047-encoded: they need SMTPUTF8 (raw UTF-8).
    utf8 = False
    for name in _ADDRESS_HEADERS:
        for value in message.get_all(name) or ():
            for addr in getattr(value, "addresses", ()):
                utf8 = utf8 or not addr.addr_spec.isascii()
    try:
        return message.as_bytes(policy=_POLICY_UTF8 if utf8 else _POLICY)
    except (UnicodeError, ValueError) as exc:
        raise ConfigError(f"cannot serialize the message: {exc}") from None
