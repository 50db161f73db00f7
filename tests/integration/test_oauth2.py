"""OAuth2 (XOAUTH2 and OAUTHBEARER) end to end against the real stack, for IMAP, POP3 and SMTP.

Dovecot validates the bearer tokens itself (HS256 JWTs signed with the key ``scripts/mailstack up``
made, see ``oauth2_tokens.py``); Postfix's submission ports ask Dovecot over its SASL socket. Which
mechanism a login really used is read from the servers' own logs, not assumed.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import mailkit
from mailkit import _sasl
from mailkit.errors import AuthenticationError, MailkitError
from mailkit.imap import _session as imap_session
from mailkit.pop3 import client as pop3_client
from mailkit.smtp import _session as smtp_session
from tests.integration.mailstack import MailStack

ALICE, BOB, CAROL = "alice@example.test", "bob@example.test", "carol@example.test"
MECHANISMS = ("OAUTHBEARER", "XOAUTH2")

# Dovecot: "imap-login: Info: Login: user=<alice@example.test>, method=XOAUTH2, ..."
_DOVECOT_LOGIN = re.compile(r"(imap|pop3)-login: Info: Login: user=<([^>]+)>, method=([A-Z0-9-]+),")
# Postfix, once per connection: "disconnect from localhost[127.0.0.1] ehlo=1 auth=1 mail=1 ..."
_POSTFIX_AUTHED = re.compile(r"disconnect from \S+ .*\bauth=1\b")
# Postfix, once per message: "ABC123: client=localhost[127.0.0.1], sasl_method=XOAUTH2, sasl_username=..."
_POSTFIX_SASL = re.compile(r"client=\S+, sasl_method=([A-Z0-9-]+), sasl_username=(\S+)")


@pytest.fixture
def stack(clean_mailstack: MailStack) -> MailStack:
    if not clean_mailstack.has_oauth2:
        reason = (f"the stack at {clean_mailstack.root} was started before OAuth2 support: restart it "
                  "(scripts/mailstack down; scripts/mailstack up)")
        if os.environ.get("CI"):  # CI starts a fresh stack: there, a missing OAuth2 setup is a failure
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return clean_mailstack


class Tokens:
    """A token provider that counts its calls; every token is distinct (its own ``jti``)."""

    def __init__(self, stack: MailStack, user: str, **options: object) -> None:
        self.stack, self.user, self.options = stack, user, options
        self.issued: list[str] = []

    def __call__(self) -> str:
        token = self.stack.oauth2_token(self.user, jti=f"t{len(self.issued)}", **self.options)  # type: ignore[arg-type]
        self.issued.append(token)
        return token

    @property
    def calls(self) -> int:
        return len(self.issued)


class ServerLogs:
    """What Dovecot and Postfix log from now on (this stack instance is ours alone)."""

    def __init__(self, stack: MailStack) -> None:
        self.paths = {name: stack.root / "log" / f"{name}.log" for name in ("dovecot", "postfix")}
        # The servers log a moment after a session ends: lines of the previous test may still be
        # on their way. Start once the logs have been still for a while (bounded).
        self.start = self._sizes()
        deadline, still_since = time.monotonic() + 3, time.monotonic()
        while time.monotonic() - still_since < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
            if (sizes := self._sizes()) != self.start:
                self.start, still_since = sizes, time.monotonic()

    def _sizes(self) -> dict[str, int]:
        return {name: p.stat().st_size if p.exists() else 0 for name, p in self.paths.items()}

    def dovecot_text(self) -> str:
        return self._new("dovecot")

    def _new(self, name: str) -> str:
        with self.paths[name].open("rb") as f:
            f.seek(self.start[name])
            return f.read().decode("utf-8", "replace")

    def _wait(self, read: Callable[[], list[tuple[str, ...]]], count: int) -> list[tuple[str, ...]]:
        # The log processes write a moment after the session: poll, bounded.
        deadline = time.monotonic() + 10
        while len(found := read()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return found

    def logins(self, count: int) -> list[tuple[str, ...]]:
        """(service, user, method) of Dovecot's IMAP/POP3 logins, once ``count`` appeared."""
        return self._wait(lambda: _DOVECOT_LOGIN.findall(self._new("dovecot")), count)

    def smtp_messages(self, count: int) -> list[tuple[str, ...]]:
        """(method, user) Postfix logged for each message submitted with AUTH."""
        return self._wait(lambda: _POSTFIX_SASL.findall(self._new("postfix")), count)

    def smtp_connections(self, count: int) -> int:
        """Connections that authenticated, once ``count`` closed."""
        return len(self._wait(lambda: [(m,) for m in _POSTFIX_AUTHED.findall(self._new("postfix"))], count))


