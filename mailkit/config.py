"""Settings as frozen values: endpoints, security modes, timeouts, credentials.

Rule: everything here is validated on construction and does no I/O, so a bad setting fails with
ConfigError before a socket is opened.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

from .errors import ConfigError

__all__ = [
    "Credentials",
    "Endpoint",
    "OAuth2",
    "Password",
    "Protocol",
    "Security",
    "Timeouts",
    "check_line_safe",
]


class Protocol(enum.StrEnum):
    SMTP = "smtp"
    IMAP = "imap"
    POP3 = "pop3"


class Security(enum.StrEnum):
    """How a connection is protected. There is deliberately no "STARTTLS if offered"."""

    TLS = "tls"  # implicit TLS from the first byte
    STARTTLS = "starttls"  # plaintext greeting, then a required upgrade; no upgrade, no session
    INSECURE = "insecure"  # plaintext throughout; explicit opt-in only


_SCHEMES: dict[str, tuple[Protocol, Security]] = {
    "smtps": (Protocol.SMTP, Security.TLS),
    "smtp+starttls": (Protocol.SMTP, Security.STARTTLS),
    "smtp+insecure": (Protocol.SMTP, Security.INSECURE),
    "imaps": (Protocol.IMAP, Security.TLS),
    "imap+starttls": (Protocol.IMAP, Security.STARTTLS),
    "imap+insecure": (Protocol.IMAP, Security.INSECURE),
    "pop3s": (Protocol.POP3, Security.TLS),
    "pop3+starttls": (Protocol.POP3, Security.STARTTLS),
    "pop3+insecure": (Protocol.POP3, Security.INSECURE),
}
_SCHEME_OF = {value: scheme for scheme, value in _SCHEMES.items()}

DEFAULT_PORTS: dict[tuple[Protocol, Security], int] = {
    (Protocol.SMTP, Security.TLS): 465,
    (Protocol.SMTP, Security.STARTTLS): 587,
    (Protocol.SMTP, Security.INSECURE): 25,
    (Protocol.IMAP, Security.TLS): 993,
    (Protocol.IMAP, Security.STARTTLS): 143,
    (Protocol.IMAP, Security.INSECURE): 143,
    (Protocol.POP3, Security.TLS): 995,
    (Protocol.POP3, Security.STARTTLS): 110,
    (Protocol.POP3, Security.INSECURE): 110,
}

_UNSAFE = re.compile(r"[\r\n\x00]")
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


def check_line_safe(value: str, what: str, *, secret: bool = False) -> str:
    """Reject CR, LF and NUL: any of them could end a protocol line and start a new command."""
    if _UNSAFE.search(value):
        shown = "" if secret else f": {value!r}"
        raise ConfigError(f"{what} must not contain CR, LF or NUL{shown}")
    return value


def _check_host(host: str) -> str:
    check_line_safe(host, "host")
    if not host:
        raise ConfigError("host is empty")
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ConfigError(f"invalid host name {host!r}: {exc}") from None
    labels = ascii_host.rstrip(".").split(".")
    if len(ascii_host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise ConfigError(f"invalid host name {host!r}")
    return host


def _check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"port must be an integer from 1 to 65535, not {port!r}")
    return port


@dataclass(frozen=True)
class Endpoint:
    """One server for one protocol: ``Endpoint.parse("imaps://imap.example.com")``."""

    protocol: Protocol
    host: str
    port: int
    security: Security
    user: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "protocol", Protocol(self.protocol))
        object.__setattr__(self, "security", Security(self.security))
        _check_host(self.host)
        _check_port(self.port)
        if self.user is not None:
            check_line_safe(self.user, "user name")

    @classmethod
    def parse(cls, url: str, protocol: Protocol | str | None = None) -> Endpoint:
        """Parse ``SCHEME://[user@]host[:port]``; ``protocol``, if given, must match the scheme."""
        if not isinstance(url, str):
            raise ConfigError(f"endpoint URL must be a string, not {type(url).__name__}")
        check_line_safe(url, "endpoint URL")
        scheme, sep, rest = url.partition("://")
        if not sep:
            raise ConfigError(f"endpoint URL {url!r} has no scheme; expected e.g. 'imaps://host'")
        try:
            proto, security = _SCHEMES[scheme.lower()]
        except KeyError:
            known = ", ".join(sorted(_SCHEMES))
            raise ConfigError(f"unknown endpoint scheme {scheme!r}; use one of: {known}") from None
        if protocol is not None and Protocol(protocol) is not proto:
            raise ConfigError(f"endpoint {url!r} is {proto.value}, expected {Protocol(protocol).value}")
        rest = rest.rstrip("/")
        if "/" in rest or "?" in rest or "#" in rest:
            raise ConfigError(f"endpoint URL {url!r} must not have a path, query or fragment")
        user: str | None = None
        if "@" in rest:
            raw_user, _, rest = rest.rpartition("@")
            user = unquote(raw_user)
        host, port = _split_host_port(rest, url)
        return cls(proto, host, port or DEFAULT_PORTS[proto, security], security, user)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        return f"{_SCHEME_OF[self.protocol, self.security]}://{user}{host}:{self.port}"

    def __str__(self) -> str:
        return self.url


