"""SMTP against scripted hostile servers: 421 mid-campaign, 451 on RCPT, drops and stalls around
DATA, STARTTLS response injection, refused or missing STARTTLS, OAuth2 on every new connection."""

from __future__ import annotations

import base64
import email
import email.policy
import logging
from dataclasses import dataclass, field

import pytest

from mailkit.account import AsyncAccount
from mailkit.config import Timeouts
from mailkit.errors import ConnectionLost, SecurityError, TimeoutError
from mailkit.message import compose
from mailkit.smtp import DeliveryUnknownError, RecipientsRefusedError, SMTPUTF8RequiredError, SQLiteJournal
from mailkit.smtp.client import smtp_for
from tests.faults.scripted import Certs, ScriptConn, ScriptedServer, assert_no_secret

pytestmark = pytest.mark.filterwarnings("ignore::mailkit.tls.InsecureWarning")


@dataclass
class Sink:
    """A scriptable ESMTP server. Hooks return a reply line (bytes) to override, or "drop"."""

    pre_caps: tuple[str, ...] = ("PIPELINING", "8BITMIME", "SIZE 10000000")
    post_caps: tuple[str, ...] = ("PIPELINING", "8BITMIME", "SIZE 10000000")
    starttls: str = "none"  # none | ok | inject | refuse
    inject: bytes = b"250 XINJECTED\r\n"
    on_mail: object = None  # callable(conn_index, mail_count_on_conn) -> bytes | "drop" | None
    on_rcpt: object = None  # callable(rcpt, attempt_for_rcpt) -> bytes | "drop" | None
    after_data: object = None  # callable(message_id) -> bytes | "drop" | "stall" | None
    accepted: list[tuple[list[str], bytes]] = field(default_factory=list)
    auth_payloads: list[bytes] = field(default_factory=list)
    rcpt_attempts: dict[str, int] = field(default_factory=dict)

    def message_ids(self) -> list[str]:
        parse = email.message_from_bytes
        return [parse(d, policy=email.policy.default)["Message-ID"] for _, d in self.accepted]

    async def __call__(self, conn: ScriptConn) -> None:
        await conn.sendline("220 sink.example.test ESMTP")
        mails = 0
        rcpts: list[str] = []
        while True:
            line = await conn.readline()
            if not line:
                return
            text = line.rstrip(b"\r\n")
            cmd = text[:4].upper()
            if cmd == b"EHLO":
                caps = list(self.post_caps if conn.encrypted else self.pre_caps)
                if self.starttls != "none" and not conn.encrypted:
                    caps.append("STARTTLS")
                items = [b"sink.example.test", *(c.encode() for c in caps)]
                await conn.send(b"".join(b"250" + (b" " if i == len(items) - 1 else b"-") + it + b"\r\n"
                                         for i, it in enumerate(items)))
            elif text.upper() == b"STARTTLS":
                if self.starttls == "refuse":
                    await conn.sendline("454 4.7.0 TLS not available")
                    continue
                extra = self.inject if self.starttls == "inject" else b""
                await conn.send(b"220 2.0.0 Ready\r\n" + extra)
                if not await conn.start_tls():
                    return
            elif cmd == b"AUTH":
                self.auth_payloads.append(text)
                await conn.sendline("235 2.7.0 Authenticated")
            elif cmd == b"MAIL":
                mails += 1
                rcpts = []
                hook = self.on_mail(conn.index, mails) if callable(self.on_mail) else None
                if hook == "drop":
                    conn.abort()
                    return
                await conn.sendline(hook or b"250 2.1.0 Ok")
                if hook and hook.startswith(b"421"):
                    await conn.close()
                    return
            elif cmd == b"RCPT":
                rcpt = text.split(b"<", 1)[1].split(b">", 1)[0].decode()
                self.rcpt_attempts[rcpt] = self.rcpt_attempts.get(rcpt, 0) + 1
                hook = self.on_rcpt(rcpt, self.rcpt_attempts[rcpt]) if callable(self.on_rcpt) else None
                if hook == "drop":
                    conn.abort()
                    return
                if hook is None:
                    rcpts.append(rcpt)
                await conn.sendline(hook or b"250 2.1.5 Ok")
            elif cmd == b"DATA":
                if not rcpts:
                    await conn.sendline("554 5.5.1 no valid recipients")
                    continue
                await conn.sendline("354 go ahead")
                body = bytearray()
                while True:
                    chunk = await conn.readline()
                    if not chunk:
                        return
                    if chunk == b".\r\n":
                        break
                    body += chunk[1:] if chunk.startswith(b"..") else chunk
                mid = email.message_from_bytes(bytes(body), policy=email.policy.default)["Message-ID"]
                hook = self.after_data(mid) if callable(self.after_data) else None
                if hook == "drop":
                    conn.abort()  # the server may or may not have kept it: here it did not
                    return
                if hook == "stall":
                    await conn.read_rest(timeout=5)
                    return
                if hook is None:
                    self.accepted.append((list(rcpts), bytes(body)))
                await conn.sendline(hook or b"250 2.0.0 Ok: queued as Q" + str(len(self.accepted)).encode())
            elif cmd == b"RSET":
                rcpts = []
                await conn.sendline("250 2.0.0 Ok")
            elif cmd == b"NOOP":
                await conn.sendline("250 2.0.0 Ok")
            elif cmd == b"QUIT":
                await conn.sendline("221 2.0.0 Bye")
                return
            else:
                await conn.sendline("502 5.5.2 unknown command")


