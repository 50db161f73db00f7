"""mailkit._net against hostile peers: STARTTLS response injection, certificate refusals, and bounded
time for every step (connect, TLS handshake) with typed errors and no leaked sockets."""

from __future__ import annotations

import asyncio
import time
import warnings
from pathlib import Path

import pytest

from mailkit import errors
from mailkit._net import Stream, open_stream, start_tls
from mailkit.config import Endpoint, Protocol, Security
from mailkit.tls import InsecureWarning, create_ssl_context
from tests.faults.conftest import LeakCheck
from tests.faults.proxy import DOWN, Blackhole, FaultPlan, FaultProxy
from tests.faults.scripted import Certs, ScriptConn, ScriptedServer

pytestmark = pytest.mark.faults

SLACK = 1.0  # the suite's promise: every call ends within its timeout plus this


def endpoint(port: int, security: Security = Security.STARTTLS, host: str = "127.0.0.1") -> Endpoint:
    return Endpoint(Protocol.SMTP, host, port, security)


def insecure_context() -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureWarning)
        return create_ssl_context(allow_insecure=True)


async def smtp_starttls_prologue(stream: Stream) -> bytes:
    """Read the greeting, ask for STARTTLS and return the server's answer line."""
    await asyncio.wait_for(stream.reader.readline(), 5)
    stream.writer.write(b"STARTTLS\r\n")
    await stream.writer.drain()
    return await asyncio.wait_for(stream.reader.readline(), 5)


# -- response injection (buffering) ---------------------------------------------------------

INJECTIONS = [
    b"250-AUTH PLAIN LOGIN\r\n250 OK\r\n",  # fake capabilities
    b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n",
    b"+OK injected\r\n",
    b"X",  # a single byte, not even a line
]


def injecting_server(payload: bytes, delay: float = 0.0) -> ScriptedServer:
    async def script(conn: ScriptConn) -> None:
        await conn.sendline("220 mail.example.test ESMTP")
        await conn.expect("STARTTLS")
        if delay:
            await conn.sendline("220 2.0.0 go ahead")
            await asyncio.sleep(delay)
            await conn.send(payload)
        else:
            await conn.send(b"220 2.0.0 go ahead\r\n" + payload)  # one segment: already buffered
        if await conn.start_tls():
            await conn.read_rest(1.0)
        else:
            await conn.read_rest(0.5)

    return script  # type: ignore[return-value]


@pytest.mark.parametrize("payload", INJECTIONS, ids=["smtp-caps", "imap-caps", "pop3-ok", "one-byte"])
async def test_start_tls_refuses_plaintext_injected_after_the_go_ahead(
    certs: Certs, payload: bytes) -> None:
    leak_check = LeakCheck()  # inside the test: the event loop's own sockets already exist
    async with ScriptedServer(injecting_server(payload), certs) as server:  # type: ignore[arg-type]
        stream = await open_stream(endpoint(server.port), None, connect_timeout=5)
        assert (await smtp_starttls_prologue(stream)).startswith(b"220 2.0.0")
        with pytest.raises(errors.SecurityError, match="injection"):
            await start_tls(stream, create_ssl_context(certs.ca_file), timeout=5)
        assert not stream.encrypted
        await stream.close()
        conn = (await server.await_finished(1))[0]
    # Nothing at all followed the STARTTLS command, and no TLS session was made.
    assert bytes(conn.received_plain) == b"STARTTLS\r\n"
    assert not conn.encrypted
    leak_check.assert_clean(ignore_threads=("asyncio_",))


async def test_late_injection_breaks_the_handshake_instead_of_being_read(certs: Certs) -> None:
    # The injected bytes arrive after the client began its handshake: they are then read as TLS
    # records, which fails the handshake; they must never come out as application data.
    payload = b"250 injected\r\n"
    async with ScriptedServer(injecting_server(payload, delay=0.2), certs) as server:  # type: ignore[arg-type]
        stream = await open_stream(endpoint(server.port), None, connect_timeout=5)
        await smtp_starttls_prologue(stream)
        try:
            await start_tls(stream, create_ssl_context(certs.ca_file), timeout=5)
        except (errors.TLSError, errors.SecurityError, errors.ConnectionLost):
            pass  # refused, as it must be
        else:
            line = await asyncio.wait_for(stream.reader.readline(), 1)
            pytest.fail(f"the TLS handshake survived a plaintext injection; then read {line!r}")
        finally:
            await stream.close()


