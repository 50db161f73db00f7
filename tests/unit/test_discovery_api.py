"""The public discovery API: exported names and argument checks that fail before any I/O."""

from __future__ import annotations

import pytest

import mailkit
from mailkit.discovery import discover, discover_async
from mailkit.errors import ConfigError, SecurityError


def test_exported() -> None:
    for name in ("discover", "discover_async", "Profile", "Choice", "Attempt"):
        assert name in mailkit.__all__
    assert mailkit.discover is discover and mailkit.discover_async is discover_async


@pytest.mark.parametrize(
    ("address", "options", "error"),
    [
        ("not an address", {}, ConfigError),
        ("alice@example.test", {}, ConfigError),  # special-use domain without test_environment
        ("alice@example.com\r\nRCPT TO:<x>", {}, ConfigError),
        ("alice@example.com", {"endpoints": {"smtp": "smtp+insecure://smtp.example.com"}}, SecurityError),
        ("alice@example.com", {"endpoints": {"smtp": "imaps://imap.example.com"}}, ConfigError),
        ("alice@example.com", {"nameserver": "dns.example.com"}, ConfigError),
        ("alice@example.com", {"resolve": ["smtp.example.com"]}, ConfigError),
        ("alice@example.com", {"stagger": -1}, ConfigError),
        ("alice@example.com", {"user": "alice\nA1 LOGOUT"}, ConfigError),
        ("alice@example.com", {"protocols": ["nntp"]}, ConfigError),
    ],
)
async def test_bad_arguments_fail_before_io(
    address: str, options: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await discover_async(address, None, cache=False, **options)  # type: ignore[arg-type]


async def test_password_with_line_break_is_refused() -> None:
    with pytest.raises(ConfigError):
        await discover_async("alice@example.com", "pw\r\nQUIT", cache=False)


def test_sync_face_raises_the_same() -> None:
    with pytest.raises(ConfigError):
        discover("not an address")
