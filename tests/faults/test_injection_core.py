"""Property tests: CR, LF or NUL anywhere in a string that can reach a protocol line is refused with a
ConfigError before any I/O, for every public entry point of the core (settings, endpoints, credentials).
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailkit import errors
from mailkit.account import AccountSettings, AsyncAccount, settings_from_env
from mailkit.config import Endpoint, OAuth2, Password, Protocol, Security, check_line_safe

pytestmark = pytest.mark.faults

SEEDED = settings(settings.get_profile("faults"), max_examples=150)

BREAKS = st.sampled_from(["\r", "\n", "\x00", "\r\n"])
SAFE_TEXT = st.text(st.characters(blacklist_characters="\r\n\x00"), max_size=30)


@st.composite
def with_break(draw: st.DrawFn, base: st.SearchStrategy[str] = SAFE_TEXT) -> str:
    """Safe text with a line break (or NUL) inserted somewhere: start, middle or end."""
    head = draw(base)
    tail = draw(base)
    return head + draw(BREAKS) + tail


SMUGGLED = with_break()


@SEEDED
@given(SMUGGLED)
def test_check_line_safe_rejects_every_line_break(value: str) -> None:
    with pytest.raises(errors.ConfigError):
        check_line_safe(value, "value")


@SEEDED
@given(SAFE_TEXT)
def test_check_line_safe_returns_safe_text_unchanged(value: str) -> None:
    assert check_line_safe(value, "value") is value


@SEEDED
@given(SMUGGLED, st.sampled_from(["imaps", "smtp+starttls", "pop3+insecure"]))
def test_endpoint_urls_with_line_breaks_are_rejected(junk: str, scheme: str) -> None:
    for url in (f"{scheme}://{junk}", f"{scheme}://{junk}@mail.example.test", f"{scheme}://h:1{junk}"):
        with pytest.raises(errors.ConfigError):
            Endpoint.parse(url)


@SEEDED
@given(SMUGGLED)
def test_endpoint_user_and_host_with_line_breaks_are_rejected(junk: str) -> None:
    with pytest.raises(errors.ConfigError):
        Endpoint(Protocol.IMAP, "mail.example.test", 993, Security.TLS, user=junk)
    with pytest.raises(errors.ConfigError):
        Endpoint(Protocol.IMAP, junk, 993, Security.TLS)


def test_percent_encoded_line_break_in_the_url_user_is_rejected() -> None:
    # unquote() runs after the raw check: the decoded user must be checked too.
    for encoded in ("%0d%0a", "%0A", "%00"):
        with pytest.raises(errors.ConfigError):
            Endpoint.parse(f"imaps://alice{encoded}A1%20LOGOUT@mail.example.test")


@SEEDED
@given(SMUGGLED)
def test_credentials_with_line_breaks_are_rejected(junk: str) -> None:
    with pytest.raises(errors.ConfigError):
        Password(junk, "pw")
    with pytest.raises(errors.ConfigError):
        Password("alice", junk)
    with pytest.raises(errors.ConfigError):
        OAuth2(junk, lambda: "token")


@SEEDED
@given(SMUGGLED)
def test_oauth2_tokens_with_line_breaks_are_rejected_sync_and_async(junk: str) -> None:
    async def async_provider() -> str:
        return junk

    for provider in (lambda: junk, async_provider):
        with pytest.raises(errors.ConfigError):
            asyncio.run(OAuth2("alice", provider).token())


@SEEDED
@given(SMUGGLED)
def test_account_arguments_with_line_breaks_are_rejected(junk: str) -> None:
    with pytest.raises(errors.ConfigError):
        AccountSettings(address=f"alice{junk}@example.test", test_environment=True)
    for kwargs in ({"password": junk}, {"user": junk, "password": "pw"}):
        with pytest.raises(errors.ConfigError):
            AsyncAccount("alice@example.test", test_environment=True, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(errors.ConfigError):
        AsyncAccount("alice@example.test", oauth2=lambda: "t", user=junk, test_environment=True)


@SEEDED
@given(SMUGGLED)
def test_environment_values_with_line_breaks_are_rejected(junk: str) -> None:
    env = {"MAILKIT_ADDRESS": "alice@example.test", "MAILKIT_PASSWORD": junk, "MAILKIT_TEST_ENVIRONMENT": "1"}
    with pytest.raises(errors.ConfigError):
        AsyncAccount.from_env(env)
    env = {"MAILKIT_ADDRESS": f"alice{junk}@example.test", "MAILKIT_TEST_ENVIRONMENT": "1"}
    with pytest.raises(errors.ConfigError):
        AsyncAccount.from_env(env)
    assert settings_from_env({"MAILKIT_ADDRESS": "a@b.test", "MAILKIT_IMAP": ""}) == {"address": "a@b.test"}
