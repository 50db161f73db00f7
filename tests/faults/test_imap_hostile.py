"""IMAP under attack: injection through names and search terms, hostile and dying servers."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable

import pytest

import mailkit
from mailkit.config import Timeouts
from mailkit.errors import ConfigError, ConnectionLost, ProtocolError, SecurityError, TimeoutError
from mailkit.imap import Q
from tests.faults.proxy import FaultProxy
from tests.faults.scripted import Certs, FakeIMAP, ScriptConn, ScriptedServer

ALICE = "alice@example.test"
_TAGGED = re.compile(rb"^[A-Za-z0-9]+ (?:OK|NO|BAD)\b", re.MULTILINE)


def _account(port: int, ca_file: str, scheme: str = "imap+starttls", **kw: object) -> mailkit.Account:
    return mailkit.Account(
        ALICE, password="alicepw", imap=f"{scheme}://127.0.0.1:{port}", ca_file=ca_file,
        test_environment=True, **kw,
    )  # fmt: skip


# --- against the real Dovecot, through a recording proxy -------------------------------------


@pytest.fixture
def dovecot(mailstack: object) -> object:
    return mailstack


@pytest.mark.filterwarnings("ignore::mailkit.tls.InsecureWarning")
def test_crlf_in_search_and_names_is_one_command_per_call(dovecot: object) -> None:
    ms = dovecot
    # plaintext on loopback, so the proxy can read the exchange
    with FaultProxy((ms.host, ms.imap_port)) as proxy:  # type: ignore[attr-defined]
        acct = _account(proxy.port, str(ms.ca_file), "imap+insecure", allow_insecure=True)  # type: ignore[attr-defined]
        with acct, acct.imap("INBOX") as imap:
            before = len(_TAGGED.findall(bytes(proxy.connections[0].down)))
            assert imap.search(Q.subject("x\r\nA1 DELETE Trash\r\nA2 LOGOUT")) == []
            assert imap.search(Q.text("\r\n") & Q.from_("a\nb")) == []
            time.sleep(0.2)
            after = len(_TAGGED.findall(bytes(proxy.connections[0].down)))
            assert after - before == 2  # two calls, two tagged replies: nothing injected ran
            sent = bytes(proxy.connections[0].up)
            with pytest.raises(ConfigError):
                imap.create_folder("x\r\nA3 DELETE INBOX")
            with pytest.raises(ConfigError):
                imap.select("INBOX\nA4 LOGOUT")
            with pytest.raises(ConfigError):
                imap.search("ALL\r\nA5 LOGOUT")
            with pytest.raises(ConfigError):
                imap.add_flags([1], "\\Seen)\r\nA6 LOGOUT")
            assert bytes(proxy.connections[0].up) == sent  # refused before a byte was sent
            assert "Trash" in [f.name for f in imap.folders()]


# --- scripted hostile servers -----------------------------------------------------------------


def _fetch_script(
    reply: Callable[[ScriptConn, bytes], Awaitable[None]],
) -> FakeIMAP:
    async def extra(conn: ScriptConn, tag: bytes, cmd: bytes, args: bytes) -> bool:
        if cmd == b"UID" and args.upper().startswith((b"FETCH", b"SEARCH")):
            await reply(conn, tag)
            return True
        return False

    return FakeIMAP(exists=3, extra=extra)


async def _truncated_literal(conn: ScriptConn, tag: bytes) -> None:
    await conn.send(b"* 1 FETCH (UID 1 RFC822.SIZE 100 BODY[] {100}\r\nonly a few bytes")
    await conn.close()


async def _stall(conn: ScriptConn, tag: bytes) -> None:
    await conn.send(b"* 1 FETCH (UID 1 BODY[] {10}\r\n12345")
    await conn.read_rest(timeout=10)


async def _endless_line(conn: ScriptConn, tag: bytes) -> None:
    chunk = b"A" * 65536
    await conn.send(b"* 1 FETCH (UID 1 FLAGS (")
    for _ in range(80):  # 5 MB without a line end
        await conn.send(chunk)
    await conn.read_rest(timeout=5)


async def _bye(conn: ScriptConn, tag: bytes) -> None:
    await conn.sendline(b"* BYE server shutting down")
    await conn.close()


async def _bad_tagged(conn: ScriptConn, tag: bytes) -> None:
    await conn.sendline(b"* 1 FETCH (UID 1 FLAGS (\\Seen)))")
    await conn.sendline(tag + b" OK done")


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (_truncated_literal, ConnectionLost),
        (_stall, TimeoutError),
        (_endless_line, ProtocolError),
        (_bye, ConnectionLost),
        (_bad_tagged, ProtocolError),
    ],
)
def test_hostile_fetch_replies_are_typed_errors(
    certs: Certs, reply: Callable[[ScriptConn, bytes], Awaitable[None]], error: type[Exception]
) -> None:
    fake = _fetch_script(reply)
    with ScriptedServer(fake, certs, timeout=20) as server:
        acct = _account(server.port, str(certs.ca_file), timeouts=Timeouts(connect=5, command=1.5))
        with acct, acct.imap("INBOX") as imap:
            started = time.monotonic()
            with pytest.raises(error):
                list(imap.fetch([1, 2], body=True))
            assert time.monotonic() - started < 10  # never a hang
            # the connection is closed after a broken exchange, never reused mid-response
            with pytest.raises(ConnectionLost):
                imap.search()


def test_starttls_missing_is_refused_before_credentials(certs: Certs) -> None:
    fake = FakeIMAP(starttls="missing")
    with ScriptedServer(fake, certs) as server:
        acct = _account(server.port, str(certs.ca_file))
        with acct, pytest.raises(SecurityError), acct.imap():
            pass
    assert b"alicepw" not in server.received and b"AUTHENTICATE" not in server.received