def _account(server: ScriptedServer, *, tls: bool = False, certs: Certs | None = None,
             **kw: object) -> AsyncAccount:
    scheme = "smtp+starttls" if tls else "smtp+insecure"
    return AsyncAccount(
        "alice@example.test", smtp=f"{scheme}://127.0.0.1:{server.port}", allow_insecure=not tls,
        ca_file=certs.ca_file if certs else None, test_environment=True, **kw,  # type: ignore[arg-type]
    )


def _messages(n: int, to: str = "bob@example.test") -> list[tuple[str, object]]:
    return [
        (f"m{i}", compose(sender="alice@example.test", to=to, subject=f"n{i}", text=f"body {i}\n",
                          message_id=f"<m{i}@example.test>"))
        for i in range(n)
    ]


async def test_421_mid_campaign_recycles_the_connection_and_sends_each_once(certs: Certs) -> None:
    sink = Sink(on_mail=lambda conn, n: b"421 4.3.2 shutting down" if conn == 0 and n == 3 else None)
    async with ScriptedServer(sink, certs) as server, _account(server) as acct:
        results = [r async for r in acct.send_many(_messages(8), concurrency=1, backoff=0.01)]
    assert sorted(r.key for r in results) == sorted(f"m{i}" for i in range(8))
    assert all(r.state == "accepted" for r in results), results
    assert sorted(sink.message_ids()) == sorted(f"<m{i}@example.test>" for i in range(8))  # once each
    assert len(server.connections) >= 2
    retried = [r for r in results if r.attempts > 1]
    assert len(retried) == 1


