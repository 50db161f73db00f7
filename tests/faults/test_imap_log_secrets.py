"""No password in any log record, with every logger at DEBUG: mailkit's, imapclient's and imaplib's.

Real Dovecot, over implicit TLS (993) and STARTTLS (143), logging in with LOGIN and with
AUTHENTICATE PLAIN; imapclient logs its own protocol lines (``imapclient``, ``imapclient.imaplib``),
so these tests read every record that reaches the root logger, not only mailkit's.
"""

from __future__ import annotations

import base64
import logging

import pytest

import mailkit
from mailkit.imap._guarded import GuardedIMAPClient
from tests.faults.scripted import secret_forms
from tests.integration.mailstack import MailStack

USERS = {"alice@example.test": "alicepw", "dave@example.test": "pässwörd"}
SCHEMES = {"imaps": "imaps_port", "imap+starttls": "imap_port"}


@pytest.fixture(scope="module")
def stack(mailstack: MailStack) -> MailStack:
    return mailstack


@pytest.fixture
def every_logger_at_debug(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Root and every logger known so far at DEBUG (caplog restores the levels afterwards)."""
    import imapclient.imapclient  # noqa: F401 - its loggers exist before the levels are set

    caplog.set_level(logging.DEBUG)
    for name in ("mailkit", "imapclient", *logging.root.manager.loggerDict):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def text_forms(user: str, password: str) -> list[str]:
    """What would betray the password in a log line: the text, how bytes print, base64 payloads."""
    forms = {password, repr(password.encode())[2:-1], password.encode().decode("latin-1")}
    forms |= {f.decode("ascii") for f in secret_forms(user, password)[1:]}
    # SASL PLAIN without an authorization identity, as imapclient sends it
    forms.add(base64.b64encode(f"\0{user}\0{password}".encode()).decode())
    return sorted(forms)


def without_auth_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide AUTH=PLAIN from the session, so that it logs in with LOGIN (the server still offers both)."""
    original = GuardedIMAPClient.capabilities

    def capabilities(self: GuardedIMAPClient) -> tuple[bytes, ...]:
        return tuple(c for c in original(self) if c.upper() != b"AUTH=PLAIN")

    monkeypatch.setattr(GuardedIMAPClient, "capabilities", capabilities)


def record_texts(records: list[logging.LogRecord]) -> list[str]:
    handler = logging.Handler()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    out = []
    for record in records:
        out.append(handler.format(record))
        out.append(repr(record.args) + repr(record.msg))
    return out


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
@pytest.mark.parametrize("mechanism", ["LOGIN", "AUTHENTICATE PLAIN"])
@pytest.mark.parametrize("user", sorted(USERS))
def test_no_password_in_any_log_record(
    stack: MailStack,
    every_logger_at_debug: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    scheme: str,
    mechanism: str,
    user: str,
) -> None:
    caplog, password = every_logger_at_debug, USERS[user]
    if mechanism == "LOGIN":
        without_auth_plain(monkeypatch)
    url = f"{scheme}://{stack.host}:{getattr(stack, SCHEMES[scheme])}"
    account = mailkit.Account(
        user, password=password, imap=url, ca_file=str(stack.ca_file), test_environment=True
    )
    error: mailkit.MailkitError | None = None
    with account as acct:
        try:
            with acct.imap() as imap:
                assert any(f.name == "INBOX" for f in imap.folders())
        except mailkit.AuthenticationError as exc:
            error = exc
    if mechanism == "LOGIN" and not password.isascii():
        # LOGIN cannot carry it: refused before anything is sent, and the reason says why
        assert error is not None and "AUTHENTICATE PLAIN" in str(error)
    else:
        assert error is None, error
        sent = [r for r in caplog.records if r.name.startswith("imapclient")]
        verb = "LOGIN" if mechanism == "LOGIN" else "AUTHENTICATE"
        assert any(verb in r.getMessage() for r in sent), (
            "imapclient logged no login line: nothing was tested"
        )
    texts = [*record_texts(caplog.records), str(error), repr(error)]
    for form in text_forms(user, password):
        leaks = [t for t in texts if form in t]
        assert not leaks, f"{form!r} in a log record: {leaks[0][:300]}"
