"""Find the best working SMTP, IMAP and POP3 endpoints for an address (see docs/discovery.md)."""

from __future__ import annotations

from .profile import Attempt, Choice, Profile

__all__ = ["Attempt", "Choice", "Profile", "discover", "discover_async"]


async def discover_async(address: str, password: str | None = None, **options: object) -> Profile:
    """Placeholder until discovery lands: explicit endpoints are required."""
    from ..errors import ConfigError

    raise ConfigError(
        f"no endpoints given for {address} and automatic discovery is not available yet; "
        "pass smtp=/imap=/pop3= endpoint URLs"
    )


def discover(address: str, password: str | None = None, **options: object) -> Profile:
    import asyncio

    return asyncio.run(discover_async(address, password, **options))
