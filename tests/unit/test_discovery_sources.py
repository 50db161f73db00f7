"""SRV, autoconfig, provider table, --resolve/--nameserver and HTTP parsing, with malformed input."""

from __future__ import annotations

import pytest

from mailkit.config import Protocol, Security
from mailkit.discovery._http import parse_response
from mailkit.discovery.autoconfig import autoconfig_urls, parse_autoconfig
from mailkit.discovery.providers import PROVIDERS, provider_for_domain, provider_for_mx
from mailkit.discovery.resolver import SrvRecord, parse_nameserver, parse_resolve, registered_domain_guess
from mailkit.discovery.srv import srv_candidates, srv_names
from mailkit.errors import ConfigError

# --- SRV ---


def test_srv_names_cover_rfc6186_and_8314() -> None:
    assert srv_names("example.com") == [
        "_submissions._tcp.example.com",
        "_submission._tcp.example.com",
        "_imaps._tcp.example.com",
        "_imap._tcp.example.com",
        "_pop3s._tcp.example.com",
        "_pop3._tcp.example.com",
    ]


def test_srv_order_security_and_absent_target() -> None:
    answers = {
        "_submission._tcp.example.com": [SrvRecord(0, 1, 587, "smtp.example.com")],
        "_submissions._tcp.example.com": [
            SrvRecord(20, 0, 465, "backup.example.com"),
            SrvRecord(10, 5, 465, "light.example.com"),
            SrvRecord(10, 50, 465, "heavy.example.com"),
        ],
        "_imaps._tcp.example.com": [SrvRecord(0, 0, 0, ".")],  # RFC 2782: not offered here
        "_imap._tcp.example.com": [SrvRecord(0, 0, 143, "imap.example.com")],
    }
    candidates, errors = srv_candidates("example.com", answers)
    smtp = [(c.host, c.port, c.security) for c in candidates if c.protocol is Protocol.SMTP]
    assert smtp == [
        ("heavy.example.com", 465, Security.TLS),
        ("light.example.com", 465, Security.TLS),
        ("backup.example.com", 465, Security.TLS),
        ("smtp.example.com", 587, Security.STARTTLS),
    ]
    imap = [(c.host, c.port, c.security) for c in candidates if c.protocol is Protocol.IMAP]
    assert imap == [("imap.example.com", 143, Security.STARTTLS)]
    assert {c.source for c in candidates} == {"srv"}
    assert errors == []


def test_srv_malformed_records_are_skipped_with_reasons() -> None:
    answers = {
        "_imaps._tcp.example.com": [
            SrvRecord(0, 0, 0, "imap.example.com"),
            SrvRecord(0, 0, 993, "bad host!"),
        ],
        "_pop3s._tcp.example.com": [SrvRecord(0, 0, 995, "pop.example.com")],
    }
    candidates, errors = srv_candidates("example.com", answers)
    assert [(c.host, c.port) for c in candidates] == [("pop.example.com", 995)]
    assert len(errors) == 2 and all("skipped" in e for e in errors)


# --- autoconfig ---

GOOD = """<?xml version="1.0"?>
<clientConfig version="1.1"><emailProvider id="example.com">
  <incomingServer type="imap"><hostname>imap.%EMAILDOMAIN%</hostname><port>993</port>
    <socketType>SSL</socketType><username>%EMAILLOCALPART%</username></incomingServer>
  <incomingServer type="pop3"><hostname>pop.example.com</hostname><port>110</port>
    <socketType>STARTTLS</socketType><username>%EMAILADDRESS%</username></incomingServer>
  <incomingServer type="exchange"><hostname>ews.example.com</hostname></incomingServer>
  <outgoingServer type="smtp"><hostname>smtp.example.com</hostname><port>25</port>
    <socketType>plain</socketType></outgoingServer>
  <outgoingServer type="smtp"><hostname>smtp.example.com</hostname><port>465</port>
    <socketType>SSL</socketType></outgoingServer>
</emailProvider></clientConfig>"""


def test_autoconfig_parses_servers_placeholders_and_users() -> None:
    result = parse_autoconfig(GOOD, "alice@example.com", trusted=True)
    got = [(c.protocol.value, c.host, c.port, c.security.value, c.user) for c in result.candidates]
    assert got == [
        ("imap", "imap.example.com", 993, "tls", "alice"),
        ("pop3", "pop.example.com", 110, "starttls", None),  # same as the address: not stored
        ("smtp", "smtp.example.com", 25, "insecure", None),
        ("smtp", "smtp.example.com", 465, "tls", None),
    ]
    assert all(c.source == "autoconfig" and c.trusted for c in result.candidates)
    assert result.errors == ()


def test_untrusted_autoconfig_keeps_only_hosts_in_the_domain() -> None:
    doc = GOOD.replace("pop.example.com", "pop.attacker.example.net")
    result = parse_autoconfig(doc, "alice@example.com", trusted=False)
    assert "pop.attacker.example.net" not in {c.host for c in result.candidates}
    assert any("outside example.com" in e for e in result.errors)
    assert not any(c.trusted for c in result.candidates)


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ("", "not well-formed"),
        ("<clientConfig><unclosed></clientConfig>", "not well-formed"),
        ("<html><body>404</body></html>", "<html>"),
        ('<!DOCTYPE x [<!ENTITY a "aaaa">]><clientConfig/>', "DTD"),
        ("<clientConfig><emailProvider/></clientConfig>", "no SMTP, IMAP or POP3"),
        (b"\xff\xfe\x00garbage", "not well-formed"),
    ],
)
def test_autoconfig_malformed_documents(document: str | bytes, reason: str) -> None:
    result = parse_autoconfig(document, "alice@example.com", trusted=True)
    assert result.candidates == ()
    assert any(reason in e for e in result.errors), result.errors