@pytest.fixture
def only(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """only("XOAUTH2"): mailkit's preference order, for all three protocols, is that mechanism alone."""

    def force(mechanism: str) -> None:
        # one preference order, shared by the three protocols
        assert _sasl.OAUTH_MECHANISMS == MECHANISMS  # the documented default
        for module in (imap_session, pop3_client, smtp_session):
            assert not hasattr(module, "OAUTH_MECHANISMS"), f"{module.__name__} keeps its own order"
        monkeypatch.setattr(_sasl, "OAUTH_MECHANISMS", (mechanism,))

    return force


def _raw(sender: str, to: str, subject: str) -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.test>\r\n"
            f"\r\nBody of {subject}.\r\n").encode()


def _account(stack: MailStack, user: str, tokens: Callable[[], object], **urls: str) -> mailkit.AsyncAccount:
    endpoints = {protocol: stack.url(name) for protocol, name in urls.items()}
    return mailkit.AsyncAccount(user, oauth2=tokens, ca_file=stack.ca_file, test_environment=True,  # type: ignore[arg-type]
                                **endpoints)


async def _read_inbox(
    stack: MailStack, user: str, tokens: Callable[[], object], endpoint: str = "imaps"
) -> list[bytes]:
    async with _account(stack, user, tokens, imap=endpoint) as acct, acct.imap("INBOX") as imap:
        uids = await imap.search()
        return [m.body async for m in imap.fetch(uids, body=True) if m.body is not None]


# --- each protocol, each mechanism, each security mode ---------------------------------------


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("endpoint", ["imaps", "imap"])  # implicit TLS; STARTTLS
async def test_imap_login_and_read(stack: MailStack, only: Callable[[str], None], endpoint: str,
                                   mechanism: str) -> None:
    only(mechanism)
    raw = _raw(BOB, ALICE, f"imap-{endpoint}-{mechanism}")
    stack.deliver(ALICE, raw)
    logs = ServerLogs(stack)
    tokens = Tokens(stack, ALICE)
    assert await _read_inbox(stack, ALICE, tokens, endpoint) == [raw]
    assert tokens.calls == 1
    assert logs.logins(1) == [("imap", ALICE, mechanism)]


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("endpoint", ["pop3s", "pop3"])  # implicit TLS; STLS
async def test_pop3_login_and_download(stack: MailStack, only: Callable[[str], None], tmp_path: Path,
                                       endpoint: str, mechanism: str) -> None:
    only(mechanism)
    raw = _raw(ALICE, CAROL, f"pop3-{endpoint}-{mechanism}")
    stack.deliver(CAROL, raw)
    logs = ServerLogs(stack)
    tokens = Tokens(stack, CAROL)
    async with _account(stack, CAROL, tokens, pop3=endpoint) as acct:
        report = await acct.pop3.download_and_delete(into=tmp_path / "Maildir")
    assert report.ok and len(report.downloaded) == 1 and len(report.deleted) == 1
    saved = [p.read_bytes() for p in (tmp_path / "Maildir" / "new").iterdir()]
    assert saved == [raw]
    assert stack.message_count(CAROL) == 0
    assert tokens.calls == 1
    assert logs.logins(1) == [("pop3", CAROL, mechanism)]


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("endpoint", ["submissions", "submission"])  # implicit TLS (465); STARTTLS (587)
async def test_smtp_login_send_and_read_back_over_imap(stack: MailStack, only: Callable[[str], None],
                                                      endpoint: str, mechanism: str) -> None:
    only(mechanism)
    logs = ServerLogs(stack)
    tokens = Tokens(stack, ALICE)
    async with _account(stack, ALICE, tokens, smtp=endpoint) as acct:
        result = await acct.send(to=BOB, subject=f"smtp {endpoint} {mechanism}", text="Sent with a token.\n")
    assert result.ok and result.accepted == (BOB,)
    assert tokens.calls == 1
    assert logs.smtp_messages(1) == [(mechanism, ALICE)]
    stack.wait_for_messages(BOB, 1)
    (raw,) = await _read_inbox(stack, BOB, Tokens(stack, BOB))
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"] == f"smtp {endpoint} {mechanism}"
    assert msg["Message-ID"] == result.message_id
    assert msg.get_content().strip() == "Sent with a token."  # type: ignore[attr-defined]


