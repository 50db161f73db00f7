"""Timeouts and credentials: validation and secret redaction."""

import asyncio

import pytest

from mailkit import ConfigError, OAuth2, Password, Timeouts
from mailkit.config import check_line_safe


def test_timeouts_have_real_defaults():
    timeouts = Timeouts()
    assert timeouts.connect and timeouts.connect > 0
    assert timeouts.command and timeouts.command > 0
    assert timeouts.data and timeouts.data >= 300  # RFC 5321 allows 10 minutes after DATA


@pytest.mark.parametrize("bad", [0, -1, True])
def test_timeouts_reject_non_positive(bad):
    with pytest.raises(ConfigError, match="timeout 'command'"):
        Timeouts(command=bad)


def test_none_means_no_limit_only_when_asked():
    assert Timeouts(command=None).command is None


def test_uniform_timeout_keeps_data_long():
    t = Timeouts.uniform(3)
    assert (t.connect, t.command) == (3, 3)
    assert t.data == Timeouts().data


def test_password_repr_hides_secret():
    cred = Password("alice@example.com", "hunter2-secret")
    assert "hunter2" not in repr(cred)
    assert "***" in repr(cred)
    assert "hunter2" not in str(cred)


def test_oauth2_repr_hides_provider_and_token_is_fetched_each_time():
    tokens = iter(["tok-1", "tok-2"])
    cred = OAuth2("alice@example.com", lambda: next(tokens))
    assert "tok-" not in repr(cred) and "lambda" not in repr(cred)
    assert asyncio.run(cred.token()) == "tok-1"
    assert asyncio.run(cred.token()) == "tok-2"


def test_oauth2_accepts_async_provider():
    async def provider() -> str:
        return "async-token"

    assert asyncio.run(OAuth2("a@example.com", provider).token()) == "async-token"


def test_oauth2_token_with_newline_is_rejected():
    cred = OAuth2("a@example.com", lambda: "tok\r\nQUIT")
    with pytest.raises(ConfigError, match="CR, LF or NUL") as info:
        asyncio.run(cred.token())
    assert "tok" not in str(info.value).replace("token", "")


@pytest.mark.parametrize("bad", ["a\rb", "a\nb", "a\x00b"])
def test_user_and_password_reject_line_breaks(bad):
    with pytest.raises(ConfigError):
        Password(bad, "pw")
    with pytest.raises(ConfigError, match="password must not contain") as info:
        Password("user", "secret" + bad)
    assert "secret" not in str(info.value)


def test_check_line_safe_passes_clean_text_through():
    assert check_line_safe("Grüße, Welt", "subject") == "Grüße, Welt"
