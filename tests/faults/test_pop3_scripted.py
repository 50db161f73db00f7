"""POP3Client against scripted servers: APOP, OAuth2 SASL, lock-step without PIPELINING, odd replies.

Scripts speak plaintext (the client is told ``allow_insecure``): these tests are about the
protocol exchange, which TLS does not change; TLS paths are in test_hostile_pop3.py.
"""

from __future__ import annotations

import base64

import pytest

from mailkit.config import Endpoint, OAuth2, Password
from mailkit.errors import AuthenticationError, ProtocolError, TransientError
from mailkit.pop3 import POP3Client
from tests.faults.scripted import ScriptConn, ScriptedServer


def client(server: ScriptedServer) -> POP3Client:
    return POP3Client(Endpoint.parse(f"pop3+insecure://127.0.0.1:{server.port}"), allow_insecure=True)


async def capa(conn: ScriptConn, *caps: str) -> None:
    await conn.expect("CAPA")
    await conn.send(b"+OK\r\n" + b"".join(c.encode() + b"\r\n" for c in caps) + b".\r\n")


async def test_apop_sends_the_rfc_1939_digest() -> None:
    async def script(conn: ScriptConn) -> None:
        await conn.sendline("+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>")
        await capa(conn, "UIDL")
        line = await conn.expect("APOP")
        ok = line.strip() == b"APOP mrose c4c9334bac560ecc979e58001b3e22fb"
        await conn.sendline("+OK maildrop has 0 messages" if ok else "-ERR bad digest")
        await capa(conn, "UIDL")
        await conn.expect("QUIT")
        await conn.sendline("+OK")

    async with ScriptedServer(script) as server:
        async with client(server) as pop:
            await pop.login(Password("mrose", "tanstaaf"), mechanism="APOP")
        server.check()


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
async def test_oauth2_tokens_are_fetched_per_connection_and_sent_as_sasl(mechanism: str) -> None:
    calls: list[int] = []

    async def token() -> str:
        calls.append(1)
        return "ya29.token"

    async def script(conn: ScriptConn) -> None:
        await conn.sendline("+OK ready")
        await capa(conn, f"SASL {mechanism}")
        line = await conn.expect(f"AUTH {mechanism} ")
        payload = base64.b64decode(line.split()[2])
        assert b"auth=Bearer ya29.token" in payload and b"alice@example.test" in payload
        await conn.sendline("+OK welcome")
        await capa(conn, "UIDL")
        await conn.expect("QUIT")
        await conn.sendline("+OK")

    async with ScriptedServer(script) as server:
        async with client(server) as pop:
            await pop.login(OAuth2("alice@example.test", token))
        server.check()
    assert calls == [1]


async def test_a_refused_xoauth2_ends_with_an_authentication_error_not_a_hang() -> None:
    async def script(conn: ScriptConn) -> None:
        await conn.sendline("+OK ready")
        await capa(conn, "SASL XOAUTH2")
        await conn.expect("AUTH XOAUTH2")
        await conn.sendline("+ " + base64.b64encode(b'{"status":"401"}').decode())
        assert (await conn.readline()) == b"\r\n"  # the empty answer the server waits for
        await conn.sendline("-ERR [AUTH] invalid token")
        await conn.read_rest(1)

    async with ScriptedServer(script) as server:
        pop = client(server)
        await pop.connect()
        with pytest.raises(AuthenticationError) as info:
            await pop.login(OAuth2("alice@example.test", lambda: "expired"))
        await pop.close()
        server.check()
    assert info.value.reply is not None and "invalid token" in info.value.reply.text


async def test_without_pipelining_commands_go_one_at_a_time() -> None:
    async def script(conn: ScriptConn) -> None:
        await conn.sendline("+OK ready")
        await capa(conn, "USER", "UIDL")
        await conn.expect("USER")
        await conn.sendline("+OK")
        await conn.expect("PASS")
        await conn.sendline("+OK")
        await capa(conn, "USER", "UIDL")
        for n in (1, 2, 3):
            line = await conn.readline()
            assert line == b"RETR %d\r\n" % n
            # Nothing else may be waiting: a lock-step client sends the next command only now.
            extra = await conn.read(100, timeout=0.2)
            assert extra == b"", extra
            await conn.send(b"+OK\r\nmessage %d\r\n.\r\n" % n)
        await conn.expect("QUIT")
        await conn.sendline("+OK")

    async with ScriptedServer(script) as server:
        async with client(server) as pop:
            await pop.login(Password("u", "p"))
            assert not pop.pipelining
            got = [r.body async for _, r in pop.retr_many([1, 2, 3])]
        server.check()
    assert got == [b"message 1\r\n", b"message 2\r\n", b"message 3\r\n"]


async def test_in_use_maildrop_is_a_transient_error() -> None:
    async def script(conn: ScriptConn) -> None:
        await conn.sendline("+OK ready")
        await capa(conn, "USER", "RESP-CODES")
        await conn.expect("STAT")
        await conn.sendline("-ERR [IN-USE] maildrop locked by another session")
        await conn.read_rest(1)

    async with ScriptedServer(script) as server:
        pop = client(server)
        await pop.connect()
        with pytest.raises(TransientError) as info:
            await pop.stat()
        await pop.close()
    assert info.value.reply is not None and info.value.reply.code == "-ERR"


@pytest.mark.parametrize(
    "reply",
    [b"+OK\r\n1 one\r\n", b"* OK imap?\r\n", b"\x00\x01\x02\r\n", b"+OK 2 \r\n"],
    ids=["early-close-in-listing", "imap-reply", "binary", "short-stat"],
)
async def test_bad_replies_raise_typed_errors_and_close(reply: bytes) -> None:
    async def script(conn: ScriptConn) -> None:
        await conn.sendline("+OK ready")
        await capa(conn, "USER")
        await conn.readline()
        await conn.send(reply)
        # early close: hang up right after the partial reply

    async with ScriptedServer(script) as server:
        pop = client(server)
        await pop.connect()
        ask = pop.list if reply.startswith(b"+OK\r\n") else pop.stat
        with pytest.raises(ProtocolError):
            await ask()
        assert "closed" in repr(pop)