def _split_host_port(hostport: str, url: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        host, bracket, tail = hostport[1:].partition("]")
        if not bracket:
            raise ConfigError(f"endpoint URL {url!r} has an unclosed '[' in the host")
        port_text = tail[1:] if tail.startswith(":") else None
        if tail and port_text is None:
            raise ConfigError(f"endpoint URL {url!r} has junk after the host")
    else:
        host, colon, port_text_or_empty = hostport.partition(":")
        port_text = port_text_or_empty if colon else None
    if not host:
        raise ConfigError(f"endpoint URL {url!r} has no host")
    if port_text is None:
        return host, None
    if not port_text.isdigit():
        raise ConfigError(f"endpoint URL {url!r} has a port that is not a number: {port_text!r}")
    return host, _check_port(int(port_text))


@dataclass(frozen=True)
class Timeouts:
    """Seconds allowed per network step; ``None`` means no limit (only when you ask for it).

    ``data`` bounds the wait for the reply that ends a big transfer (the SMTP reply after DATA,
    which RFC 5321 section 4.5.3.2 allows ten minutes), and each read while a body streams.
    """

    connect: float | None = 15.0
    command: float | None = 30.0
    data: float | None = 600.0

    def __post_init__(self) -> None:
        for name in ("connect", "command", "data"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not value > 0):
                raise ConfigError(f"timeout {name!r} must be a positive number or None: {value!r}")

    @classmethod
    def uniform(cls, seconds: float) -> Timeouts:
        """One limit for connect and each command (the CLI's ``--timeout``); data stays longer."""
        return cls(connect=seconds, command=seconds, data=max(seconds, cls.data or seconds))


TokenProvider = Callable[[], "str | Awaitable[str]"]


@dataclass(frozen=True)
class Password:
    """A user name and password. The password never appears in a repr."""

    user: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        check_line_safe(self.user, "user name")
        check_line_safe(self.password, "password", secret=True)

    def __repr__(self) -> str:
        return f"Password(user={self.user!r}, password='***')"


@dataclass(frozen=True)
class OAuth2:
    """A user name and a token provider, called for a fresh access token on every new connection."""

    user: str
    token_provider: TokenProvider = field(repr=False)

    def __post_init__(self) -> None:
        check_line_safe(self.user, "user name")
        if not callable(self.token_provider):
            raise ConfigError("oauth2 token_provider must be callable")

    async def token(self) -> str:
        value = self.token_provider()
        token = value if isinstance(value, str) else await value
        return check_line_safe(token, "OAuth2 token", secret=True)

    def __repr__(self) -> str:
        return f"OAuth2(user={self.user!r}, token_provider='***')"


Credentials = Password | OAuth2
