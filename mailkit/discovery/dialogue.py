"""Sans-I/O probe dialogues: greeting, capabilities, STARTTLS, login, for SMTP, IMAP and POP3.

Rule: no sockets here. A dialogue is a generator that yields what it needs (``Send`` a line,
``Read`` a line, ``UpgradeTLS``) and is sent back the line read; it returns a ``Finding``. The
driver in ``probe.py`` does the I/O; tests feed lines and compare what comes out. A STARTTLS
dialogue passes only after the upgrade completed and the capabilities were read again over TLS;
credentials are sent only over TLS, or over plaintext the caller explicitly allowed.
"""

from __future__ import annotations

import base64
from collections.abc import Generator
from dataclasses import dataclass, field

from .. import _sasl
from ..config import Protocol, Security
from ..errors import Reply

__all__ = [
    "Dialogue",
    "Finding",
    "Login",
    "Read",
    "Send",
    "UpgradeTLS",
    "dialogue_for",
    "imap_dialogue",
    "pop3_dialogue",
    "smtp_dialogue",
]

MAX_REPLY_LINES = 200  # a capability list longer than this is not a mail server worth trusting


@dataclass(frozen=True)
class Send:
    line: bytes  # without CRLF
    secret: bool = False  # never logged


@dataclass(frozen=True)
class Read:
    """Ask the driver for the next line (bytes, with its line ending)."""


@dataclass(frozen=True)
class UpgradeTLS:
    """Ask the driver to run the TLS handshake now (the server agreed to STARTTLS)."""


Op = Send | Read | UpgradeTLS


@dataclass(frozen=True)
class Login:
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Finding:
    """What one dialogue learnt. ``outcome`` is one of profile.OUTCOMES."""

    outcome: str
    detail: str = ""
    auth_mechanisms: tuple[str, ...] = ()
    logged_in: bool = False
    reply: Reply | None = None


Dialogue = Generator[Op, bytes | None, Finding]


class _Broken(Exception):
    """The peer broke the protocol: the dialogue ends with outcome "refused"."""


def _text(line: bytes) -> str:
    return line.decode("utf-8", "replace").rstrip("\r\n")


def _read() -> Generator[Op, bytes | None, str]:
    line = yield Read()
    if not line:
        raise _Broken("connection closed by the server")
    return _text(line)


def _plain(login: Login) -> bytes:
    return base64.b64encode(_sasl.plain(login.user, login.password))


def _may_send_credentials(encrypted: bool, security: Security) -> bool:
    return encrypted or security is Security.INSECURE


# --- SMTP (RFC 5321, RFC 3207, RFC 4954) ----------------------------------------------------------


def _smtp_reply() -> Generator[Op, bytes | None, tuple[int, list[str]]]:
    lines: list[str] = []
    while True:
        text = yield from _read()
        if len(text) < 3 or not text[:3].isdigit() or (len(text) > 3 and text[3] not in " -"):
            raise _Broken(f"not an SMTP reply: {text[:80]!r}")
        lines.append(text[4:])
        if len(text) == 3 or text[3] == " ":
            return int(text[:3]), lines
        if len(lines) >= MAX_REPLY_LINES:
            raise _Broken("SMTP reply too long")


def _smtp_r(code: int, lines: list[str]) -> Reply:
    return Reply("smtp", code, " ".join(lines)[:200])


def _ehlo_auth(lines: list[str]) -> tuple[set[str], tuple[str, ...]]:
    keywords: set[str] = set()
    mechanisms: list[str] = []
    for line in lines[1:]:
        words = line.upper().split()
        if not words:
            continue
        keywords.add(words[0])
        # "AUTH=PLAIN LOGIN" is an old Microsoft spelling of "AUTH PLAIN LOGIN"
        if words[0] == "AUTH" or words[0].startswith("AUTH="):
            rest = words[1:] if words[0] == "AUTH" else [words[0][5:], *words[1:]]
            mechanisms.extend(m for m in rest if m and m not in mechanisms)
    return keywords, tuple(mechanisms)