# --- refused tokens: a typed error with the server's reply, quickly, and no token anywhere --------

BAD_TOKENS: dict[str, dict[str, object]] = {
    "expired": {"expires_in": -60},
    "wrongly signed": {"key": b"not the stack's key, 32 bytes..."},
}
PROTOCOL = {"imaps": "imap", "pop3s": "pop3", "submissions": "smtp"}
EXPECTED_REPLY = {  # (protocol, code, text fragment)
    "imaps": ("imap", "NO", "AUTHENTICATIONFAILED"),
    "pop3s": ("pop3", "-ERR", "Authentication failed"),
    "submissions": ("smtp", 535, "authentication failed"),
}


def _secrets(token: str) -> Iterator[str]:
    """The token and the forms it travels in: its signature, and the SASL payloads in base64."""
    yield token
    yield token.rsplit(".", 1)[1]
    for payload in (f"user={ALICE}\x01auth=Bearer {token}\x01\x01", f"auth=Bearer {token}\x01\x01"):
        yield base64.b64encode(payload.encode()).decode()


def _texts(exc: BaseException | None) -> Iterator[str]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:  # the error and all it was raised from
        seen.add(id(exc))  # (a chain may loop: SMTP's open_session raises an error from itself)
        yield f"{exc!s} {exc!r} {exc.args!r}"
        exc = exc.__cause__ or exc.__context__


@pytest.mark.parametrize("case", BAD_TOKENS)
@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("endpoint", EXPECTED_REPLY)
async def test_a_refused_token_is_an_authentication_error_with_the_reply_and_no_token(
    stack: MailStack, only: Callable[[str], None], caplog: pytest.LogCaptureFixture,
    endpoint: str, mechanism: str, case: str,
) -> None:
    only(mechanism)
    caplog.set_level(logging.DEBUG)  # every logger: mailkit.*, imapclient, imapclient.imaplib, asyncio
    tokens = Tokens(stack, ALICE, **BAD_TOKENS[case])

    async def login() -> None:
        async with _account(stack, ALICE, tokens, **{PROTOCOL[endpoint]: endpoint}) as acct:
            if endpoint == "imaps":
                async with acct.imap() as imap:
                    await imap.folders()
            elif endpoint == "pop3s":
                await acct.pop3.stat()
            else:
                await acct.send(to=BOB, subject="never sent", text="x")

    started = time.monotonic()
    with pytest.raises(AuthenticationError) as info:
        await login()
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"a refused login took {elapsed:.1f}s"
    protocol, code, fragment = EXPECTED_REPLY[endpoint]
    reply = info.value.reply
    assert reply is not None and reply.protocol == protocol and reply.code == code, reply
    assert fragment.lower() in reply.text.lower(), reply
    assert tokens.calls == 1
    assert "C: AUTH" in caplog.text or "AUTHENTICATE" in caplog.text  # the exchange was logged ...
    texts = [*_texts(info.value), caplog.text]
    for secret in _secrets(tokens.issued[0]):
        for text in texts:
            assert secret not in text  # ... without the token


