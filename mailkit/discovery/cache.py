"""The on-disk profile cache, one JSON file per address, and the downgrade latch stored with it.

Rule: a cached profile is only a first candidate (it is probed like any other, so a dead entry
just falls through to full discovery) and expires; the latch does not expire: once an address
reached a security level for a protocol, later automatic discovery refuses anything weaker until
discovery is run again explicitly (``refresh=True``, ``mailkit discover``). A corrupt file is
ignored with a warning, never fatal; writes are atomic and private (0600).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Protocol, Security
from ..errors import ConfigError
from .profile import Profile

__all__ = ["DEFAULT_TTL", "CacheEntry", "ProfileCache", "default_cache_dir"]

log = logging.getLogger("mailkit.discovery")

DEFAULT_TTL = 7 * 24 * 3600.0
_FORMAT = 1


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mailkit" / "profiles"


@dataclass(frozen=True)
class CacheEntry:
    profile: Profile | None  # None when the saved profile expired
    latch: dict[Protocol, Security] = field(default_factory=dict)
    saved: float = 0.0


class ProfileCache:
    def __init__(self, directory: str | os.PathLike[str] | None = None, *, ttl: float = DEFAULT_TTL) -> None:
        if ttl <= 0:
            raise ConfigError(f"cache ttl must be positive, not {ttl!r}")
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.ttl = ttl

    def path(self, address: str) -> Path:
        # Hashed: the address is personal data and may hold characters unfit for file names.
        digest = hashlib.sha256(address.strip().lower().encode("utf-8")).hexdigest()[:32]
        return self.directory / f"{digest}.json"

    def load(self, address: str, *, now: float | None = None) -> CacheEntry | None:
        path = self.path(address)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read cached profile %s: %s", path, exc.strerror)
            return None
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("format") != _FORMAT:
                raise ValueError("unknown cache format")
            if str(data.get("address", "")).lower() != address.strip().lower():
                raise ValueError("cache file is for another address")
            latch = {Protocol(k): Security(v) for k, v in dict(data.get("latch") or {}).items()}
            saved = float(data.get("saved", 0.0))
            profile = Profile.from_dict(data["profile"]) if data.get("profile") else None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("ignoring corrupt cached profile %s: %s", path, exc)
            return None
        current = time.time() if now is None else now
        if profile is not None and not 0 <= current - saved <= self.ttl:
            profile = None
        return CacheEntry(profile, latch, saved)

    def save(self, address: str, profile: Profile | None, latch: dict[Protocol, Security]) -> Path:
        path = self.path(address)
        data = {
            "format": _FORMAT,
            "address": address,
            "saved": time.time(),
            "latch": {p.value: s.value for p, s in sorted(latch.items())},
            "profile": profile.to_dict() if profile is not None else None,
        }
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".profile-", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return path

    def forget(self, address: str) -> None:
        """Remove the cached profile and its latch."""
        with contextlib.suppress(FileNotFoundError):
            self.path(address).unlink()
