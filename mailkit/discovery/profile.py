"""What discovery found: per protocol the chosen endpoint, its source, and every attempt made.

Rule: a Profile is a plain value that round-trips through JSON in the shape INTERFACE.md fixes;
optional keys (``user``, ``oauth2``, ``limits``, ``provider``) appear only when they say something.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..config import Endpoint, Protocol, Security, check_line_safe
from ..errors import (
    CertificateError,
    ConfigError,
    ConnectError,
    MailkitError,
    SecurityError,
    TimeoutError,
    TLSError,
)

__all__ = ["OUTCOMES", "SOURCES", "Attempt", "Choice", "Profile"]

SOURCES = ("settings", "cache", "provider", "autoconfig", "srv", "mx", "guess")
OUTCOMES = ("ok", "refused", "timeout", "tls-error", "no-starttls", "auth-failed", "skipped")


@dataclass(frozen=True)
class Choice:
    """The endpoint chosen for one protocol and how much we know about it."""

    endpoint: Endpoint
    source: str
    verified: bool = False  # True only after a real login succeeded on it
    auth_mechanisms: tuple[str, ...] = ()
    oauth2: bool = False  # the provider prefers (or requires) OAuth2 over passwords
    limits: Mapping[str, int | str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"unknown profile source {self.source!r}")
        for mechanism in self.auth_mechanisms:
            check_line_safe(mechanism, "auth mechanism")
        object.__setattr__(self, "limits", MappingProxyType(dict(self.limits)))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "host": self.endpoint.host,
            "port": self.endpoint.port,
            "security": self.endpoint.security.value,
            "source": self.source,
            "verified": self.verified,
            "auth_mechanisms": list(self.auth_mechanisms),
        }
        if self.endpoint.user is not None:
            data["user"] = self.endpoint.user
        if self.oauth2:
            data["oauth2"] = True
        if self.limits:
            data["limits"] = dict(self.limits)
        return data

    @classmethod
    def from_dict(cls, protocol: Protocol, data: dict[str, Any]) -> Choice:
        try:
            user = data.get("user")
            endpoint = Endpoint(
                protocol,
                data["host"],
                int(data["port"]),
                Security(data["security"]),
                None if user is None else str(user),
            )
            limits = data.get("limits") or {}
            if not isinstance(limits, dict):
                raise TypeError("limits must be an object")
            return cls(
                endpoint,
                str(data["source"]),
                bool(data.get("verified", False)),
                tuple(str(m) for m in data.get("auth_mechanisms", ())),
                bool(data.get("oauth2", False)),
                {str(k): v if isinstance(v, int) else str(v) for k, v in limits.items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"malformed {protocol.value} entry in profile: {exc}") from None


@dataclass(frozen=True)
class Attempt:
    """One probe of one candidate endpoint."""

    protocol: Protocol
    host: str
    port: int
    security: Security
    outcome: str
    seconds: float
    detail: str = ""
    source: str = ""  # which source suggested the candidate ("" when unknown)

    def __post_init__(self) -> None:
        object.__setattr__(self, "protocol", Protocol(self.protocol))
        object.__setattr__(self, "security", Security(self.security))
        # Stored as JSON shows it, so that a profile equals its own round trip.
        object.__setattr__(self, "seconds", round(float(self.seconds), 4))
        if self.outcome not in OUTCOMES:
            raise ConfigError(f"unknown attempt outcome {self.outcome!r}")
        if self.source and self.source not in SOURCES:
            raise ConfigError(f"unknown attempt source {self.source!r}")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "protocol": self.protocol.value,
            "host": self.host,
            "port": self.port,
            "security": self.security.value,
            "outcome": self.outcome,
            "seconds": self.seconds,
            "detail": self.detail,
        }
        if self.source:
            data["source"] = self.source
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Attempt:
        try:
            return cls(
                Protocol(data["protocol"]),
                str(data["host"]),
                int(data["port"]),
                Security(data["security"]),
                str(data["outcome"]),
                float(data["seconds"]),
                str(data.get("detail", "")),
                str(data.get("source", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"malformed attempt in profile: {exc}") from None


@dataclass(frozen=True)
class Profile:
    """Endpoints for one address. ``Account(address, profile=profile)`` uses it without probing."""

    address: str
    smtp: Choice | None = None
    imap: Choice | None = None
    pop3: Choice | None = None
    attempts: tuple[Attempt, ...] = ()
    created: float = field(default_factory=time.time)
    provider: str | None = None  # name in the built-in provider table, when the domain is known

    def __post_init__(self) -> None:
        check_line_safe(self.address, "address")
        for protocol in Protocol:
            chosen = self.choice(protocol)
            if chosen is not None and chosen.endpoint.protocol is not protocol:
                raise ConfigError(f"{chosen.endpoint.url} given as the {protocol.value} choice")
        object.__setattr__(self, "attempts", tuple(self.attempts))

    def choice(self, protocol: Protocol | str) -> Choice | None:
        chosen: Choice | None = getattr(self, Protocol(protocol).value)
        return chosen

    @property
    def found(self) -> bool:
        """At least one protocol has a working endpoint."""
        return any(self.choice(p) is not None for p in Protocol)

    def failure(self, protocol: Protocol | str) -> MailkitError | None:
        """Why ``protocol`` has no endpoint, as the error to raise (``None`` if it has one)."""
        protocol = Protocol(protocol)
        if self.choice(protocol) is not None:
            return None
        tried = [a for a in self.attempts if a.protocol is protocol]
        outcomes = {a.outcome for a in tried}
        where = f"no working {protocol.value} server found for {self.address}"
        if "no-starttls" in outcomes and not outcomes & {"ok", "auth-failed", "tls-error"}:
            hosts = sorted({f"{a.host}:{a.port}" for a in tried if a.outcome == "no-starttls"})
            return SecurityError(
                f"{where}: {', '.join(hosts)} offer(s) only plaintext (no STARTTLS); "
                "pass allow_insecure=True (or --allow-insecure / MAILKIT_ALLOW_INSECURE=1) "
                "to permit an unencrypted connection"
            )
        if "tls-error" in outcomes:
            bad = next(a for a in tried if a.outcome == "tls-error")
            kind = CertificateError if "certificate" in bad.detail else TLSError
            return kind(f"{where}: TLS failed ({bad.host}:{bad.port}: {bad.detail})")
        if outcomes and outcomes <= {"timeout"}:
            return TimeoutError(f"{where}: every candidate timed out")
        if not tried:
            return ConnectError(f"{where}: no candidate to try")
        if all(a.outcome == "skipped" and "does not resolve" in a.detail for a in tried):
            names = ", ".join(dict.fromkeys(a.host for a in tried))
            return ConnectError(f"{where}: no candidate host name resolves ({names})")
        latched = [a for a in tried if a.outcome == "skipped" and "latched" in a.detail]
        if latched and not outcomes - {"skipped", "refused", "timeout"}:
            return SecurityError(f"{where}: {latched[0].detail}")
        return ConnectError(f"{where}: {len(tried)} candidate(s) tried, none worked")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "address": self.address,
            **{p.value: (c.to_dict() if (c := self.choice(p)) else None) for p in Protocol},
            "attempts": [a.to_dict() for a in self.attempts],
            "created": self.created,
        }
        if self.provider is not None:
            data["provider"] = self.provider
        return data

    def to_json(self, **dumps_options: Any) -> str:
        return json.dumps(self.to_dict(), **dumps_options)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        if not isinstance(data, dict) or "address" not in data:
            raise ConfigError("a profile must be a JSON object with an 'address'")
        choices = {
            p.value: Choice.from_dict(p, data[p.value]) if data.get(p.value) else None for p in Protocol
        }
        try:
            attempts = tuple(Attempt.from_dict(a) for a in data.get("attempts", ()))
            created = float(data.get("created", time.time()))
        except (TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"malformed profile: {exc}") from None
        provider = data.get("provider")
        return cls(
            address=str(data["address"]),
            attempts=attempts,
            created=created,
            provider=None if provider is None else str(provider),
            **choices,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Profile:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"profile is not valid JSON: {exc}") from None
        return cls.from_dict(data)