def smtp_dialogue(security: Security, login: Login | None, *, ehlo_name: str = "localhost") -> Dialogue:
    encrypted = security is Security.TLS
    try:
        code, lines = yield from _smtp_reply()
        if code != 220:
            return Finding("refused", f"greeting {code}", reply=_smtp_r(code, lines))
        yield Send(b"EHLO " + ehlo_name.encode("ascii"))
        code, lines = yield from _smtp_reply()
        if code != 250:
            return Finding("refused", f"EHLO refused ({code})", reply=_smtp_r(code, lines))
        keywords, mechanisms = _ehlo_auth(lines)
        if security is Security.STARTTLS:
            if "STARTTLS" not in keywords:
                return Finding("no-starttls", "the server does not offer STARTTLS")
            yield Send(b"STARTTLS")
            code, lines = yield from _smtp_reply()
            if code != 220:
                return Finding("no-starttls", f"STARTTLS refused ({code})", reply=_smtp_r(code, lines))
            yield UpgradeTLS()
            encrypted = True
            # Everything learnt before the upgrade may have been forged: ask again.
            yield Send(b"EHLO " + ehlo_name.encode("ascii"))
            code, lines = yield from _smtp_reply()
            if code != 250:
                return Finding("refused", f"EHLO after STARTTLS refused ({code})")
            keywords, mechanisms = _ehlo_auth(lines)
        detail = "capabilities read over TLS" if encrypted else "plaintext capabilities read"
        if login is None or not _may_send_credentials(encrypted, security):
            yield Send(b"QUIT")
            return Finding("ok", detail, mechanisms)
        if "PLAIN" in mechanisms:
            yield Send(b"AUTH PLAIN " + _plain(login), secret=True)
            code, lines = yield from _smtp_reply()
        elif "LOGIN" in mechanisms:
            yield Send(b"AUTH LOGIN")
            code, lines = yield from _smtp_reply()
            if code == 334:
                yield Send(base64.b64encode(login.user.encode("utf-8")), secret=True)
                code, lines = yield from _smtp_reply()
            if code == 334:
                yield Send(base64.b64encode(login.password.encode("utf-8")), secret=True)
                code, lines = yield from _smtp_reply()
        else:
            yield Send(b"QUIT")
            offered = " ".join(mechanisms) or "none"
            return Finding("auth-failed", f"no password mechanism offered (AUTH: {offered})", mechanisms)
        yield Send(b"QUIT")
        if code == 235:
            return Finding("ok", detail + "; login accepted", mechanisms, logged_in=True)
        return Finding("auth-failed", f"login refused ({code})", mechanisms, reply=_smtp_r(code, lines))
    except _Broken as exc:
        return Finding("refused", str(exc))


# --- IMAP (RFC 9051 / 3501, RFC 2595) -------------------------------------------------------------


def _imap_caps(text: str) -> set[str] | None:
    """Capabilities from ``* CAPABILITY ...`` or a ``[CAPABILITY ...]`` response code."""
    upper = text.upper()
    if upper.startswith("* CAPABILITY "):
        return set(upper[len("* CAPABILITY ") :].split())
    start = upper.find("[CAPABILITY ")
    if start >= 0:
        end = upper.find("]", start)
        if end > start:
            return set(upper[start + len("[CAPABILITY ") : end].split())
    return None


def _imap_tagged(tag: str) -> Generator[Op, bytes | None, tuple[str, str, set[str] | None]]:
    """Read until the tagged reply; returns (status, text, capabilities seen on the way)."""
    caps: set[str] | None = None
    for _ in range(MAX_REPLY_LINES):
        text = yield from _imap_line()
        found = _imap_caps(text)
        if found is not None:
            caps = found
        if text.startswith(tag + " "):
            status, _, rest = text[len(tag) + 1 :].partition(" ")
            return status.upper(), rest, caps
        if text.startswith("* BYE"):
            raise _Broken(f"server closed the session: {text[:120]}")
        if not text.startswith(("*", "+")):
            raise _Broken(f"not an IMAP response: {text[:80]!r}")
    raise _Broken("IMAP response too long")


def _imap_line() -> Generator[Op, bytes | None, str]:
    text = yield from _read()
    return text


def _imap_mechanisms(caps: set[str]) -> tuple[str, ...]:
    return tuple(sorted(c[5:] for c in caps if c.startswith("AUTH=")))


def _imap_quote(value: str) -> bytes:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return b'"' + escaped.encode("utf-8") + b'"'


