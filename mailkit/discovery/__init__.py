"""Find the best working SMTP, IMAP and POP3 endpoints for an address (see docs/discovery.md).

Rule: ``discover_async`` is the one implementation; ``discover`` runs it on a private portal loop
(so it also works when the caller's thread already runs an event loop).
"""

from __future__ import annotations

from typing import Any

from .cache import ProfileCache
from .engine import DiscoveryStats, discover_async
from .profile import Attempt, Choice, Profile

__all__ = [
    "Attempt",
    "Choice",
    "DiscoveryStats",
    "Profile",
    "ProfileCache",
    "discover",
    "discover_async",
]


def discover(address: str, password: str | None = None, **options: Any) -> Profile:
    """Blocking ``discover_async``: same arguments, same result."""
    from .._portal import Portal

    portal = Portal()
    try:
        return portal.call(discover_async(address, password, **options))
    finally:
        portal.close()