@pytest.mark.parametrize(
    ("server", "reason"),
    [
        ("<port>993</port><socketType>SSL</socketType>", "no hostname"),
        ("<hostname>imap.example.com</hostname><port>x</port><socketType>SSL</socketType>", "not a number"),
        ("<hostname>imap.example.com</hostname><port>99999</port><socketType>SSL</socketType>", "port"),
        ("<hostname>imap.example.com</hostname><port>993</port><socketType>QUIC</socketType>", "socketType"),
        ("<hostname>bad host</hostname><port>993</port><socketType>SSL</socketType>", "host"),
        ("<hostname>imap.example.com\r\nX</hostname><port>993</port><socketType>SSL</socketType>", "CR"),
    ],
)
def test_autoconfig_malformed_entries_are_skipped(server: str, reason: str) -> None:
    entry = f'<incomingServer type="imap">{server}</incomingServer>'
    doc = f"<clientConfig><emailProvider>{entry}</emailProvider></clientConfig>"
    result = parse_autoconfig(doc, "alice@example.com", trusted=True)
    assert result.candidates == ()
    assert any(reason in e for e in result.errors), result.errors


def test_autoconfig_urls_https_first() -> None:
    urls = autoconfig_urls("a@example.com", "example.com")
    assert urls[0].startswith("https://autoconfig.example.com/mail/config-v1.1.xml")
    assert urls[1] == "https://example.com/.well-known/autoconfig/mail/config-v1.1.xml"
    assert urls[-1].startswith("http://")


# --- HTTP responses ---


def test_http_response_parsing() -> None:
    ok = parse_response("u", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello-extra")
    assert ok.body == b"hello"
    chunked = parse_response(
        "u", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    assert chunked.body == b"hello"
    assert parse_response("u", b"HTTP/1.1 404 Not Found\r\n\r\n").error == "HTTP 404"
    assert parse_response("u", b"garbage").body is None
    assert parse_response("u", b"SMTP 220\r\n\r\n").error == "malformed HTTP status line"
    assert (
        parse_response("u", b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort").error == "truncated body"
    )
    bad_chunk = parse_response("u", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    assert bad_chunk.body is None


# --- providers ---


def test_providers_cover_the_big_ones() -> None:
    names = {p.name for p in PROVIDERS}
    assert {"gmail", "outlook", "office365", "yahoo", "icloud", "fastmail", "zoho", "gmx", "aol"} <= names
    gmail = provider_for_domain("GMAIL.com")
    assert gmail is not None and gmail.oauth2 and gmail.limits
    assert [(c.host, c.port, c.security) for c in gmail.candidates(Protocol.SMTP)] == [
        ("smtp.gmail.com", 465, Security.TLS),
        ("smtp.gmail.com", 587, Security.STARTTLS),
    ]
    icloud = provider_for_domain("me.com")
    assert icloud is not None and icloud.candidates(Protocol.POP3) == []
    assert provider_for_domain("example.com") is None


def test_every_provider_entry_is_a_valid_candidate() -> None:
    for provider in PROVIDERS:
        for protocol in Protocol:
            for candidate in provider.candidates(protocol):
                assert candidate.security is not Security.INSECURE
                assert candidate.source == "provider"


def test_provider_by_mx() -> None:
    gmail = provider_for_mx("alt1.aspmx.l.google.com.")
    assert gmail is not None and gmail.name == "gmail"
    o365 = provider_for_mx("contoso-com.mail.protection.outlook.com")
    assert o365 is not None and o365.name == "office365"
    aol = provider_for_mx("mx-aol.mail.gm0.yahoodns.net")
    assert aol is not None and aol.name == "aol"  # more specific than yahoo's suffix
    assert provider_for_mx("mx.example.com") is None
    assert provider_for_mx("notgoogle.com") is None


def test_registered_domain_guess() -> None:
    assert registered_domain_guess("mx1.mail.example.net.") == "mail.example.net"
    assert registered_domain_guess("example.net") == "example.net"


# --- resolve / nameserver ---


def test_parse_nameserver() -> None:
    assert parse_nameserver("127.0.0.30") == ("127.0.0.30", 53)
    assert parse_nameserver("127.0.0.30:5353") == ("127.0.0.30", 5353)
    assert parse_nameserver("[::1]:5353") == ("::1", 5353)
    assert parse_nameserver("::1") == ("::1", 53)
    for bad in ("dns.example.com", "127.0.0.1:0", "127.0.0.1:x", "[::1", ""):
        with pytest.raises(ConfigError):
            parse_nameserver(bad)


def test_parse_resolve() -> None:
    assert parse_resolve(["Mail.Example.com.=127.0.0.5", "imap.example.com=[::1]"]) == {
        "mail.example.com": "127.0.0.5",
        "imap.example.com": "::1",
    }
    assert parse_resolve({"a.example.com": "127.0.0.2"}) == {"a.example.com": "127.0.0.2"}
    assert parse_resolve(None) == {}
    for bad in (["no-equals"], ["host=not-an-ip"], ["bad host=127.0.0.1"], ["h\r\n=127.0.0.1"]):
        with pytest.raises(ConfigError):
            parse_resolve(bad)
