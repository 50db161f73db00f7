"""Discovery's probes (mailkit.discovery.probe) against hostile SMTP, IMAP and POP3 servers.

A probe logs in to test a candidate, so it is a client like any other: STARTTLS stripping, response
injection, capability tampering, PREAUTH, bad certificates and endless or slow responses must end in
a failed outcome, within bounded time, with no credential ever sent in plaintext.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mailkit import errors
from mailkit.config import Protocol, Security
from mailkit.discovery import discover_async
from mailkit.discovery.candidates import Candidate
from mailkit.discovery.dialogue import Login
from mailkit.discovery.probe import ProbeLimits, ProbeResult, probe
from mailkit.tls import create_ssl_context
from tests.faults.scripted import (
    Certs,
    FakeBase,
    FakeIMAP,
    FakePOP3,
    FakeSMTP,
    ScriptConn,
    ScriptedServer,
    ServerCert,
    assert_no_secret,
)

pytestmark = pytest.mark.faults

USER, PASSWORD = "alice@example.test", "S3cret-pw"
LIMITS = ProbeLimits(connect=3, step=2)
PROTOCOLS = [Protocol.SMTP, Protocol.IMAP, Protocol.POP3]
STARTTLS_LINE = {Protocol.SMTP: b"STARTTLS\r\n", Protocol.IMAP: b" STARTTLS\r\n", Protocol.POP3: b"STLS\r\n"}


def fake(protocol: Protocol, **kw: object) -> FakeBase:
    fakes: dict[Protocol, Callable[..., FakeBase]] = {
        Protocol.SMTP: FakeSMTP,
        Protocol.IMAP: FakeIMAP,
        Protocol.POP3: FakePOP3,
    }
    return fakes[protocol](user=USER, password=PASSWORD, **kw)


async def run_probe(
    server: ScriptedServer, protocol: Protocol, security: Security, certs: Certs, limits: ProbeLimits = LIMITS
) -> ProbeResult:
    candidate = Candidate(protocol, "localhost", server.port, security, "settings")
    context = create_ssl_context(certs.ca_file)
    return await probe(candidate, "127.0.0.1", context, Login(USER, PASSWORD), limits)


async def finished(server: ScriptedServer) -> ScriptConn:
    conns = await server.await_finished(1)
    server.check()
    return conns[0]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("security", [Security.STARTTLS, Security.TLS])
async def test_a_good_server_is_logged_in_over_tls_only(
    certs: Certs, protocol: Protocol, security: Security
) -> None:
    server_fake = fake(protocol)
    async with ScriptedServer(server_fake, certs, implicit_tls=security is Security.TLS) as server:  # type: ignore[arg-type]
        result = await run_probe(server, protocol, security, certs)
        conn = await finished(server)
    assert result.outcome == "ok" and result.finding.logged_in, result.finding
    assert server_fake.logins == 1
    assert_no_secret(bytes(conn.received_plain), USER, PASSWORD)
    if security is Security.STARTTLS:
        assert bytes(conn.received_plain).endswith(STARTTLS_LINE[protocol])


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("mode", ["missing", "error", "garbage", "inject"])
async def test_starttls_stripping_stops_before_any_further_command(
    certs: Certs, protocol: Protocol, mode: str
) -> None:
    server_fake = fake(protocol, starttls=mode)
    async with ScriptedServer(server_fake, certs) as server:  # type: ignore[arg-type]
        result = await run_probe(server, protocol, Security.STARTTLS, certs)
        conn = await finished(server)
    assert result.outcome in ("no-starttls", "refused", "tls-error"), result.finding
    assert not result.usable
    plain = bytes(conn.received_plain)
    assert_no_secret(plain, USER, PASSWORD)
    assert server_fake.logins == 0 and not conn.encrypted
    if mode == "missing":
        assert b"STARTTLS" not in plain.upper() and b"STLS" not in plain.upper()
        # nothing but the capability request(s) was sent: no USER, LOGIN, AUTH, MAIL...
        for word in (b"USER", b"PASS", b"LOGIN", b"AUTH", b"MAIL"):
            assert word not in plain.upper()
    else:
        assert plain.endswith(STARTTLS_LINE[protocol]), plain  # the last thing ever sent


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_capabilities_are_asked_again_after_tls(certs: Certs, protocol: Protocol) -> None:
    # Before TLS the server (or an attacker) offers PLAIN; over TLS only a mechanism we cannot use.
    tampered: dict[Protocol, dict[str, object]] = {
        Protocol.SMTP: {"pre_caps": ("STARTTLS", "AUTH PLAIN"), "post_caps": ("AUTH CRAM-MD5",)},
        Protocol.IMAP: {
            "greeting": b"* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] hi",
            "pre_tls_untagged": (b"* CAPABILITY IMAP4rev1 AUTH=PLAIN",),
            "post_caps": ("IMAP4rev1", "AUTH=CRAM-MD5", "LOGINDISABLED"),
        },
        Protocol.POP3: {"pre_caps": ("STLS", "SASL PLAIN"), "post_caps": ("SASL CRAM-MD5",)},
    }
    server_fake = fake(protocol, **tampered[protocol])
    async with ScriptedServer(server_fake, certs) as server:  # type: ignore[arg-type]
        result = await run_probe(server, protocol, Security.STARTTLS, certs)
        conn = await finished(server)
    assert server_fake.tls_upgrades == 1
    assert result.finding.auth_mechanisms == ("CRAM-MD5",), result.finding
    assert_no_secret(bytes(conn.received_plain), USER, PASSWORD)
    assert b"AUTH PLAIN" not in conn.received.upper()  # the forged mechanism was never used
    assert b"AUTHENTICATE PLAIN" not in conn.received.upper()


async def test_imap_preauth_greeting_is_refused_without_sending_anything(certs: Certs) -> None:
    server_fake = FakeIMAP(greeting=b"* PREAUTH [CAPABILITY IMAP4rev1] welcome, no TLS needed")
    async with ScriptedServer(server_fake, certs) as server:
        result = await run_probe(server, Protocol.IMAP, Security.STARTTLS, certs)
        conn = await finished(server)
    assert result.outcome == "refused" and "pre-auth" in result.finding.detail.lower()
    assert conn.received == b""


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("security", [Security.STARTTLS, Security.TLS])
@pytest.mark.parametrize("bad", ["self_signed", "expired", "wrong_host", "unknown_ca"])
async def test_bad_certificates_end_the_probe_before_any_credential(
    certs: Certs, protocol: Protocol, security: Security, bad: str
) -> None:
    cert: ServerCert = certs.all_bad()[bad]
    server_fake = fake(protocol)
    async with ScriptedServer(server_fake, cert=cert, implicit_tls=security is Security.TLS) as server:  # type: ignore[arg-type]
        result = await run_probe(server, protocol, security, certs)
        conn = await finished(server)
    assert result.outcome == "tls-error", result.finding
    assert server_fake.logins == 0 and conn.received_tls == b""
    assert_no_secret(conn.received, USER, PASSWORD, "whole")


# -- resource exhaustion --------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_10_mb_greeting_line_is_refused_quickly(certs: Certs, protocol: Protocol) -> None:
    async def script(conn: ScriptConn) -> None:
        await conn.send(b"220-" if protocol is Protocol.SMTP else b"* OK ")
        chunk = b"A" * 65536
        for _ in range(160):  # 10 MB, no line end
            await conn.send(chunk)
        await conn.read_rest(1)

    async with ScriptedServer(script) as server:
        start = time.monotonic()
        result = await run_probe(server, protocol, Security.STARTTLS, certs)
        assert time.monotonic() - start < LIMITS.step + 1
    assert result.outcome == "refused" and "longer than allowed" in result.finding.detail


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_response_that_never_ends_is_refused_within_bounded_time(
    certs: Certs, protocol: Protocol
) -> None:
    first = {Protocol.SMTP: b"220-hello", Protocol.IMAP: b"* OK hi", Protocol.POP3: b"+OK hi"}[protocol]
    filler = {Protocol.SMTP: b"250-X", Protocol.IMAP: b"* CAPABILITY X", Protocol.POP3: b"X"}[protocol]

    async def script(conn: ScriptConn) -> None:
        await conn.sendline(first)
        if protocol is not Protocol.SMTP:
            await conn.readline()
            if protocol is Protocol.POP3:
                await conn.sendline(b"+OK")
        while True:  # as fast as the client reads
            await conn.send((filler + b"\r\n") * 100)

    async with ScriptedServer(script) as server:
        start = time.monotonic()
        result = await run_probe(server, protocol, Security.STARTTLS, certs)
        assert time.monotonic() - start < LIMITS.step + 1
    assert result.outcome == "refused", result.finding


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_one_byte_a_second_hits_the_step_timeout(certs: Certs, protocol: Protocol) -> None:
    async def script(conn: ScriptConn) -> None:
        for byte in b"+OK this greeting never ends":
            await conn.send(bytes([byte]))
            await asyncio.sleep(1.0)

    async with ScriptedServer(script) as server:
        start = time.monotonic()
        result = await run_probe(server, protocol, Security.STARTTLS, certs)
        assert time.monotonic() - start < LIMITS.step + 1
    assert result.outcome == "timeout", result.finding


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_drip_of_complete_lines_is_cut_by_the_discovery_deadline(
    certs: Certs, protocol: Protocol, tmp_path: Path
) -> None:
    # Each line arrives well within the step timeout, but the reply never ends (slowloris): one probe
    # alone could last MAX_REPLY_LINES x step; discovery's total_timeout must still end it.
    first = {Protocol.SMTP: b"220-hello", Protocol.IMAP: b"* OK hi", Protocol.POP3: b"+OK hi"}[protocol]
    filler = {Protocol.SMTP: b"220-X", Protocol.IMAP: b"* OK X", Protocol.POP3: b"X"}[protocol]

    async def script(conn: ScriptConn) -> None:
        await conn.sendline(first)
        if protocol is Protocol.POP3:
            await conn.readline()
            await conn.sendline(b"+OK")
        while True:
            await conn.sendline(filler)
            await asyncio.sleep(0.1)

    scheme = {Protocol.SMTP: "smtp+starttls", Protocol.IMAP: "imap+starttls", Protocol.POP3: "pop3+starttls"}
    async with ScriptedServer(script) as server:
        start = time.monotonic()
        with pytest.raises(errors.MailkitError) as info:
            await discover_async(
                USER,
                PASSWORD,
                endpoints={protocol: f"{scheme[protocol]}://localhost:{server.port}"},
                protocols=[protocol],
                ca_file=certs.ca_file,
                resolve={"localhost": "127.0.0.1"},
                test_environment=True,
                cache=False,
                total_timeout=2,
                cache_dir=tmp_path,
            )
        elapsed = time.monotonic() - start
    assert elapsed < 2 + 1, f"a never-ending reply held discovery for {elapsed:.1f}s"
    assert PASSWORD not in str(info.value)