def imap_dialogue(security: Security, login: Login | None) -> Dialogue:
    encrypted = security is Security.TLS
    try:
        greeting = yield from _imap_line()
        upper = greeting.upper()
        if upper.startswith("* PREAUTH"):
            return Finding("refused", "server pre-authenticated the session (unusable for login)")
        if not upper.startswith("* OK"):
            return Finding(
                "refused", f"greeting: {greeting[:120]}", reply=Reply("imap", None, greeting[:200])
            )
        caps = _imap_caps(greeting)
        if caps is None:
            yield Send(b"A1 CAPABILITY")
            status, text, caps = yield from _imap_tagged("A1")
            if status != "OK" or caps is None:
                return Finding("refused", "CAPABILITY failed", reply=Reply("imap", status, text))
        if security is Security.STARTTLS:
            if "STARTTLS" not in caps:
                return Finding("no-starttls", "the server does not offer STARTTLS")
            yield Send(b"A2 STARTTLS")
            status, text, _ = yield from _imap_tagged("A2")
            if status != "OK":
                return Finding(
                    "no-starttls", f"STARTTLS refused ({status})", reply=Reply("imap", status, text)
                )
            yield UpgradeTLS()
            encrypted = True
            # Capabilities seen before TLS may have been forged (RFC 2595 section 3.1): ask again.
            yield Send(b"A3 CAPABILITY")
            status, text, caps = yield from _imap_tagged("A3")
            if status != "OK" or caps is None:
                return Finding("refused", "CAPABILITY after STARTTLS failed")
        mechanisms = _imap_mechanisms(caps)
        detail = "capabilities read over TLS" if encrypted else "plaintext capabilities read"
        if login is None or not _may_send_credentials(encrypted, security):
            yield Send(b"A9 LOGOUT")
            return Finding("ok", detail, mechanisms)
        if "PLAIN" in mechanisms:
            yield Send(b"A4 AUTHENTICATE PLAIN")
            text = yield from _imap_line()
            if not text.startswith("+"):
                yield Send(b"A9 LOGOUT")
                return Finding("auth-failed", f"AUTHENTICATE PLAIN refused: {text[:120]}", mechanisms)
            yield Send(_plain(login), secret=True)
        elif "LOGINDISABLED" not in caps:
            yield Send(
                b"A4 LOGIN " + _imap_quote(login.user) + b" " + _imap_quote(login.password), secret=True
            )
        else:
            yield Send(b"A9 LOGOUT")
            return Finding("auth-failed", "no password mechanism offered", mechanisms)
        status, text, _ = yield from _imap_tagged("A4")
        yield Send(b"A9 LOGOUT")
        if status == "OK":
            return Finding("ok", detail + "; login accepted", mechanisms, logged_in=True)
        return Finding(
            "auth-failed", f"login refused ({status})", mechanisms, reply=Reply("imap", status, text[:200])
        )
    except _Broken as exc:
        return Finding("refused", str(exc))


# --- POP3 (RFC 1939, RFC 2449, RFC 2595, RFC 5034) ------------------------------------------------


def _pop3_status() -> Generator[Op, bytes | None, tuple[bool, str]]:
    text = yield from _read()
    if text.startswith("+OK"):
        return True, text[3:].strip()
    if text.startswith("-ERR"):
        return False, text[4:].strip()
    raise _Broken(f"not a POP3 reply: {text[:80]!r}")


def _pop3_capa() -> Generator[Op, bytes | None, set[str] | None]:
    yield Send(b"CAPA")
    ok, _ = yield from _pop3_status()
    if not ok:
        return None
    caps: set[str] = set()
    for _ in range(MAX_REPLY_LINES):
        text = yield from _read()
        if text == ".":
            return caps
        caps.add(text[1:].upper() if text.startswith("..") else text.upper())
    raise _Broken("CAPA response too long")


def _pop3_mechanisms(caps: set[str]) -> tuple[str, ...]:
    for line in caps:
        words = line.split()
        if words and words[0] == "SASL":
            return tuple(words[1:])
    return ()


def pop3_dialogue(security: Security, login: Login | None) -> Dialogue:
    encrypted = security is Security.TLS
    try:
        ok, text = yield from _pop3_status()
        if not ok:
            return Finding("refused", f"greeting: -ERR {text[:120]}", reply=Reply("pop3", "-ERR", text[:200]))
        caps = yield from _pop3_capa()
        if security is Security.STARTTLS:
            if caps is None or "STLS" not in caps:
                return Finding("no-starttls", "the server does not offer STLS")
            yield Send(b"STLS")
            ok, text = yield from _pop3_status()
            if not ok:
                return Finding("no-starttls", "STLS refused", reply=Reply("pop3", "-ERR", text[:200]))
            yield UpgradeTLS()
            encrypted = True
            caps = yield from _pop3_capa()  # RFC 2595: forget what was said in plaintext
        caps = caps or set()
        mechanisms = _pop3_mechanisms(caps)
        detail = "capabilities read over TLS" if encrypted else "plaintext capabilities read"
        if login is None or not _may_send_credentials(encrypted, security):
            yield Send(b"QUIT")
            return Finding("ok", detail, mechanisms)
        if "PLAIN" in mechanisms:
            yield Send(b"AUTH PLAIN " + _plain(login), secret=True)
            ok, text = yield from _pop3_status()
        else:
            yield Send(b"USER " + login.user.encode("utf-8"))
            ok, text = yield from _pop3_status()
            if ok:
                yield Send(b"PASS " + login.password.encode("utf-8"), secret=True)
                ok, text = yield from _pop3_status()
        yield Send(b"QUIT")
        if ok:
            return Finding("ok", detail + "; login accepted", mechanisms, logged_in=True)
        return Finding("auth-failed", "login refused", mechanisms, reply=Reply("pop3", "-ERR", text[:200]))
    except _Broken as exc:
        return Finding("refused", str(exc))


def dialogue_for(
    protocol: Protocol, security: Security, login: Login | None, *, ehlo_name: str = "localhost"
) -> Dialogue:
    if protocol is Protocol.SMTP:
        return smtp_dialogue(security, login, ehlo_name=ehlo_name)
    if protocol is Protocol.IMAP:
        return imap_dialogue(security, login)
    return pop3_dialogue(security, login)
