"""Secrets never leave through reprs, logs or exception texts (property tests over passwords)."""

from __future__ import annotations

import base64
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailkit import errors
from mailkit._log import log_received, log_sent, redact_command
from mailkit.account import AsyncAccount
from mailkit.config import OAuth2, Password

pytestmark = pytest.mark.faults

SEEDED = settings(settings.get_profile("faults"), max_examples=200)

# Passwords as users type them: any printable text without line breaks, at least 4 characters, with
# a marker so "is the secret in this text?" cannot match by accident (e.g. a password "A").
PASSWORDS = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r\n\x00"), min_size=1, max_size=40
).map(lambda s: f"Zq{s}")
ATOMS = st.text(st.characters(whitelist_categories=("Ll", "Lu", "Nd")), min_size=1, max_size=12)


def imap_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@SEEDED
@given(PASSWORDS, ATOMS)
def test_pop3_pass_and_apop_are_redacted(password: str, user: str) -> None:
    assert redact_command(f"PASS {password}\r\n") == "PASS ***"
    assert redact_command(f"pass {password}") == "pass ***"
    assert redact_command(f"APOP {user} {password}".encode()) == f"APOP {user} ***"


@SEEDED
@given(PASSWORDS, ATOMS, ATOMS)
def test_imap_login_is_redacted_for_atom_and_quoted_user_names(password: str, user: str, tag: str) -> None:
    for user_arg in (user, imap_quote(user + " x"), imap_quote(f'{user}"')):
        for password_arg in (password, imap_quote(password)):
            line = f"{tag} LOGIN {user_arg} {password_arg}\r\n"
            assert redact_command(line) == f"{tag} LOGIN {user_arg} ***"


@SEEDED
@given(PASSWORDS, ATOMS, st.sampled_from(["PLAIN", "XOAUTH2", "OAUTHBEARER", "LOGIN"]))
def test_sasl_initial_responses_are_redacted(password: str, tag: str, mechanism: str) -> None:
    payload = base64.b64encode(f"\0alice\0{password}".encode()).decode()
    assert redact_command(f"AUTH {mechanism} {payload}\r\n") == f"AUTH {mechanism} ***"
    imap = f"{tag} AUTHENTICATE {mechanism}"
    assert redact_command(f"{imap} {payload}") == f"{imap} ***"


@SEEDED
@given(password=PASSWORDS)
def test_secret_lines_are_never_logged(password: str, caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("mailkit.test.secrets")
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        b64 = base64.b64encode(password.encode()).decode()
        log_sent(logger, b64, secret=True)  # a SASL continuation line
        log_sent(logger, f"PASS {password}")
        log_sent(logger, f"a1 LOGIN alice {imap_quote(password)}".encode())
        log_received(logger, b"+OK logged in\r\n")
    text = caplog.text
    assert password not in text and b64 not in text
    assert text.count("***") == 3
    assert "S: +OK logged in" in text


@SEEDED
@given(PASSWORDS, ATOMS)
def test_reprs_never_show_secrets(password: str, user: str) -> None:
    assert repr(Password(user, password)) == f"Password(user={user!r}, password='***')"
    token_repr = repr(OAuth2(user, lambda: password))
    assert token_repr == f"OAuth2(user={user!r}, token_provider='***')"
    account = AsyncAccount("alice@example.test", password=password, test_environment=True)
    assert password not in repr(account)
    assert password not in repr(account.settings)
    assert password not in str(vars(account.settings))


def test_rejected_password_is_not_quoted_in_the_error() -> None:
    secret = "Hunter2-very-secret"
    for bad in (f"{secret}\r\n", f"{secret}\x00", f"\n{secret}"):
        with pytest.raises(errors.ConfigError) as info:
            Password("alice", bad)
        assert secret not in str(info.value)
        with pytest.raises(errors.ConfigError) as info:
            AsyncAccount("alice@example.test", password=bad, test_environment=True)
        assert secret not in str(info.value)


async def test_rejected_token_is_not_quoted_in_the_error() -> None:
    secret = "ya29.A0ARrdaM-token"
    with pytest.raises(errors.ConfigError) as info:
        await OAuth2("alice", lambda: secret + "\r\n").token()
    assert secret not in str(info.value)
