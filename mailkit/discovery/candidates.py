"""The candidate table: which (host, port, security) to try for each protocol, and in what order.

Rule: pure data and ordering, no I/O. Secure candidates come first, best first (RFC 8314: implicit
TLS before STARTTLS); plaintext candidates exist only when the caller allowed them, and come last.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..config import Endpoint, Protocol, Security, _check_host, _check_port, check_line_safe
from ..errors import ConfigError
from .profile import SOURCES

__all__ = [
    "GUESS_PREFIXES",
    "PORT_TABLE",
    "SECURITY_RANK",
    "Candidate",
    "candidates_for_host",
    "guess_hosts",
    "insecure_candidates_for_host",
    "order_candidates",
]

# Per protocol, in order of preference: the port table of the issue (SMTP 465 -> 587 -> 2525 -> 25,
# IMAP 993 -> 143, POP3 995 -> 110). Port 25 is the MX relay port, blocked by many ISPs: last.
PORT_TABLE: dict[Protocol, tuple[tuple[int, Security], ...]] = {
    Protocol.SMTP: (
        (465, Security.TLS),
        (587, Security.STARTTLS),
        (2525, Security.STARTTLS),
        (25, Security.STARTTLS),
    ),
    Protocol.IMAP: ((993, Security.TLS), (143, Security.STARTTLS)),
    Protocol.POP3: ((995, Security.TLS), (110, Security.STARTTLS)),
}

# Plaintext fallbacks, only with allow_insecure=True.
INSECURE_PORTS: dict[Protocol, tuple[int, ...]] = {
    Protocol.SMTP: (587, 2525, 25),
    Protocol.IMAP: (143,),
    Protocol.POP3: (110,),
}

# Host name prefixes tried when nothing better is known; "" is the bare domain.
GUESS_PREFIXES: dict[Protocol, tuple[str, ...]] = {
    Protocol.SMTP: ("smtp.", "mail.", ""),
    Protocol.IMAP: ("imap.", "mail.", ""),
    Protocol.POP3: ("pop.", "pop3.", "mail.", ""),
}

# Higher is stronger. Implicit TLS ranks above STARTTLS (no plaintext phase an attacker can touch).
SECURITY_RANK: dict[Security, int] = {Security.INSECURE: 0, Security.STARTTLS: 1, Security.TLS: 2}


@dataclass(frozen=True)
class Candidate:
    """One endpoint worth probing, and the source that suggested it."""

    protocol: Protocol
    host: str
    port: int
    security: Security
    source: str
    user: str | None = None
    trusted: bool = True  # False: learnt over an unauthenticated channel (plain HTTP)

    def __post_init__(self) -> None:
        object.__setattr__(self, "protocol", Protocol(self.protocol))
        object.__setattr__(self, "security", Security(self.security))
        object.__setattr__(self, "host", _check_host(self.host).rstrip(".").lower())
        _check_port(self.port)
        if self.user is not None:
            check_line_safe(self.user, "user name")
        if self.source not in SOURCES:
            raise ConfigError(f"unknown candidate source {self.source!r}")

    @property
    def key(self) -> tuple[Protocol, str, int, Security]:
        return (self.protocol, self.host, self.port, self.security)

    def endpoint(self) -> Endpoint:
        return Endpoint(self.protocol, self.host, self.port, self.security, self.user)

    def __str__(self) -> str:
        return f"{self.endpoint().url} ({self.source})"


def candidates_for_host(
    protocol: Protocol, host: str, source: str, *, user: str | None = None
) -> list[Candidate]:
    """The secure candidates of the port table for one host, best first."""
    return [
        Candidate(protocol, host, port, security, source, user)
        for port, security in PORT_TABLE[Protocol(protocol)]
    ]


def insecure_candidates_for_host(
    protocol: Protocol, host: str, source: str, *, user: str | None = None
) -> list[Candidate]:
    return [
        Candidate(protocol, host, port, Security.INSECURE, source, user)
        for port in INSECURE_PORTS[Protocol(protocol)]
    ]


def guess_hosts(protocol: Protocol, domain: str) -> list[str]:
    """``smtp.example.com``, ``mail.example.com``, ``example.com`` and the like, in order."""
    domain = domain.rstrip(".").lower()
    return [prefix + domain for prefix in GUESS_PREFIXES[Protocol(protocol)]]


def order_candidates(candidates: Iterable[Candidate], *, allow_insecure: bool) -> list[Candidate]:
    """Deduplicate (first wins: sources arrive best first) and put plaintext candidates last.

    Without ``allow_insecure`` plaintext candidates are dropped. With it, every host that had a
    secure candidate also gets plaintext ones, after all secure candidates of every host. Plaintext
    candidates learnt over an untrusted channel are always dropped: an attacker could have written
    them.
    """
    secure: list[Candidate] = []
    insecure: list[Candidate] = []
    seen: set[tuple[Protocol, str, int, Security]] = set()

    def add(candidate: Candidate) -> None:
        if candidate.key in seen:
            return
        seen.add(candidate.key)
        if candidate.security is Security.INSECURE:
            if allow_insecure and candidate.trusted:
                insecure.append(candidate)
        else:
            secure.append(candidate)

    for candidate in candidates:
        add(candidate)
    if allow_insecure:
        hosts: dict[tuple[Protocol, str], Candidate] = {}
        for candidate in secure:
            if candidate.trusted:
                hosts.setdefault((candidate.protocol, candidate.host), candidate)
        for first in hosts.values():
            for extra in insecure_candidates_for_host(
                first.protocol, first.host, first.source, user=first.user
            ):
                add(extra)
    return secure + insecure
