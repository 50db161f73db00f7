"""A discovered server that stops answering is found again, for each protocol, on real servers.

Discovery itself is tested in test_discovery_*.py; here its result is scripted (first a dead
endpoint, then the stack's real one) so the test is about what the adapters do with it.
"""

from __future__ import annotations

import pytest

import mailkit
from mailkit import ConnectError, Profile, Protocol
from tests.integration.mailstack import MailStack
from tests.scripted_discovery import ScriptedDiscovery, scripted_profile

USER = "carol@example.test"
DEAD_PORT = 9  # discard: nothing listens on loopback, so connecting is refused at once


def _profile(**urls: str) -> Profile:
    return scripted_profile(USER, **urls)


@pytest.fixture
def stack(clean_mailstack: MailStack) -> MailStack:
    clean_mailstack.deliver(USER, b"From: a@example.test\r\nSubject: kept\r\n\r\nhello\r\n")
    return clean_mailstack


def _account(
    stack: MailStack, discovery: ScriptedDiscovery, monkeypatch: pytest.MonkeyPatch
) -> mailkit.AsyncAccount:
    acct = mailkit.AsyncAccount(USER, password="carolpw", ca_file=stack.ca_file, test_environment=True)
    monkeypatch.setattr(acct, "_run_discovery", discovery)
    return acct


def _dead(scheme: str, stack: MailStack) -> str:
    return f"{scheme}://{stack.host}:{DEAD_PORT}"


async def test_imap_rediscovers(stack: MailStack, monkeypatch: pytest.MonkeyPatch) -> None:
    discovery = ScriptedDiscovery(_profile(imap=_dead("imaps", stack)), _profile(imap=stack.url("imaps")))
    async with _account(stack, discovery, monkeypatch) as acct, acct.imap("INBOX") as imap:
        assert [m.uid async for m in imap.fetch(await imap.search())]  # the real mailbox
    assert discovery.asked == [list(Protocol), [Protocol.IMAP]]


async def test_pop3_rediscovers(stack: MailStack, monkeypatch: pytest.MonkeyPatch) -> None:
    discovery = ScriptedDiscovery(_profile(pop3=_dead("pop3s", stack)), _profile(pop3=stack.url("pop3s")))
    async with _account(stack, discovery, monkeypatch) as acct:
        assert (await acct.pop3.stat())[0] == 1
    assert discovery.asked == [list(Protocol), [Protocol.POP3]]


async def test_smtp_rediscovers(stack: MailStack, monkeypatch: pytest.MonkeyPatch) -> None:
    discovery = ScriptedDiscovery(
        _profile(smtp=_dead("smtps", stack)), _profile(smtp=stack.url("submissions"))
    )
    async with _account(stack, discovery, monkeypatch) as acct:
        result = await acct.send(to="bob@example.test", subject="after rediscovery", text="hi")
    assert result.state == "accepted" and result.accepted == ("bob@example.test",)
    assert discovery.asked == [list(Protocol), [Protocol.SMTP]]
    stack.wait_for_messages("bob@example.test", 1)


async def test_a_dead_server_that_discovery_finds_again_is_a_connect_error(
    stack: MailStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = _profile(imap=_dead("imaps", stack))
    discovery = ScriptedDiscovery(dead, dead)
    with pytest.raises(ConnectError):
        async with _account(stack, discovery, monkeypatch) as acct, acct.imap("INBOX"):
            pass
    assert len(discovery.asked) == 2  # looked again once, then gave up with the original error
