"""The fault tools themselves: the proxy does exactly the fault it was told, the scripted server records
exactly what the client sent, and each test certificate fails verification for its own reason."""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
import statistics
import time
from collections.abc import Iterator

import pytest

from tests.faults.conftest import LeakCheck
from tests.faults.proxy import DOWN, UP, FaultPlan, FaultProxy, queued
from tests.faults.scripted import Certs, ScriptConn, ScriptedServer

pytestmark = pytest.mark.faults

BANNER = bytes(range(256)) * 40  # 10,240 bytes the server sends first


async def banner_then_echo(conn: ScriptConn) -> None:
    await conn.send(BANNER)
    while True:
        data = await conn.read(4096, timeout=5)
        if not data:
            return
        await conn.send(data)


def recv_all(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, list[int]]:
    """Read until EOF; returns the data and the size of each read."""
    sock.settimeout(timeout)
    data = bytearray()
    sizes: list[int] = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return bytes(data), sizes
        sizes.append(len(chunk))
        data += chunk


def recv_exactly(sock: socket.socket, n: int, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


@pytest.fixture
def echo_server() -> Iterator[ScriptedServer]:
    with ScriptedServer(banner_then_echo) as server:
        yield server


def test_clean_proxy_passes_bytes_and_records_both_directions(echo_server: ScriptedServer) -> None:
    with FaultProxy((echo_server.host, echo_server.port)) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
            assert recv_exactly(sock, len(BANNER)) == BANNER
            sock.sendall(b"hello\r\n")
            assert recv_exactly(sock, 7) == b"hello\r\n"
        assert proxy.wait_all_closed()
        assert proxy.connection_count == 1
        conn = proxy.connections[0]
        assert bytes(conn.up) == b"hello\r\n"
        assert bytes(conn.down) == BANNER + b"hello\r\n"
        assert not conn.fired


@pytest.mark.parametrize("after", [0, 1, 1000, len(BANNER) - 1])
def test_cut_down_delivers_exactly_n_bytes_then_eof(echo_server: ScriptedServer, after: int) -> None:
    with FaultProxy((echo_server.host, echo_server.port), FaultPlan.cut(after, DOWN)) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
            data, _ = recv_all(sock)
        assert data == BANNER[:after]
        assert proxy.connections[0].fired
        assert proxy.wait_all_closed()


def test_cut_up_forwards_exactly_n_client_bytes(echo_server: ScriptedServer) -> None:
    with FaultProxy((echo_server.host, echo_server.port), FaultPlan.cut(5, UP)) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
            recv_exactly(sock, len(BANNER))
            sock.sendall(b"0123456789")
            rest, _ = recv_all(sock)
        assert rest in (b"", b"01234")  # the echo of the 5 forwarded bytes may or may not make it
        assert bytes(proxy.connections[0].up) == b"0123456789"  # the capture has what the client sent
    server_conn = echo_server.wait_finished(1)[0]
    assert bytes(server_conn.received_plain) == b"01234"


def test_reset_gives_the_client_an_rst(echo_server: ScriptedServer) -> None:
    with FaultProxy((echo_server.host, echo_server.port), FaultPlan.reset(100, DOWN)) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
            sock.settimeout(5)
            with pytest.raises(ConnectionResetError):
                recv_all(sock)
        assert proxy.wait_all_closed()


def test_stall_holds_the_connection_open_and_ends_when_the_client_leaves(
    echo_server: ScriptedServer,
) -> None:
    with FaultProxy((echo_server.host, echo_server.port), FaultPlan.stall(10, DOWN)) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port))
        assert recv_exactly(sock, 10) == BANNER[:10]
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(1)
        assert proxy.open_connections == 1
        sock.close()
        assert proxy.wait_all_closed(5)


def test_an_upward_stall_drops_client_bytes_and_ends_when_the_client_leaves(
    echo_server: ScriptedServer,
) -> None:
    with FaultProxy((echo_server.host, echo_server.port), FaultPlan.stall(3, UP)) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port))
        recv_exactly(sock, len(BANNER))
        sock.sendall(b"abcdef")
        assert recv_exactly(sock, 3, timeout=1) == b"abc"  # only what passed before the stall
        sock.close()
        assert proxy.wait_all_closed(5)
        assert bytes(proxy.connections[0].up) == b"abcdef"


def test_fragments_arrive_as_separate_small_reads(echo_server: ScriptedServer) -> None:
    plan = FaultPlan.cut(200, DOWN, fragment=3, fragment_delay=0.002)
    with (
        FaultProxy((echo_server.host, echo_server.port), plan) as proxy,
        socket.create_connection(("127.0.0.1", proxy.port)) as sock,
    ):
        data, sizes = recv_all(sock)
    assert data == BANNER[:200]
    # The reader may be descheduled and then find several fragments waiting (the OS promises no
    # read boundaries), so this asserts what the proxy controls: most reads are a single fragment.
    # Without fragmenting, the 200 bytes arrive in one or two reads.
    assert statistics.median(sizes) == 3, sizes
    assert len(sizes) >= 200 // 6, sizes


