"""SASL payloads shared by SMTP, IMAP and POP3: the bytes of each mechanism, before base64.

Rule: one builder per mechanism, used by every protocol, so an escaping or format fix lands once.
Callers check the user, password and token for CR/LF/NUL before (``check_line_safe``).
"""

from __future__ import annotations

import base64
from collections.abc import Container

__all__ = [
    "OAUTH_MECHANISMS",
    "b64",
    "choose_oauth",
    "oauth_error_answer",
    "oauthbearer",
    "plain",
    "xoauth2",
]

# Preference when a server offers both: OAUTHBEARER is the standard (RFC 7628), XOAUTH2 Google's.
OAUTH_MECHANISMS = ("OAUTHBEARER", "XOAUTH2")


def plain(user: str, password: str) -> bytes:
    """RFC 4616: empty authorization identity, then the user and password (UTF-8)."""
    return b"\0" + user.encode("utf-8") + b"\0" + password.encode("utf-8")


def xoauth2(user: str, token: str) -> bytes:
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def oauthbearer(user: str, token: str, host: str | None = None, port: int | None = None) -> bytes:
    """RFC 7628; ``host``/``port`` name the server the token is meant for, when known."""
    # RFC 5801 saslname: "=" and "," in the authorization identity are escaped.
    authzid = user.replace("=", "=3D").replace(",", "=2C")
    where = ""
    if host is not None:
        where += f"host={host}\x01"
    if port is not None:
        where += f"port={port}\x01"
    return f"n,a={authzid},\x01{where}auth=Bearer {token}\x01\x01".encode()


def oauth_error_answer(mechanism: str) -> bytes:
    """The reply to a refused token's error challenge: never the token again (RFC 7628 3.2.3)."""
    return b"\x01" if mechanism.upper() == "OAUTHBEARER" else b""


def choose_oauth(offered: Container[str]) -> str | None:
    """The OAuth2 mechanism to use among those ``offered`` (upper-case names), or None."""
    return next((m for m in OAUTH_MECHANISMS if m in offered), None)


def b64(payload: bytes) -> str:
    """A payload as the base64 text that goes on a protocol line."""
    return base64.b64encode(payload).decode("ascii")