@pytest.mark.parametrize(("mechanism", "answer"), [("OAUTHBEARER", 4), ("XOAUTH2", 0)])
async def test_imap_answers_the_error_challenge_without_the_token(
    stack: MailStack, only: Callable[[str], None], caplog: pytest.LogCaptureFixture,
    mechanism: str, answer: int,
) -> None:
    # A refused token comes back as a challenge (a JSON status); the client must answer it with
    # %x01 (OAUTHBEARER, "AQ==": 4 bytes) or an empty line (XOAUTH2), not send the token again.
    only(mechanism)
    caplog.set_level(logging.DEBUG, logger="imapclient")
    with pytest.raises(AuthenticationError):
        await _read_inbox(stack, ALICE, Tokens(stack, ALICE, expires_in=-60))
    sizes = [int(n) for n in re.findall(r"write literal size (\d+)", caplog.text)]
    assert len(sizes) == 2 and sizes[0] > 200, caplog.text  # the SASL payload, then the answer
    assert sizes[1] == answer


# --- the token provider ----------------------------------------------------------------------------


def test_the_provider_is_called_for_every_new_connection(stack: MailStack,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    logs = ServerLogs(stack)
    stack.deliver(ALICE, _raw(BOB, ALICE, "for-pop3"))
    tokens = Tokens(stack, ALICE)
    urls = {"imap": stack.url("imaps"), "pop3": stack.url("pop3"), "smtp": stack.url("submissions")}
    with mailkit.Account(ALICE, oauth2=tokens, ca_file=stack.ca_file, test_environment=True, **urls) as acct:
        for _ in range(2):
            with acct.imap() as imap:
                assert "INBOX" in {f.name for f in imap.folders()}
        assert acct.pop3.stat()[0] == 1
        assert acct.pop3.stat()[0] == 1
        for n in range(2):
            assert acct.send(to=BOB, subject=f"provider {n}", text="x").ok
    logins = logs.logins(4)
    assert sorted(s for s, _, _ in logins) == ["imap", "imap", "pop3", "pop3"]
    smtp_connections = logs.smtp_connections(1)
    assert 1 <= smtp_connections <= 2  # the account may keep its SMTP connection for the second send
    assert tokens.calls == len(logins) + smtp_connections
    assert len(set(tokens.issued)) == tokens.calls
    for token in tokens.issued:
        assert token not in caplog.text


async def test_an_async_token_provider(stack: MailStack) -> None:
    calls: list[str] = []

    async def provider() -> str:
        await asyncio.sleep(0.01)  # e.g. a refresh over HTTP
        calls.append("called")
        return stack.oauth2_token(ALICE)

    stack.deliver(ALICE, _raw(CAROL, ALICE, "async-provider"))
    async with _account(stack, ALICE, provider, imap="imap", pop3="pop3s", smtp="submission") as acct:
        assert (await acct.send(to=BOB, subject="async provider", text="x")).ok
        async with acct.imap("INBOX") as imap:
            assert len(await imap.search()) == 1
        assert await acct.pop3.stat() == (1, len(_raw(CAROL, ALICE, "async-provider")))
    assert len(calls) == 3
    stack.wait_for_messages(BOB, 1)


async def test_a_failing_provider_is_not_a_login(stack: MailStack) -> None:
    def provider() -> str:
        raise MailkitError("the identity provider is down")

    logs = ServerLogs(stack)
    async with _account(stack, ALICE, provider, imap="imaps") as acct:
        with pytest.raises(MailkitError, match="identity provider is down"):
            async with acct.imap() as imap:
                await imap.folders()
    await asyncio.sleep(0.5)
    assert "imap-login" not in logs.dovecot_text()  # the token comes first: no connection was made


# --- which mechanism, when the server offers both ------------------------------------------------


async def test_oauthbearer_is_chosen_when_both_are_offered(stack: MailStack) -> None:
    # The stack offers both everywhere; mailkit's documented order (OAUTH_MECHANISMS) puts the
    # standard OAUTHBEARER (RFC 7628) before Google's older XOAUTH2, for all three protocols.
    logs = ServerLogs(stack)
    async with _account(stack, ALICE, Tokens(stack, ALICE), imap="imaps", pop3="pop3s",
                        smtp="submissions") as acct:
        async with acct.imap() as imap:
            await imap.folders()
        await acct.pop3.stat()
        assert (await acct.send(to=BOB, subject="which mechanism", text="x")).ok
    assert sorted(logs.logins(2)) == [("imap", ALICE, "OAUTHBEARER"), ("pop3", ALICE, "OAUTHBEARER")]
    assert logs.smtp_messages(1) == [("OAUTHBEARER", ALICE)]
