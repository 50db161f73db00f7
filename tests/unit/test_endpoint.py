"""Endpoint URLs: every scheme of INTERFACE.md, defaults, round trips, and bad input."""

import pytest

from mailkit import ConfigError, Endpoint, Protocol, Security

SCHEMES = [
    ("smtps", Protocol.SMTP, Security.TLS, 465),
    ("smtp+starttls", Protocol.SMTP, Security.STARTTLS, 587),
    ("smtp+insecure", Protocol.SMTP, Security.INSECURE, 25),
    ("imaps", Protocol.IMAP, Security.TLS, 993),
    ("imap+starttls", Protocol.IMAP, Security.STARTTLS, 143),
    ("imap+insecure", Protocol.IMAP, Security.INSECURE, 143),
    ("pop3s", Protocol.POP3, Security.TLS, 995),
    ("pop3+starttls", Protocol.POP3, Security.STARTTLS, 110),
    ("pop3+insecure", Protocol.POP3, Security.INSECURE, 110),
]


@pytest.mark.parametrize(("scheme", "protocol", "security", "port"), SCHEMES)
def test_scheme_sets_protocol_security_and_default_port(scheme, protocol, security, port):
    endpoint = Endpoint.parse(f"{scheme}://mail.example.com")
    assert (endpoint.protocol, endpoint.security, endpoint.port) == (protocol, security, port)
    assert endpoint.host == "mail.example.com"
    assert endpoint.url == f"{scheme}://mail.example.com:{port}"
    assert Endpoint.parse(endpoint.url) == endpoint


def test_explicit_port_user_and_ipv6():
    endpoint = Endpoint.parse("imaps://alice%40example.com@[::1]:10993")
    assert endpoint.host == "::1"
    assert endpoint.port == 10993
    assert endpoint.user == "alice@example.com"
    assert endpoint.url == "imaps://alice@example.com@[::1]:10993"


def test_scheme_is_case_insensitive_and_trailing_slash_allowed():
    assert Endpoint.parse("SMTPS://smtp.example.com/").port == 465


def test_international_host_name_is_accepted():
    assert Endpoint.parse("imaps://mäil.example.de").host == "mäil.example.de"


def test_protocol_must_match_when_given():
    with pytest.raises(ConfigError, match="is imap, expected smtp"):
        Endpoint.parse("imaps://imap.example.com", Protocol.SMTP)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("imap.example.com", "no scheme"),
        ("https://example.com", "unknown endpoint scheme 'https'"),
        ("imaps://", "no host"),
        ("imaps://:993", "no host"),
        ("imaps://host:0", "port must be an integer from 1 to 65535"),
        ("imaps://host:65536", "port must be an integer from 1 to 65535"),
        ("imaps://host:99999999", "port must be an integer from 1 to 65535"),
        ("imaps://host:abc", "not a number"),
        ("imaps://host:-1", "not a number"),
        ("imaps://host/INBOX", "must not have a path"),
        ("imaps://host?x=1", "must not have a path"),
        ("imaps://ho st", "invalid host name"),
        ("imaps://-bad-.example.com", "invalid host name"),
        ("imaps://[::1", "unclosed"),
        ("imaps://[::1]x", "junk after the host"),
        ("imaps://host\r\nA1 LOGIN x y", "CR, LF or NUL"),
        ("imaps://host\x00", "CR, LF or NUL"),
        ("imaps://us%0D%0Aer@host", "CR, LF or NUL"),
    ],
)
def test_bad_urls_raise_config_error_naming_the_problem(url, problem):
    with pytest.raises(ConfigError, match=problem.replace("(", r"\(").replace("?", r"\?")):
        Endpoint.parse(url)


def test_non_string_url_is_a_config_error():
    with pytest.raises(ConfigError, match="must be a string"):
        Endpoint.parse(993)  # type: ignore[arg-type]


@pytest.mark.parametrize("port", [0, 70000, True, "993"])
def test_direct_construction_validates_port(port):
    with pytest.raises(ConfigError):
        Endpoint(Protocol.IMAP, "imap.example.com", port, Security.TLS)


def test_config_error_is_a_value_error_for_callers_that_expect_one():
    with pytest.raises(ValueError):
        Endpoint.parse("nope://x")