async def test_clean_starttls_upgrades_and_later_bytes_travel_encrypted(certs: Certs) -> None:
    async def script(conn: ScriptConn) -> None:
        await conn.sendline("220 ready")
        await conn.expect("STARTTLS")
        await conn.sendline("220 go ahead")
        assert await conn.start_tls()
        await conn.expect("EHLO")
        await conn.sendline("250 hello")

    async with ScriptedServer(script, certs) as server:
        stream = await open_stream(endpoint(server.port), None, connect_timeout=5)
        await smtp_starttls_prologue(stream)
        await start_tls(stream, create_ssl_context(certs.ca_file), timeout=5)
        assert stream.encrypted
        stream.writer.write(b"EHLO client\r\n")
        assert await asyncio.wait_for(stream.reader.readline(), 5) == b"250 hello\r\n"
        await stream.close()
        conn = (await server.await_finished(1))[0]
        server.check()
    assert bytes(conn.received_plain) == b"STARTTLS\r\n"
    assert bytes(conn.received_tls) == b"EHLO client\r\n"


async def test_start_tls_twice_is_refused(certs: Certs) -> None:
    async def script(conn: ScriptConn) -> None:
        await conn.read_rest(2)

    async with ScriptedServer(script, certs, implicit_tls=True) as server:
        stream = await open_stream(
            endpoint(server.port, Security.TLS), create_ssl_context(certs.ca_file), connect_timeout=5
        )
        with pytest.raises(errors.SecurityError):
            await start_tls(stream, create_ssl_context(certs.ca_file), timeout=5)
        await stream.close()


# -- certificates -----------------------------------------------------------------------------

BAD = ["self_signed", "expired", "wrong_host", "unknown_ca"]


async def hello(conn: ScriptConn) -> None:
    await conn.sendline("* OK hello over TLS")
    await conn.read_rest(1)


async def starttls_then_hello(conn: ScriptConn) -> None:
    await conn.sendline("220 ready")
    await conn.expect("STARTTLS")
    await conn.sendline("220 go ahead")
    if await conn.start_tls():
        await conn.sendline("* OK hello over TLS")
        await conn.read_rest(1)
    else:
        await conn.read_rest(0.5)


@pytest.mark.parametrize("bad", BAD)
async def test_implicit_tls_refuses_bad_certificates(certs: Certs, bad: str) -> None:
    cert = certs.all_bad()[bad]
    async with ScriptedServer(hello, cert=cert, implicit_tls=True) as server:
        for context in (create_ssl_context(), create_ssl_context(certs.ca_file)):
            with pytest.raises(errors.CertificateError):
                await open_stream(endpoint(server.port, Security.TLS), context, connect_timeout=5)
        conns = await server.await_finished(2)
    assert all(not c.encrypted and c.received == b"" for c in conns)


@pytest.mark.parametrize("bad", BAD)
async def test_starttls_refuses_bad_certificates(certs: Certs, bad: str) -> None:
    cert = certs.all_bad()[bad]
    async with ScriptedServer(starttls_then_hello, cert=cert) as server:
        stream = await open_stream(endpoint(server.port), None, connect_timeout=5)
        await smtp_starttls_prologue(stream)
        with pytest.raises(errors.CertificateError):
            await start_tls(stream, create_ssl_context(certs.ca_file), timeout=5)
        assert not stream.encrypted
        await stream.close()
        conn = (await server.await_finished(1))[0]
    assert bytes(conn.received_plain) == b"STARTTLS\r\n" and not conn.encrypted


def trusting_file(certs: Certs, name: str) -> Path:
    return {"unknown_ca": certs.unknown_ca_file, "self_signed": certs.self_signed_file}[name]


@pytest.mark.parametrize("name", ["good", "unknown_ca", "self_signed"])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_matching_ca_file_is_accepted(certs: Certs, name: str, host: str) -> None:
    cert = certs.good if name == "good" else certs.all_bad()[name]
    ca_file = certs.ca_file if name == "good" else trusting_file(certs, name)
    async with ScriptedServer(hello, cert=cert, implicit_tls=True) as server:
        stream = await open_stream(
            endpoint(server.port, Security.TLS, host), create_ssl_context(ca_file), connect_timeout=5
        )
        assert await asyncio.wait_for(stream.reader.readline(), 5) == b"* OK hello over TLS\r\n"
        await stream.close()


