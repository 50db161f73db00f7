"""Personalized messages for bulk sending: a Jinja2 template rendered per recipient, made fast.

Rule: the MIME structure is decided once per campaign and each message is assembled directly as
bytes (RFC 2047 headers, quoted-printable bodies when not plain ASCII, CRLF, lines <= 998 octets);
building an ``EmailMessage`` per recipient costs more than sending it. Every rendered header value
is checked for CR/LF/NUL, so a CSV field cannot inject a header.

Template file: header lines (at least ``Subject:``; ``From:``, ``Reply-To:`` and others allowed),
a blank line, then the plain-text body.
"""

from __future__ import annotations

import binascii
import email.utils
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from email.header import Header

import jinja2

from ..config import check_line_safe
from ..errors import ConfigError
from ..message import AddressPolicy, Outgoing, check_address, parse_address

__all__ = ["MailTemplate"]

_HEADER_NAME = re.compile(r"^[!-9;-~]+$")
_RESERVED = {"to", "cc", "bcc", "date", "message-id", "mime-version", "content-type",
             "content-transfer-encoding"}  # fmt: skip
_ADDRESS_FIELDS = {"from", "reply-to", "sender"}


def _env(autoescape: bool) -> jinja2.Environment:
    return jinja2.Environment(
        # Plain-text parts and headers are not HTML: escaping them would corrupt them.
        undefined=jinja2.StrictUndefined, autoescape=autoescape, keep_trailing_newline=True  # noqa: S701
    )


def _encode_header(name: str, value: str) -> bytes:
    check_line_safe(value, f"header {name}")
    if value.isascii() and len(name) + len(value) + 2 <= 78:
        return f"{name}: {value}\r\n".encode("ascii")
    if name.lower() in _ADDRESS_FIELDS:
        addr = parse_address(value)
        folded = email.utils.formataddr((addr.display_name, addr.addr_spec), charset="utf-8")
        return f"{name}: {folded}\r\n".encode()
    encoded = Header(value, "utf-8" if not value.isascii() else "us-ascii", header_name=name).encode(
        linesep="\r\n", maxlinelen=78
    )
    return f"{name}: {encoded}\r\n".encode("ascii")


def _encode_body(text: str) -> tuple[bytes, bytes]:
    """(Content-Transfer-Encoding, encoded CRLF body)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    raw = text.encode("utf-8")
    if raw.isascii() and max(map(len, raw.split(b"\n")), default=0) <= 998:
        return b"7bit", raw.replace(b"\n", b"\r\n") + (b"" if raw.endswith(b"\n") else b"\r\n")
    qp = binascii.b2a_qp(raw, istext=True, header=False)
    if not qp.endswith(b"\n"):
        qp += b"\n"
    return b"quoted-printable", qp.replace(b"\n", b"\r\n")


@dataclass(frozen=True)
class MailTemplate:
    """``MailTemplate.parse(text, html)``, then ``render(row, sender=..., key=...)`` per recipient."""

    headers: tuple[tuple[str, jinja2.Template], ...]
    text: jinja2.Template
    html: jinja2.Template | None = None

    @classmethod
    def parse(cls, source: str, html: str | None = None) -> MailTemplate:
        source = source.replace("\r\n", "\n")
        head, sep, body = source.partition("\n\n")
        if not sep:
            raise ConfigError("template: header lines, a blank line, then the body (no blank line found)")
        env = _env(False)
        headers: list[tuple[str, jinja2.Template]] = []
        try:
            for line in head.split("\n"):
                if line[:1] in (" ", "\t") and headers:
                    raise ConfigError("template: folded header lines are not supported; use one line")
                name, colon, value = line.partition(":")
                name = name.strip()
                if not colon or not _HEADER_NAME.match(name):
                    raise ConfigError(f"template: not a header line: {line!r}")
                if name.lower() in _RESERVED:
                    raise ConfigError(f"template: {name} is set by mailkit, not by the template")
                headers.append((name, env.from_string(value.strip())))
            if not any(name.lower() == "subject" for name, _ in headers):
                raise ConfigError("template: a Subject: line is required")
            return cls(
                tuple(headers), env.from_string(body),
                _env(True).from_string(html) if html is not None else None,
            )  # fmt: skip
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(f"template syntax error, line {exc.lineno}: {exc.message}") from None

    def render(
        self,
        row: Mapping[str, str],
        *,
        sender: str,
        key: str | None = None,
        policy: AddressPolicy | None = None,
    ) -> Outgoing:
        """One message for ``row`` (which has an ``email`` field), ready to send."""
        to = row.get("email")
        if not to:
            raise ConfigError("the row has no 'email' value")
        try:
            values = [(name, tpl.render(row).strip()) for name, tpl in self.headers]
            text = self.text.render(row)
            html = self.html.render(row) if self.html is not None else None
        except jinja2.TemplateError as exc:
            raise ConfigError(f"template for {to}: {exc}") from None
        policy = policy or AddressPolicy()
        rcpt, rcpt_utf8 = check_address(to, policy)
        envelope_from, from_utf8 = check_address(sender, policy)
        if rcpt_utf8 or from_utf8:
            raise ConfigError(f"{to}: internationalized addresses need the compose() path (SMTPUTF8)")
        domain = envelope_from.rpartition("@")[2]
        message_id = email.utils.make_msgid(domain=domain)
        lines = [_encode_header(name, value) for name, value in values]
        if not any(name.lower() == "from" for name, _ in values):
            lines.insert(0, f"From: {sender}\r\n".encode())
        lines.append(f"To: {rcpt}\r\n".encode())
        lines.append(b"Date: " + email.utils.formatdate(localtime=True).encode() + b"\r\n")
        lines.append(b"Message-ID: " + message_id.encode() + b"\r\n")
        lines.append(b"MIME-Version: 1.0\r\n")
        cte, body = _encode_body(text)
        if html is None:
            lines.append(b'Content-Type: text/plain; charset="utf-8"\r\n')
            lines.append(b"Content-Transfer-Encoding: " + cte + b"\r\n\r\n" + body)
        else:
            hcte, hbody = _encode_body(html)
            boundary = ("=_mk_" + secrets.token_hex(12)).encode()
            lines.append(b'Content-Type: multipart/alternative; boundary="' + boundary + b'"\r\n\r\n')
            for ctype, enc, part in ((b"plain", cte, body), (b"html", hcte, hbody)):
                # part ends with CRLF; one more, because the CRLF before a boundary belongs to it
                lines.append(b"--" + boundary + b'\r\nContent-Type: text/' + ctype + b'; charset="utf-8"\r\n'
                             b"Content-Transfer-Encoding: " + enc + b"\r\n\r\n" + part + b"\r\n")  # fmt: skip
            lines.append(b"--" + boundary + b"--\r\n")
        data = b"".join(lines)
        return Outgoing(
            sender=envelope_from, recipients=(rcpt,), data=data, message_id=message_id,
            key=key if key is not None else rcpt.lower(),
        )  # fmt: skip