def test_latency_delays_each_chunk(echo_server: ScriptedServer) -> None:
    with (
        FaultProxy((echo_server.host, echo_server.port), FaultPlan(latency=0.3)) as proxy,
        socket.create_connection(("127.0.0.1", proxy.port)) as sock,
    ):
        start = time.monotonic()
        recv_exactly(sock, len(BANNER))
        assert time.monotonic() - start >= 0.28


def test_sequence_plans_apply_per_connection(echo_server: ScriptedServer) -> None:
    with FaultProxy((echo_server.host, echo_server.port), [FaultPlan.cut(3, DOWN)]) as proxy:
        for expected in (BANNER[:3], BANNER):
            with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
                got = recv_exactly(sock, len(BANNER))
                assert got == expected
        assert proxy.connection_count == 2


def test_random_plans_are_reproducible_from_the_seed() -> None:
    def plans(seed: int) -> list[FaultPlan]:
        proxy = FaultProxy(("127.0.0.1", 9), lambda i, rng: FaultPlan.random(rng, 1000), seed=seed)
        return [proxy._plan_for(i) for i in range(20)]

    assert plans(7) == plans(7)
    assert plans(7) != plans(8)
    assert {p.action for p in plans(7)} == {"cut", "reset"}
    assert all(0 <= p.after < 1000 for p in plans(7))
    assert FaultPlan.random(random.Random(1), 10).direction in (UP, DOWN)
    source = queued([FaultPlan.cut(5)])
    rng = random.Random(0)
    assert source(7, rng) == FaultPlan.cut(5) and source(8, rng) == FaultPlan()


def test_proxy_to_a_dead_target_resets_the_client() -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()  # nothing listens there now
    with (
        FaultProxy(("127.0.0.1", port)) as proxy,
        socket.create_connection(("127.0.0.1", proxy.port)) as sock,
    ):
        sock.settimeout(5)
        with pytest.raises(ConnectionResetError):
            sock.recv(1)


async def test_proxy_and_server_work_from_async_code() -> None:
    async with (
        ScriptedServer(banner_then_echo) as server,
        FaultProxy((server.host, server.port), FaultPlan(fragment=512)) as proxy,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await asyncio.wait_for(reader.readexactly(len(BANNER)), 5) == BANNER
        writer.close()
        await writer.wait_closed()


# -- scripted server and certificates -------------------------------------------------------


def client_context(cafile: object) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile))
    return ctx


async def starttls_script(conn: ScriptConn) -> None:
    await conn.sendline("220 ready")
    await conn.expect("STARTTLS")
    await conn.sendline("220 go ahead")
    if await conn.start_tls():
        await conn.expect("SECRET")
        await conn.sendline("250 ok")


def test_scripted_server_separates_plaintext_from_tls(certs: Certs) -> None:
    with ScriptedServer(starttls_script, certs) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            f = raw.makefile("rwb")
            assert f.readline() == b"220 ready\r\n"
            f.write(b"STARTTLS\r\n")
            f.flush()
            assert f.readline() == b"220 go ahead\r\n"
            with client_context(certs.ca_file).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"SECRET x\r\n")
                assert tls.recv(100) == b"250 ok\r\n"
        conn = server.wait_finished(1)[0]
        server.check()
    assert bytes(conn.received_plain) == b"STARTTLS\r\n"
    assert bytes(conn.received_tls) == b"SECRET x\r\n"
    assert conn.encrypted and conn.tls_error is None


def test_scripted_server_reports_script_failures(certs: Certs) -> None:
    with ScriptedServer(starttls_script, certs) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            raw.recv(100)
            raw.sendall(b"EHLO x\r\n")
        server.wait_finished(1)
    with pytest.raises(AssertionError, match="STARTTLS"):
        server.check()


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("self_signed", "self-signed certificate"),
        ("expired", "certificate has expired"),
        ("wrong_host", "address mismatch"),
        ("unknown_ca", "unable to get local issuer certificate"),
    ],
)
def test_each_bad_certificate_fails_for_its_own_reason(certs: Certs, name: str, reason: str) -> None:
    async def tls_hello(conn: ScriptConn) -> None:
        await conn.sendline("* OK hello")

    bad = certs.all_bad()[name]
    with ScriptedServer(tls_hello, cert=bad, implicit_tls=True) as server:
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
            pytest.raises(ssl.SSLCertVerificationError) as info,
        ):
            client_context(certs.ca_file).wrap_socket(raw, server_hostname="127.0.0.1")
        assert reason in info.value.verify_message
        conn = server.wait_finished(1)[0]
        assert conn.tls_error is not None and not conn.encrypted
    with (
        ScriptedServer(tls_hello, cert=certs.good, implicit_tls=True) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
        client_context(certs.ca_file).wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.recv(100) == b"* OK hello\r\n"


def test_leak_check_notices_a_socket_left_open() -> None:
    check = LeakCheck()
    leaked = socket.socket()
    try:
        with pytest.raises(AssertionError, match="1 socket"):
            check.assert_clean(timeout=0.2)
    finally:
        leaked.close()
    check.assert_clean(timeout=1)