async def test_default_trust_refuses_a_private_ca(certs: Certs) -> None:
    async with ScriptedServer(hello, cert=certs.good, implicit_tls=True) as server:
        with pytest.raises(errors.CertificateError, match="certificate verif"):
            await open_stream(endpoint(server.port, Security.TLS), create_ssl_context(), connect_timeout=5)


@pytest.mark.parametrize("bad", BAD)
async def test_allow_insecure_accepts_any_certificate_and_warns(certs: Certs, bad: str) -> None:
    with pytest.warns(InsecureWarning):
        context = create_ssl_context(allow_insecure=True)
    async with ScriptedServer(starttls_then_hello, cert=certs.all_bad()[bad]) as server:
        stream = await open_stream(endpoint(server.port), None, connect_timeout=5)
        await smtp_starttls_prologue(stream)
        await start_tls(stream, context, timeout=5)
        assert await asyncio.wait_for(stream.reader.readline(), 5) == b"* OK hello over TLS\r\n"
        await stream.close()


# -- bounded time -----------------------------------------------------------------------------


async def silent(conn: ScriptConn) -> None:
    await conn.read_rest(10)


async def test_implicit_tls_handshake_against_a_silent_server_times_out(certs: Certs) -> None:
    leak_check = LeakCheck()
    async with ScriptedServer(silent) as server:
        start = time.monotonic()
        with pytest.raises(errors.TimeoutError):
            await open_stream(
                endpoint(server.port, Security.TLS), create_ssl_context(certs.ca_file), connect_timeout=0.5
            )
        assert time.monotonic() - start < 0.5 + SLACK
    leak_check.assert_clean(ignore_threads=("asyncio_",))


async def test_connect_to_a_blackhole_times_out() -> None:
    leak_check = LeakCheck()
    with Blackhole() as hole:
        start = time.monotonic()
        with pytest.raises(errors.TimeoutError):
            await open_stream(endpoint(hole.port, Security.STARTTLS), None, connect_timeout=0.5)
        assert time.monotonic() - start < 0.5 + SLACK
    leak_check.assert_clean(ignore_threads=("asyncio_",))


async def test_starttls_handshake_against_a_silent_server_times_out(certs: Certs) -> None:
    async def script(conn: ScriptConn) -> None:
        await conn.sendline("220 ready")
        await conn.expect("STARTTLS")
        await conn.sendline("220 go ahead")
        await conn.read_rest(10)  # never answers the ClientHello

    async with ScriptedServer(script, certs) as server:
        stream = await open_stream(endpoint(server.port), None, connect_timeout=5)
        await smtp_starttls_prologue(stream)
        start = time.monotonic()
        with pytest.raises(errors.TimeoutError):
            await start_tls(stream, create_ssl_context(certs.ca_file), timeout=0.5)
        assert time.monotonic() - start < 0.5 + SLACK
        await stream.close(timeout=0.5)


async def test_connection_refused_is_a_connect_error() -> None:
    with Blackhole() as hole:
        port = hole.port
    with pytest.raises(errors.ConnectError):
        await open_stream(endpoint(port), None, connect_timeout=5)


@pytest.mark.parametrize("action", ["cut", "reset"])
async def test_handshake_cut_by_the_network_is_a_typed_error(certs: Certs, action: str) -> None:
    async with ScriptedServer(hello, cert=certs.good, implicit_tls=True) as server:
        plan = FaultPlan(action=action, direction=DOWN, after=40)  # type: ignore[arg-type]
        async with FaultProxy((server.host, server.port), plan) as proxy:
            start = time.monotonic()
            with pytest.raises((errors.ConnectionLost, errors.TLSError, errors.ConnectError)):
                await open_stream(
                    endpoint(proxy.port, Security.TLS), create_ssl_context(certs.ca_file), connect_timeout=3
                )
            assert time.monotonic() - start < 3 + SLACK


async def test_stream_close_never_raises_when_the_peer_is_gone(certs: Certs) -> None:
    async with ScriptedServer(hello, cert=certs.good, implicit_tls=True) as server:
        async with FaultProxy((server.host, server.port)) as proxy:
            stream = await open_stream(
                endpoint(proxy.port, Security.TLS), create_ssl_context(certs.ca_file), connect_timeout=5
            )
            await asyncio.wait_for(stream.reader.readline(), 5)
        # proxy closed: every proxied socket was aborted under the stream
        start = time.monotonic()
        await stream.close(timeout=1)
        assert time.monotonic() - start < 1 + SLACK