async def test_451_on_rcpt_retries_only_that_recipient(certs: Certs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    sink = Sink(on_rcpt=lambda rcpt, n: b"451 4.3.0 greylisted" if rcpt == "carol@example.test" and n == 1
                else None)
    msg = compose(sender="alice@example.test", to=["bob@example.test", "carol@example.test"], subject="s",
                  text="t", message_id="<g@example.test>")
    async with ScriptedServer(sink, certs) as server, _account(server) as acct:
        (result,) = [r async for r in acct.send_many([("g", msg)], backoff=0.01,
                                                     journal=tmp_path / "j.db")]
    assert result.state == "accepted" and set(result.accepted) == {"bob@example.test", "carol@example.test"}
    assert [rcpts for rcpts, _ in sink.accepted] == [["bob@example.test"], ["carol@example.test"]]
    with SQLiteJournal(tmp_path / "j.db") as journal:
        entry = journal.get("g")
        assert entry is not None and entry.state == "accepted" and entry.attempts == 2


async def test_permanent_refusal_is_never_retried(certs: Certs) -> None:
    sink = Sink(on_rcpt=lambda rcpt, n: b"550 5.1.1 no such user")
    async with ScriptedServer(sink, certs) as server, _account(server) as acct:
        (result,) = [r async for r in acct.send_many(_messages(1), backoff=0.01)]
        with pytest.raises(RecipientsRefusedError) as info:
            await acct.send(to="bob@example.test", subject="s", text="t")
        assert info.value.refused["bob@example.test"].enhanced == "5.1.1"
        # the connection stayed usable: the next message goes over the same one
        sink.on_rcpt = None
        ok = await acct.send(to="bob@example.test", subject="s", text="t")
    assert result.state == "failed" and isinstance(result.error, RecipientsRefusedError)
    assert result.attempts == 1 and sink.rcpt_attempts["bob@example.test"] == 3
    assert ok.state == "accepted" and ok.queue_id == "Q1"


async def test_drop_after_end_of_data_is_unknown_and_not_resent(certs: Certs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    drops = {"<m2@example.test>"}
    sink = Sink(after_data=lambda mid: "drop" if mid in drops else None)
    journal = tmp_path / "campaign.db"
    async with ScriptedServer(sink, certs) as server, _account(server) as acct:
        first = {r.key: r async for r in acct.send_many(_messages(4), concurrency=2, journal=journal,
                                                          backoff=0.01)}
        assert first["m2"].state == "unknown" and isinstance(first["m2"].error, DeliveryUnknownError)
        assert first["m2"].attempts == 1  # never retried automatically
        assert {k for k, r in first.items() if r.state == "accepted"} == {"m0", "m1", "m3"}
        drops.clear()
        # Same campaign again: nothing accepted is resent, the unknown one is listed, not sent.
        second = {r.key: r async for r in acct.send_many(_messages(4), journal=journal)}
        assert {k: r.state for k, r in second.items()} == {
            "m0": "skipped", "m1": "skipped", "m2": "unknown", "m3": "skipped"}
        assert len(sink.accepted) == 3
        with SQLiteJournal(journal) as store:
            assert [e.key for e in store.entries("unknown")] == ["m2"]
        # The user checked and asks for it: now it is sent.
        third = {r.key: r async for r in acct.send_many(_messages(4), journal=journal,
                                                         resend_unknown=["m2"])}
        assert third["m2"].state == "accepted"
    assert sorted(sink.message_ids()) == [f"<m{i}@example.test>" for i in range(4)]


async def test_send_raises_delivery_unknown_when_the_reply_never_comes(certs: Certs) -> None:
    sink = Sink(after_data=lambda mid: "stall")
    async with (
        ScriptedServer(sink, certs) as server,
        _account(server, timeouts=Timeouts(connect=5, command=5, data=0.5)) as acct,
    ):
        with pytest.raises(DeliveryUnknownError) as info:
            await acct.send(to="bob@example.test", subject="s", text="t")
    assert isinstance(info.value.__cause__, TimeoutError)


async def test_connection_lost_before_data_is_retryable_and_retried(certs: Certs) -> None:
    sink = Sink(on_rcpt=lambda rcpt, n: "drop" if n == 1 else None)
    async with ScriptedServer(sink, certs) as server, _account(server) as acct:
        with pytest.raises(ConnectionLost):
            await acct.send(to="bob@example.test", subject="s", text="t")
        (result,) = [r async for r in acct.send_many(_messages(1, to="carol@example.test"), backoff=0.01)]
    assert result.state == "accepted" and result.attempts == 2
    assert len(sink.accepted) == 1


async def test_starttls_rereads_ehlo_and_ignores_injected_plaintext(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mailkit")
    sink = Sink(starttls="inject", pre_caps=("XPRETLS", "AUTH PLAIN"), post_caps=("PIPELINING", "AUTH PLAIN"),
                inject=b"250-XINJECTED\r\n250 AUTH PLAIN\r\n")
    async with (
        ScriptedServer(sink, certs) as server,
        _account(server, tls=True, certs=certs, password="s3cret-pw") as acct,
    ):
        client = smtp_for(acct)
        session = await client.open_session()
        try:
            assert "xinjected" not in session.caps.extensions
            assert "xpretls" not in session.caps.extensions  # pre-TLS knowledge discarded
            assert session.caps.pipelining
        finally:
            await session.quit()
        result = await acct.send(to="bob@example.test", subject="s", text="t")
    assert result.state == "accepted"
    conn = server.connections[0]
    assert conn.received_plain.upper().endswith(b"STARTTLS\r\n")  # nothing else before TLS
    assert conn.received_tls.upper().startswith(b"EHLO ")  # EHLO sent again inside TLS
    assert_no_secret(bytes(conn.received_plain), "alice@example.test", "s3cret-pw")
    assert "AUTH PLAIN ***" in caplog.text and "MAIL FROM:<alice@example.test>" in caplog.text
    assert_no_secret(caplog.text.encode(), "alice@example.test", "s3cret-pw", where="log")


async def test_refused_starttls_is_a_security_error_and_nothing_follows(certs: Certs) -> None:
    sink = Sink(starttls="refuse", pre_caps=("AUTH PLAIN",))
    async with (
        ScriptedServer(sink, certs) as server,
        _account(server, tls=True, certs=certs, password="s3cret-pw") as acct,
    ):
        with pytest.raises(SecurityError):
            await acct.send(to="bob@example.test", subject="s", text="t")
    plain = bytes(server.connections[0].received_plain).upper()
    assert plain.endswith(b"STARTTLS\r\n") or plain.endswith(b"QUIT\r\n")
    assert b"AUTH" not in plain and b"MAIL" not in plain


async def test_missing_starttls_is_a_security_error(certs: Certs) -> None:
    sink = Sink(starttls="none", pre_caps=("AUTH PLAIN",))
    async with (
        ScriptedServer(sink, certs) as server,
        _account(server, tls=True, certs=certs, password="s3cret-pw") as acct,
    ):
        with pytest.raises(SecurityError):
            await acct.send(to="bob@example.test", subject="s", text="t")
    assert b"AUTH" not in bytes(server.connections[0].received_plain).upper()


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
async def test_oauth2_token_provider_is_called_for_every_new_connection(certs: Certs, mechanism: str) -> None:
    sink = Sink(starttls="ok", post_caps=("PIPELINING", f"AUTH {mechanism}"))
    calls: list[int] = []

    async def provider() -> str:
        calls.append(1)
        return f"token-{len(calls)}"

    async with (
        ScriptedServer(sink, certs) as server,
        _account(server, tls=True, certs=certs, oauth2=provider) as acct,
    ):
        results = [r async for r in acct.send_many(_messages(3), concurrency=1, per_connection=1)]
    assert all(r.state == "accepted" for r in results)
    assert len(calls) == 3 and len(sink.auth_payloads) == 3
    decoded = [base64.b64decode(p.split(b" ")[2]) for p in sink.auth_payloads]
    assert [b"auth=Bearer token-%d" % (i + 1) in d for i, d in enumerate(decoded)] == [True] * 3
    assert all(p.split(b" ")[1].decode() == mechanism for p in sink.auth_payloads)


async def test_smtputf8_needed_but_not_offered_fails_before_mail(certs: Certs) -> None:
    sink = Sink()  # no SMTPUTF8 in its EHLO
    async with ScriptedServer(sink, certs) as server, _account(server) as acct:
        with pytest.raises(SMTPUTF8RequiredError):
            await acct.send(to="jösé@example.test", subject="s", text="t")
    assert b"MAIL" not in server.connections[0].received


async def test_a_refused_next_message_does_not_break_the_pipelined_one_before_it(certs: Certs) -> None:
    sink = Sink()  # no SMTPUTF8: the second message cannot go, the first and third must
    items = [
        ("a", compose(sender="alice@example.test", to="bob@example.test", subject="a", text="a")),
        ("b", compose(sender="alice@example.test", to="jösé@example.test", subject="b", text="b")),
        ("c", compose(sender="alice@example.test", to="bob@example.test", subject="c", text="c")),
    ]
    async with ScriptedServer(sink, certs) as server, _account(server) as acct:
        results = {r.key: r async for r in acct.send_many(items, concurrency=1)}
    assert results["a"].state == "accepted" and results["c"].state == "accepted"
    assert results["b"].state == "failed" and isinstance(results["b"].error, SMTPUTF8RequiredError)
    assert len(sink.accepted) == 2 and len(server.connections) == 1


async def test_silent_server_times_out_on_connect(certs: Certs) -> None:
    async def silent(conn: ScriptConn) -> None:
        await conn.read_rest(timeout=3)

    async with ScriptedServer(silent, certs) as server:
        acct = AsyncAccount("alice@example.test", smtp=f"smtps://127.0.0.1:{server.port}",
                            ca_file=certs.ca_file, test_environment=True,
                            timeouts=Timeouts(connect=0.5, command=0.5, data=1))
        async with acct:
            with pytest.raises(TimeoutError):
                await acct.send(to="bob@example.test", subject="s", text="t")
