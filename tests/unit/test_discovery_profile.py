"""Profile JSON shape and round trip, failure explanations, and the on-disk cache with its latch."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from mailkit.config import Endpoint, Protocol, Security
from mailkit.discovery import Attempt, Choice, Profile, ProfileCache
from mailkit.errors import (
    CertificateError,
    ConfigError,
    ConnectError,
    SecurityError,
    TimeoutError,
    TLSError,
)


def sample() -> Profile:
    return Profile(
        address="alice@example.com",
        smtp=Choice(
            Endpoint.parse("smtps://smtp.example.com"),
            "provider",
            True,
            ("PLAIN", "XOAUTH2"),
            oauth2=True,
            limits={"recipients_per_day": 500},
        ),
        imap=Choice(
            Endpoint(Protocol.IMAP, "imap.example.com", 143, Security.STARTTLS, "alice"), "autoconfig"
        ),
        attempts=(
            Attempt(
                Protocol.SMTP, "smtp.example.com", 465, Security.TLS, "ok", 0.0412345, "fine", "provider"
            ),
            Attempt(
                Protocol.POP3, "pop.example.com", 995, Security.TLS, "refused", 0.001, "connection refused"
            ),
        ),
        provider="gmail",
        created=1_700_000_000.0,
    )


def test_json_shape_matches_interface() -> None:
    data = json.loads(sample().to_json())
    assert list(data)[:5] == ["address", "smtp", "imap", "pop3", "attempts"]
    assert data["pop3"] is None
    assert {
        "host": "smtp.example.com",
        "port": 465,
        "security": "tls",
        "source": "provider",
        "verified": True,
    }.items() <= data["smtp"].items()
    assert data["imap"]["user"] == "alice"
    assert "user" not in data["smtp"] and "oauth2" not in data["imap"]
    assert data["attempts"][0] == {
        "protocol": "smtp",
        "host": "smtp.example.com",
        "port": 465,
        "security": "tls",
        "outcome": "ok",
        "seconds": 0.0412,
        "detail": "fine",
        "source": "provider",
    }


def test_round_trip() -> None:
    profile = sample()
    assert Profile.from_json(profile.to_json()) == profile
    assert Profile.from_dict(json.loads(profile.to_json())).smtp.limits == {"recipients_per_day": 500}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"smtp": null}',
        '{"address": "a@example.com", "smtp": {"host": "h"}}',
        '{"address": "a@example.com", "smtp": "smtps://x"}',
        '{"address": "a@x.com", "smtp": {"host": "h", "port": 1, "security": "maybe", "source": "guess"}}',
        '{"address": "a@x.com", "smtp": {"host": "h", "port": 1, "security": "tls", "source": "dream"}}',
        '{"address": "a@example.com", "attempts": [{"protocol": "smtp"}]}',
        '{"address": "a@example.com", "attempts": [1]}',
        '{"address": "a@example.com", "attempts": [], "created": "yesterday"}',
        '{"address": "a@example.com\\r\\nRCPT"}',
    ],
)
def test_malformed_profiles_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        Profile.from_json(text)


def attempt(outcome: str, detail: str = "", port: int = 465, security: Security = Security.TLS) -> Attempt:
    return Attempt(Protocol.SMTP, "smtp.example.com", port, security, outcome, 0.1, detail)


def test_failure_explains_why() -> None:
    plain = Profile("a@example.com", attempts=(attempt("refused"), attempt("no-starttls", port=587)))
    error = plain.failure("smtp")
    assert isinstance(error, SecurityError) and "allow_insecure=True" in str(error)
    assert "smtp.example.com:587" in str(error)
    bad_cert = attempt("tls-error", "certificate verification failed: Hostname mismatch")
    assert isinstance(Profile("a@example.com", attempts=(bad_cert,)).failure("smtp"), CertificateError)
    broken = Profile("a@example.com", attempts=(attempt("tls-error", "STARTTLS upgrade failed"),))
    error = broken.failure("smtp")
    assert isinstance(error, TLSError) and not isinstance(error, CertificateError)
    assert isinstance(Profile("a@example.com", attempts=(attempt("timeout"),)).failure("smtp"), TimeoutError)
    assert isinstance(Profile("a@example.com", attempts=(attempt("refused"),)).failure("smtp"), ConnectError)
    latched = attempt("skipped", "weaker than the latched security (tls)", 587, Security.STARTTLS)
    assert isinstance(
        Profile("a@example.com", attempts=(latched, attempt("refused"))).failure("smtp"), SecurityError
    )
    assert sample().failure("smtp") is None
    unresolved = Profile("a@example.com", attempts=(attempt("skipped", "host does not resolve"),))
    error = unresolved.failure("smtp")
    assert isinstance(error, ConnectError) and "resolves (smtp.example.com)" in str(error)


# --- cache and latch ---


def test_cache_save_load_private_and_per_address(tmp_path: Path) -> None:
    cache = ProfileCache(tmp_path / "c")
    path = cache.save("Alice@Example.com", sample(), {Protocol.SMTP: Security.TLS})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "alice" not in path.name.lower()
    entry = cache.load("alice@example.com")
    assert entry is not None and entry.profile == sample()
    assert entry.latch == {Protocol.SMTP: Security.TLS}
    assert cache.load("bob@example.com") is None
    cache.forget("alice@example.com")
    assert cache.load("alice@example.com") is None


def test_expired_profile_keeps_its_latch(tmp_path: Path) -> None:
    cache = ProfileCache(tmp_path, ttl=60)
    cache.save("alice@example.com", sample(), {Protocol.IMAP: Security.STARTTLS})
    entry = cache.load("alice@example.com", now=time.time() + 3600)
    assert entry is not None and entry.profile is None
    assert entry.latch == {Protocol.IMAP: Security.STARTTLS}


@pytest.mark.parametrize(
    "content",
    ["{", "[]", '{"format": 99}', '{"format": 1, "address": "mallory@example.com", "profile": null}',
     '{"format": 1, "address": "alice@example.com", "latch": {"smtp": "bogus"}}',
     '{"format": 1, "address": "alice@example.com", "profile": {"address": "x", "smtp": 5}}'],
)  # fmt: skip
def test_corrupt_cache_is_ignored(tmp_path: Path, content: str) -> None:
    cache = ProfileCache(tmp_path)
    cache.path("alice@example.com").write_text(content, encoding="utf-8")
    assert cache.load("alice@example.com") is None


def test_cache_ttl_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        ProfileCache(tmp_path, ttl=0)
