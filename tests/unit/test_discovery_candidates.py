"""The candidate table and its ordering: pure logic, no sockets."""

from __future__ import annotations

import pytest

from mailkit.config import Protocol, Security
from mailkit.discovery.candidates import (
    SECURITY_RANK,
    Candidate,
    candidates_for_host,
    guess_hosts,
    order_candidates,
)
from mailkit.errors import ConfigError


def ports(candidates: list[Candidate]) -> list[tuple[int, str]]:
    return [(c.port, c.security.value) for c in candidates]


def test_port_table_order_per_protocol() -> None:
    assert ports(candidates_for_host(Protocol.SMTP, "smtp.example.com", "guess")) == [
        (465, "tls"),
        (587, "starttls"),
        (2525, "starttls"),
        (25, "starttls"),
    ]
    assert ports(candidates_for_host(Protocol.IMAP, "imap.example.com", "guess")) == [
        (993, "tls"),
        (143, "starttls"),
    ]
    assert ports(candidates_for_host(Protocol.POP3, "pop.example.com", "guess")) == [
        (995, "tls"),
        (110, "starttls"),
    ]


def test_no_plaintext_candidate_without_allow_insecure() -> None:
    given = [
        *candidates_for_host(Protocol.SMTP, "smtp.example.com", "guess"),
        Candidate(Protocol.SMTP, "smtp.example.com", 25, Security.INSECURE, "autoconfig"),
    ]
    ordered = order_candidates(given, allow_insecure=False)
    assert all(c.security is not Security.INSECURE for c in ordered)
    assert len(ordered) == 4


def test_plaintext_candidates_come_last_with_allow_insecure() -> None:
    given = [
        *candidates_for_host(Protocol.SMTP, "smtp.example.com", "guess"),
        *candidates_for_host(Protocol.SMTP, "mail.example.com", "guess"),
    ]
    ordered = order_candidates(given, allow_insecure=True)
    securities = [c.security for c in ordered]
    first_insecure = securities.index(Security.INSECURE)
    assert first_insecure == 8  # after every secure candidate of every host
    assert set(securities[first_insecure:]) == {Security.INSECURE}
    assert [(c.host, c.port) for c in ordered[8:11]] == [
        ("smtp.example.com", 587),
        ("smtp.example.com", 2525),
        ("smtp.example.com", 25),
    ]


def test_untrusted_plaintext_is_dropped_even_with_allow_insecure() -> None:
    untrusted = Candidate(
        Protocol.IMAP, "imap.example.com", 143, Security.INSECURE, "autoconfig", trusted=False
    )
    tls = Candidate(Protocol.IMAP, "imap.example.com", 993, Security.TLS, "autoconfig", trusted=False)
    ordered = order_candidates([untrusted, tls], allow_insecure=True)
    assert ordered == [tls]  # no plaintext invented for an untrusted host either


def test_duplicates_keep_the_best_source() -> None:
    provider = Candidate(Protocol.IMAP, "IMAP.Example.com.", 993, Security.TLS, "provider")
    guess = Candidate(Protocol.IMAP, "imap.example.com", 993, Security.TLS, "guess")
    assert order_candidates([provider, guess], allow_insecure=False) == [provider]
    assert provider.host == "imap.example.com"


def test_guess_hosts() -> None:
    assert guess_hosts(Protocol.SMTP, "Example.COM") == [
        "smtp.example.com",
        "mail.example.com",
        "example.com",
    ]
    assert guess_hosts(Protocol.POP3, "example.com")[:2] == ["pop.example.com", "pop3.example.com"]


def test_security_rank_orders_tls_over_starttls_over_plaintext() -> None:
    assert SECURITY_RANK[Security.TLS] > SECURITY_RANK[Security.STARTTLS] > SECURITY_RANK[Security.INSECURE]


@pytest.mark.parametrize(
    ("host", "port", "source", "user"),
    [
        ("bad host", 993, "guess", None),
        ("imap.example.com", 0, "guess", None),
        ("imap.example.com", 993, "rumour", None),
        ("imap.example.com", 993, "guess", "alice\r\nA1 LOGOUT"),
    ],
)
def test_invalid_candidates_are_config_errors(host: str, port: int, source: str, user: str | None) -> None:
    with pytest.raises(ConfigError):
        Candidate(Protocol.IMAP, host, port, Security.TLS, source, user)
