"""What discovery found: per protocol the chosen endpoint, its source, and every attempt made.

Rule: a Profile is a plain value that round-trips through JSON in the shape INTERFACE.md fixes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from ..config import Endpoint, Protocol, Security
from ..errors import ConfigError

__all__ = ["OUTCOMES", "SOURCES", "Attempt", "Choice", "Profile"]

SOURCES = ("settings", "cache", "provider", "autoconfig", "srv", "mx", "guess")
OUTCOMES = ("ok", "refused", "timeout", "tls-error", "no-starttls", "auth-failed", "skipped")


@dataclass(frozen=True)
class Choice:
    """The endpoint chosen for one protocol and how much we know about it."""

    endpoint: Endpoint
    source: str
    verified: bool = False
    auth_mechanisms: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"unknown profile source {self.source!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.endpoint.host,
            "port": self.endpoint.port,
            "security": self.endpoint.security.value,
            "source": self.source,
            "verified": self.verified,
            "auth_mechanisms": list(self.auth_mechanisms),
        }

    @classmethod
    def from_dict(cls, protocol: Protocol, data: dict[str, Any]) -> Choice:
        try:
            endpoint = Endpoint(protocol, data["host"], int(data["port"]), Security(data["security"]))
            return cls(
                endpoint,
                str(data["source"]),
                bool(data.get("verified", False)),
                tuple(str(m) for m in data.get("auth_mechanisms", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
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

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ConfigError(f"unknown attempt outcome {self.outcome!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol.value,
            "host": self.host,
            "port": self.port,
            "security": self.security.value,
            "outcome": self.outcome,
            "seconds": round(self.seconds, 4),
            "detail": self.detail,
        }

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
            )
        except (KeyError, TypeError, ValueError) as exc:
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

    def choice(self, protocol: Protocol) -> Choice | None:
        chosen: Choice | None = getattr(self, Protocol(protocol).value)
        return chosen

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            **{p.value: (c.to_dict() if (c := self.choice(p)) else None) for p in Protocol},
            "attempts": [a.to_dict() for a in self.attempts],
            "created": self.created,
        }

    def to_json(self, **dumps_options: Any) -> str:
        return json.dumps(self.to_dict(), **dumps_options)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        if not isinstance(data, dict) or "address" not in data:
            raise ConfigError("a profile must be a JSON object with an 'address'")
        choices = {
            p.value: Choice.from_dict(p, data[p.value]) if data.get(p.value) else None
            for p in Protocol
        }
        return cls(
            address=str(data["address"]),
            attempts=tuple(Attempt.from_dict(a) for a in data.get("attempts", ())),
            created=float(data.get("created", time.time())),
            **choices,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Profile:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"profile is not valid JSON: {exc}") from None
        return cls.from_dict(data)
