"""IMAP login and mailbox referrals (RFC 2221, RFC 2193) are never followed.

A server that answers LOGIN/AUTHENTICATE or SELECT with ``[REFERRAL imap://other-host/]`` could
steer a client, and its credentials, to a host of the attacker's choosing. mailkit reports the
refusal as a typed error and opens no connection anywhere else.
"""

from __future__ import annotations

import socket

import pytest

from mailkit import errors
from tests.faults.scripted import ScriptConn, ScriptedServer
from tests.faults.test_hostile_imap import account, fake

pytestmark = pytest.mark.faults


@pytest.fixture
def elsewhere():
    """A listening socket standing for the host the referral points to; counts who connects."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def _connections(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


async def test_login_referral_is_an_authentication_error_and_not_followed(certs, elsewhere):
    referral = f"imap://alice@127.0.0.1:{elsewhere.getsockname()[1]}/".encode()

    async def refer(conn: ScriptConn, tag: bytes, cmd: bytes, args: bytes) -> bool:
        if cmd not in (b"AUTHENTICATE", b"LOGIN"):
            return False
        await conn.sendline(tag + b" NO [REFERRAL " + referral + b"] use the other server")
        return True

    server_fake = fake(extra=refer)
    async with ScriptedServer(server_fake, certs, implicit_tls=True) as server:
        with pytest.raises(errors.AuthenticationError):
            async with account(server.port, certs, "tls") as acct, acct.imap() as imap:
                await imap.select("INBOX")
    assert _connections(elsewhere) == 0
    assert all(b" SELECT " not in command for command in server_fake.commands)  # stopped at login


async def test_mailbox_referral_is_a_command_error_and_not_followed(certs, elsewhere):
    referral = f"imap://127.0.0.1:{elsewhere.getsockname()[1]}/INBOX".encode()

    async def refer(conn: ScriptConn, tag: bytes, cmd: bytes, args: bytes) -> bool:
        if cmd not in (b"SELECT", b"EXAMINE"):
            return False
        await conn.sendline(tag + b" NO [REFERRAL " + referral + b"] mailbox lives elsewhere")
        return True

    server_fake = fake(extra=refer)
    async with (
        ScriptedServer(server_fake, certs, implicit_tls=True) as server,
        account(server.port, certs, "tls") as acct,
        acct.imap() as imap,
    ):
        with pytest.raises(errors.CommandError) as info:
            await imap.select("INBOX")
        assert "REFERRAL" in str(info.value)
    assert _connections(elsewhere) == 0
