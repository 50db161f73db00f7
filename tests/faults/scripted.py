"""Hostile servers on loopback, driven by a script, and the test certificates they present.

Rule: a ``ScriptedServer`` records every byte each client sent, split into what arrived before TLS
(``received_plain``) and after (``received_tls``), so a test can prove that no credential crossed in
plaintext and that nothing at all followed a refused STARTTLS. Scripts are async functions::

    async def stripped(conn: ScriptConn) -> None:
        await conn.sendline("+OK POP3 ready")
        await conn.readline()                  # CAPA
        await conn.sendline("+OK\\r\\nUSER\\r\\n.")  # no STLS advertised
        await conn.read_rest()                 # everything the client sends until it hangs up

    with ScriptedServer(stripped, certs) as server:
        ... connect to 127.0.0.1:server.port ...
    assert server.connections[0].received_plain == b"CAPA\\r\\n"

``FakeSMTP``/``FakeIMAP``/``FakePOP3`` are ready-made scripts with one knob per hostile behaviour;
``ScriptedServers`` runs several at fixed addresses (``127.0.0.x:port``), for discovery tests.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import ipaddress
import re
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailkit.account import AsyncAccount
from mailkit.tls import InsecureWarning

__all__ = [
    "STARTTLS_MODES",
    "Certs",
    "FakeBase",
    "FakeIMAP",
    "FakePOP3",
    "FakeSMTP",
    "ScriptConn",
    "ScriptError",
    "ScriptedServer",
    "ScriptedServers",
    "ServerCert",
    "assert_no_secret",
    "dot_stuff",
    "secret_forms",
    "silent",
    "streams",
]

LOOPBACK_NAMES = ("127.0.0.1", "localhost")


class ScriptError(AssertionError):
    """The client did not do what the script expected."""


@dataclass(frozen=True)
class ServerCert:
    """A certificate chain and key (PEM files) a scripted server can present."""

    name: str
    cert_file: Path  # leaf then chain
    key_file: Path

    def context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


class Certs:
    """A throwaway PKI: one CA the tests trust and the certificates every refusal test needs.

    - ``good``: for 127.0.0.1 and localhost, signed by ``ca_file``'s CA (must be accepted);
    - ``wrong_host``: signed by the trusted CA, but for ``wrong.example.test``;
    - ``expired``: trusted CA, right names, expired a day ago;
    - ``unknown_ca``: right names, signed by another CA (``unknown_ca_file``), not trusted by default;
    - ``self_signed``: right names, its own issuer (``self_signed_file`` is the cert itself).
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.ca = trustme.CA(organization_name="mailkit faults CA")
        self.ca_file = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.other_ca = trustme.CA(organization_name="mailkit untrusted CA")
        self.unknown_ca_file = directory / "unknown-ca.pem"
        self.other_ca.cert_pem.write_to_path(str(self.unknown_ca_file))
        now = dt.datetime.now(dt.UTC)
        self.good = self._leaf("good", self.ca.issue_cert(*LOOPBACK_NAMES))
        self.wrong_host = self._leaf("wrong_host", self.ca.issue_cert("wrong.example.test"))
        self.expired = self._leaf(
            "expired",
            self.ca.issue_cert(
                *LOOPBACK_NAMES,
                not_before=now - dt.timedelta(days=30),
                not_after=now - dt.timedelta(days=1),
            ),
        )
        self.unknown_ca = self._leaf("unknown_ca", self.other_ca.issue_cert(*LOOPBACK_NAMES))
        self.self_signed = self._self_signed()
        self.self_signed_file = self.self_signed.cert_file

    def _leaf(self, name: str, leaf: trustme.LeafCert) -> ServerCert:
        cert_file = self.directory / f"{name}.pem"
        key_file = self.directory / f"{name}.key"
        cert_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key_file))
        return ServerCert(name, cert_file, key_file)

    def _self_signed(self) -> ServerCert:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        cert_file = self.directory / "self_signed.pem"
        key_file = self.directory / "self_signed.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return ServerCert("self_signed", cert_file, key_file)

    def all_bad(self) -> dict[str, ServerCert]:
        return {
            "self_signed": self.self_signed,
            "expired": self.expired,
            "wrong_host": self.wrong_host,
            "unknown_ca": self.unknown_ca,
        }


class ScriptConn:
    """The server side of one client connection, as a script sees it."""

    def __init__(
        self,
        index: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter | None,
        cert: ServerCert | None,
        timeout: float,
    ) -> None:
        self.index = index
        self._reader = reader
        self._maybe_writer = writer  # None only for a connection whose TLS handshake failed
        self._cert = cert
        self.timeout = timeout
        self.encrypted = False
        self.received_plain = bytearray()  # what the client sent before TLS
        self.received_tls = bytearray()  # what the client sent inside TLS
        self.sent = bytearray()  # what the script sent (both phases)
        self.tls_error: BaseException | None = None  # why a TLS handshake failed, if it did
        self.eof = False  # the client closed its side
        self.finished = threading.Event()

    @property
    def _writer(self) -> asyncio.StreamWriter:
        if self._maybe_writer is None:
            raise ScriptError("this connection never got past its TLS handshake")
        return self._maybe_writer

    @property
    def received(self) -> bytes:
        return bytes(self.received_plain + self.received_tls)

    def _record(self, data: bytes) -> bytes:
        (self.received_tls if self.encrypted else self.received_plain).extend(data)
        if not data:
            self.eof = True
        return data

    async def send(self, data: bytes | str) -> None:
        raw = data.encode() if isinstance(data, str) else data
        if self._writer.transport.is_closing():
            # The client left: end the script (a flooding script would otherwise spin forever).
            raise ConnectionResetError("the client closed the connection")
        # drain() does not yield while the buffer is low: yield anyway, so that a flooding script
        # lets the loop notice a lost connection (and a cancellation) instead of spinning. Before
        # the write, not after: a go-ahead followed by start_tls() must not let the loop read the
        # client's ClientHello into the plaintext buffer in between.
        await asyncio.sleep(0)
        self.sent += raw
        self._writer.write(raw)
        await self._writer.drain()

    async def sendline(self, line: bytes | str) -> None:
        """Send ``line`` plus CRLF (lines inside ``line`` should already end with CRLF)."""
        raw = line.encode() if isinstance(line, str) else line
        await self.send(raw + b"\r\n")

    async def readline(self, timeout: float | None = None) -> bytes:
        """The next line the client sends (with its line ending); b"" when it hung up or went quiet."""
        try:
            line = await asyncio.wait_for(self._reader.readline(), timeout or self.timeout)
        except (TimeoutError, ConnectionError, ssl.SSLError):
            return b""
        except ValueError:  # over the reader's limit
            line = await self._reader.read(1 << 20)
        return self._record(line)

    async def expect(self, prefix: bytes | str, timeout: float | None = None) -> bytes:
        """Read a line and check it starts with ``prefix`` (case-insensitive, after any tag)."""
        want = (prefix.encode() if isinstance(prefix, str) else prefix).upper()
        line = await self.readline(timeout)
        if not line.upper().startswith(want):
            words = line.split(b" ", 1)
            if not (len(words) == 2 and words[1].upper().startswith(want)):
                raise ScriptError(f"expected {want!r}, the client sent {line!r}")
        return line

    async def read_until(self, separator: bytes, timeout: float | None = None) -> bytes:
        """Everything up to and including ``separator`` (b"" or what came if the client left)."""
        try:
            data = await asyncio.wait_for(self._reader.readuntil(separator), timeout or self.timeout)
        except asyncio.IncompleteReadError as exc:
            data = exc.partial
        except (TimeoutError, ConnectionError, ssl.SSLError):
            return b""
        return self._record(data)

    async def read(self, n: int, timeout: float | None = None) -> bytes:
        try:
            data = await asyncio.wait_for(self._reader.read(n), timeout or self.timeout)
        except (TimeoutError, ConnectionError, ssl.SSLError):
            return b""
        return self._record(data)

    async def read_rest(self, timeout: float = 2.0) -> bytes:
        """Everything the client sends until it hangs up or stays quiet for ``timeout`` seconds."""
        got = bytearray()
        while True:
            chunk = await self.read(65536, timeout)
            if not chunk:
                return bytes(got)
            got += chunk

    async def start_tls(self, cert: ServerCert | None = None) -> bool:
        """Server side of the TLS handshake; False (and ``tls_error`` set) if the client refused."""
        chosen = cert or self._cert
        if chosen is None:
            raise ScriptError("this ScriptedServer has no certificate")
        try:
            await asyncio.wait_for(self._writer.start_tls(chosen.context()), self.timeout)
        except (TimeoutError, ssl.SSLError, OSError, ConnectionError) as exc:
            self.tls_error = exc
            return False
        self.encrypted = True
        return True

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.wait_closed(), 2)

    async def break_tls(self) -> None:
        """Answer the client's TLS handshake (after a STARTTLS go-ahead) with bytes that are not TLS."""
        await self.read(65536)  # the ClientHello, or nothing if the client gave up
        await self.send(b"this is not a TLS handshake\r\n" * 4)

    def abort(self) -> None:
        self._writer.transport.abort()

    def stop_reading(self) -> None:
        """Go deaf: nothing the client sends from now on is read, a TLS close_notify included."""
        self._writer.transport.pause_reading()


Script = Callable[[ScriptConn], Awaitable[None]]
StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def streams(handler: StreamHandler) -> Script:
    """A script written against asyncio's (reader, writer) pair; what it reads is not recorded."""

    async def script(conn: ScriptConn) -> None:
        await handler(conn._reader, conn._writer)

    return script


async def silent(conn: ScriptConn) -> None:
    """Accept and never say anything (nor answer a TLS ClientHello), until the client leaves."""
    while await conn.read(65536, timeout=3600):
        pass


class ScriptedServer:
    """A loopback server running ``script`` once per client connection, in its own thread, on
    ``host`` (any 127.0.0.x) and ``port`` (default: a free one).

    With ``implicit_tls=True`` the TLS handshake (with ``cert``, default ``certs.good``) happens
    before the script runs; a refused handshake is recorded in ``conn.tls_error`` and the script is
    skipped. Exceptions raised by scripts are kept in ``errors`` (``check()`` re-raises the first).
    """

    def __init__(
        self,
        script: Script,
        certs: Certs | None = None,
        *,
        cert: ServerCert | None = None,
        implicit_tls: bool = False,
        timeout: float = 5.0,
        limit: int = 1 << 26,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.script = script
        self.cert = cert or (certs.good if certs is not None else None)
        self.implicit_tls = implicit_tls
        self.timeout = timeout
        self.limit = limit
        self.host = host
        self.port = port  # 0: a free port, known once started
        self.connections: list[ScriptConn] = []
        self.errors: list[BaseException] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listener: socket.socket
        self._accepting: asyncio.Future[None]
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: list[OSError] = []
        if implicit_tls and self.cert is None:
            raise ValueError("implicit_tls needs a certificate")

    def start(self) -> ScriptedServer:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.set_exception_handler(lambda _loop, _context: None)  # handshake noise from refusals
            try:
                loop.run_until_complete(self._listen())
            except OSError as exc:  # e.g. the fixed port is taken: say so in the starting thread
                self._failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name="scripted-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("scripted server did not start")
        if self._failure:
            raise self._failure[0]
        return self

    async def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # fixed ports, run after run
        listener.bind((self.host, self.port))
        listener.listen(100)
        listener.setblocking(False)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._accepting = asyncio.ensure_future(self._accept_loop(listener))

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            sock, _ = await loop.sock_accept(listener)
            task = asyncio.ensure_future(self._handle(sock))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, sock: socket.socket) -> None:
        # Own accept loop rather than start_server: with implicit TLS the handshake must begin
        # before anything reads the socket, or a fast ClientHello would land in the plain buffer.
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=self.limit)
        # A connected-callback makes StreamWriter.start_tls act as the server side; it also hands
        # us the writer the protocol made.
        writers: list[asyncio.StreamWriter] = []
        protocol = asyncio.StreamReaderProtocol(reader, lambda _r, w: writers.append(w))
        index = len(self.connections)
        conn: ScriptConn | None = None
        transport: asyncio.BaseTransport | None = None
        try:
            if self.implicit_tls:
                assert self.cert is not None
                try:
                    transport, _ = await loop.connect_accepted_socket(
                        lambda: protocol, sock, ssl=self.cert.context(), ssl_handshake_timeout=self.timeout
                    )
                except (TimeoutError, ssl.SSLError, OSError) as exc:
                    failed = ScriptConn(index, reader, None, self.cert, self.timeout)
                    failed.tls_error = exc
                    failed.finished.set()
                    self.connections.append(failed)
                    sock.close()
                    return
            else:
                transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock)
            conn = ScriptConn(index, reader, writers[0], self.cert, self.timeout)
            conn.encrypted = self.implicit_tls
            self.connections.append(conn)
            await self.script(conn)
        except asyncio.CancelledError:
            pass
        except (ConnectionError, ssl.SSLError):
            pass  # the client hung up on us: normal for a hostile script
        except Exception as exc:  # noqa: BLE001 - kept for the test to inspect
            self.errors.append(exc)
        finally:
            if conn is not None:
                conn.abort()
            elif transport is not None:
                transport.abort()  # type: ignore[attr-defined]
            else:
                sock.close()
            if conn is not None:
                conn.finished.set()

    async def _shutdown(self) -> None:
        self._accepting.cancel()
        self._listener.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    def close(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> ScriptedServer:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def wait_finished(self, count: int = 1, timeout: float = 10.0) -> list[ScriptConn]:
        """Wait until ``count`` connections have run their script to the end; returns them."""
        deadline = time.monotonic() + timeout
        while len(self.connections) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        for conn in self.connections[:count]:
            conn.finished.wait(max(0.0, deadline - time.monotonic()))
        return self.connections[:count]

    async def await_finished(self, count: int = 1, timeout: float = 10.0) -> list[ScriptConn]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.wait_finished, count, timeout)

    def check(self) -> None:
        if self.errors:
            raise self.errors[0]

    @property
    def received_plain(self) -> bytes:
        """Every plaintext byte every client sent, in connection order."""
        return b"".join(bytes(c.received_plain) for c in self.connections)

    @property
    def received(self) -> bytes:
        return b"".join(c.received for c in self.connections)


# -- protocol personalities: fake servers with one knob per hostile behaviour ------------------------

STARTTLS_MODES = ("ok", "missing", "error", "garbage", "inject", "broken")
"""How a fake answers STARTTLS/STLS: agree; not advertised (and refused if asked anyway); refuse;
answer with garbage; agree and then inject plaintext bytes in the same segment as the go-ahead
(if the client still shakes hands, the session then goes on normally over TLS); agree and then
answer the handshake with bytes that are not TLS (``broken``)."""


def hostile_account(
    protocol: str, port: int, certs: Certs, security: str, *, user: str, **kw: object
) -> AsyncAccount:
    """An account whose ``protocol`` endpoint is a scripted server on 127.0.0.1:``port``, reached
    with ``security`` "tls", "starttls" or "insecure" (the InsecureWarning is expected there);
    ``kw`` are further AsyncAccount options (``password=``, ``timeouts=``, ``oauth2=``, ...)."""
    scheme = {"tls": f"{protocol}s", "starttls": f"{protocol}+starttls", "insecure": f"{protocol}+insecure"}
    options: dict[str, object] = {
        protocol: f"{scheme[security]}://127.0.0.1:{port}",
        "ca_file": certs.ca_file,
        "test_environment": True,
    }
    options.update(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureWarning)
        return AsyncAccount(user, **options)  # type: ignore[arg-type]


def secret_forms(user: str, password: str) -> list[bytes]:
    """Every encoding of a password that may cross a wire: raw, and inside base64 SASL payloads."""
    raw = password.encode()
    forms = [raw, base64.b64encode(raw)]
    for authz in ("", user):
        forms.append(base64.b64encode(f"{authz}\0{user}\0{password}".encode()))
    return forms


def assert_no_secret(data: bytes, user: str, password: str, where: str = "plaintext") -> None:
    for form in secret_forms(user, password):
        assert form not in data, f"credential {form[:6]!r}... found in the {where} bytes: {data[:300]!r}"


@dataclass
class FakeBase:
    user: str = "alice@example.test"
    password: str = "alicepw"
    starttls: str = "ok"
    inject: bytes = b""
    logins: int = 0  # successful logins
    tls_upgrades: int = 0
    attempts: list[str] = field(default_factory=list)  # every login attempt: "<user> ok=<bool>"

    def _check_mode(self) -> None:
        if self.starttls not in STARTTLS_MODES:
            raise ValueError(f"unknown starttls mode {self.starttls!r}")

    def _login_ok(self, user: str, password: str) -> bool:
        ok = user == self.user and password == self.password
        self.logins += ok
        self.attempts.append(f"{user} ok={ok}")
        return ok

    def _sasl_plain(self, b64: bytes) -> bool:
        try:
            _authz, user, password = base64.b64decode(b64.strip(), validate=True).split(b"\0")
        except (ValueError, binascii.Error):
            self.attempts.append("undecodable SASL PLAIN ok=False")
            return False
        return self._login_ok(user.decode(), password.decode())


@dataclass
class FakePOP3(FakeBase):
    """A POP3 server (RFC 1939 + CAPA, STLS, SASL PLAIN, UIDL, TOP) with hostile knobs.

    ``messages`` are the maildrop; message *i* (0-based) has the UIDL ``uid-i``. Deletions are
    committed only by QUIT (into ``deleted``, a set of those indexes) and later sessions no longer
    see them. ``on_retr`` may replace RETR for hostile bodies: ``async (conn, index) -> None``.
    """

    greeting: bytes = b"+OK fake POP3 ready"
    pre_caps: tuple[str, ...] = ("USER", "UIDL", "TOP", "STLS", "SASL PLAIN")
    post_caps: tuple[str, ...] = ("USER", "UIDL", "TOP", "SASL PLAIN")
    messages: list[bytes] = field(default_factory=list)
    deleted: set[int] = field(default_factory=set)
    on_retr: Callable[[ScriptConn, int], Awaitable[None]] | None = None
    quits: int = 0  # sessions that committed with QUIT

    @property
    def remaining(self) -> list[int]:
        return [i for i in range(len(self.messages)) if i not in self.deleted]

    async def __call__(self, conn: ScriptConn) -> None:
        self._check_mode()
        await conn.sendline(self.greeting)
        user: str | None = None
        authed = False
        drop = self.remaining  # this session's numbering: message n is drop[n - 1]
        pending: set[int] = set()  # message numbers marked for deletion
        while True:
            line = await conn.readline()
            if not line:
                return
            words = line.rstrip(b"\r\n").split(b" ")
            cmd, args = words[0].upper(), words[1:]
            number = int(args[0]) if args and args[0].isdigit() else 0
            valid = 1 <= number <= len(drop) and number not in pending
            if cmd == b"CAPA":
                caps = self.post_caps if conn.encrypted else self.pre_caps
                if self.starttls == "missing":
                    caps = tuple(c for c in caps if c != "STLS")
                await conn.send(b"+OK\r\n" + b"".join(c.encode() + b"\r\n" for c in caps) + b".\r\n")
            elif cmd == b"STLS" and not conn.encrypted:
                if self.starttls in ("missing", "error"):
                    await conn.sendline("-ERR STLS not available")
                elif self.starttls == "garbage":
                    await conn.sendline(b"\x16\x03\x01 what is TLS?")
                elif self.starttls == "broken":
                    await conn.sendline("+OK Begin TLS negotiation")
                    await conn.break_tls()
                    return
                elif self.starttls == "inject":
                    await conn.send(b"+OK Begin TLS\r\n" + (self.inject or b"+OK injected\r\n"))
                    # A client that (wrongly) goes on gets a normal session, so a test sees
                    # whether it took the injected bytes for the server's first TLS answer.
                    if not await conn.start_tls():
                        return
                    self.tls_upgrades += 1
                else:
                    await conn.sendline("+OK Begin TLS negotiation")
                    if not await conn.start_tls():
                        return
                    self.tls_upgrades += 1
            elif cmd == b"USER" and args:
                user = b" ".join(args).decode()
                await conn.sendline("+OK")
            elif cmd == b"PASS":
                authed = user is not None and self._login_ok(user, b" ".join(args).decode())
                await conn.sendline("+OK logged in" if authed else "-ERR [AUTH] invalid login")
            elif cmd == b"AUTH" and args and args[0].upper() == b"PLAIN":
                payload = args[1] if len(args) > 1 else None
                if payload is None:
                    await conn.sendline("+ ")
                    payload = (await conn.readline()).rstrip(b"\r\n")
                authed = self._sasl_plain(payload)
                await conn.sendline("+OK logged in" if authed else "-ERR [AUTH] invalid login")
            elif cmd == b"QUIT":
                self.deleted |= {drop[n - 1] for n in pending}
                self.quits += 1
                await conn.sendline("+OK bye")
                return
            elif not authed:
                await conn.sendline("-ERR log in first")
            elif cmd == b"STAT":
                live = [n for n in range(1, len(drop) + 1) if n not in pending]
                size = sum(len(self.messages[drop[n - 1]]) for n in live)
                await conn.sendline(f"+OK {len(live)} {size}")
            elif cmd in (b"LIST", b"UIDL"):

                def value(n: int, listing: bool = cmd == b"LIST") -> str:
                    return str(len(self.messages[drop[n - 1]])) if listing else f"uid-{drop[n - 1]}"

                if args:
                    await conn.sendline(f"+OK {number} {value(number)}" if valid else "-ERR no such message")
                else:
                    live = [n for n in range(1, len(drop) + 1) if n not in pending]
                    body = b"".join(f"{n} {value(n)}\r\n".encode() for n in live)
                    await conn.send(b"+OK\r\n" + body + b".\r\n")
            elif cmd in (b"RETR", b"TOP") and args:
                if not valid:
                    await conn.sendline("-ERR no such message")
                elif self.on_retr is not None and cmd == b"RETR":
                    await self.on_retr(conn, drop[number - 1])
                else:
                    await conn.send(b"+OK\r\n" + dot_stuff(self.messages[drop[number - 1]]) + b".\r\n")
            elif cmd == b"DELE":
                if valid:
                    pending.add(number)
                await conn.sendline("+OK deleted" if valid else "-ERR no such message")
            elif cmd == b"RSET":
                pending.clear()
                await conn.sendline("+OK")
            elif cmd == b"NOOP":
                await conn.sendline("+OK")
            else:
                await conn.sendline("-ERR unknown command")


def dot_stuff(message: bytes) -> bytes:
    """A message as a multi-line POP3/SMTP body: CRLF line ends, leading dots doubled."""
    lines = message.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)


@dataclass
class FakeSMTP(FakeBase):
    """An ESMTP server (EHLO, STARTTLS, AUTH PLAIN/LOGIN, MAIL/RCPT/DATA) with hostile knobs.

    Accepted messages land in ``accepted`` as (sender, recipients, data without dot-stuffing).
    """

    greeting: bytes = b"220 fake.example.test ESMTP"
    pre_caps: tuple[str, ...] = ("PIPELINING", "8BITMIME", "STARTTLS", "AUTH PLAIN LOGIN")
    post_caps: tuple[str, ...] = ("PIPELINING", "8BITMIME", "AUTH PLAIN LOGIN")
    accepted: list[tuple[bytes, list[bytes], bytes]] = field(default_factory=list)
    data_reply: bytes = b"250 2.0.0 queued"

    async def __call__(self, conn: ScriptConn) -> None:
        self._check_mode()
        await conn.sendline(self.greeting)
        sender: bytes | None = None
        rcpts: list[bytes] = []
        while True:
            line = await conn.readline()
            if not line:
                return
            text = line.rstrip(b"\r\n")
            cmd = text[:4].upper()
            if cmd in (b"EHLO", b"HELO"):
                caps = self.post_caps if conn.encrypted else self.pre_caps
                if self.starttls == "missing":
                    caps = tuple(c for c in caps if c != "STARTTLS")
                lines = [b"fake.example.test", *(c.encode() for c in caps)]
                await conn.send(
                    b"".join(
                        b"250" + (b" " if i == len(lines) - 1 else b"-") + item + b"\r\n"
                        for i, item in enumerate(lines)
                    )
                )
            elif text.upper() == b"STARTTLS" and not conn.encrypted:
                if self.starttls in ("missing", "error"):
                    await conn.sendline("454 4.7.0 TLS not available")
                elif self.starttls == "garbage":
                    await conn.sendline(b"\x16\x03\x01 what is TLS?")
                elif self.starttls == "broken":
                    await conn.sendline("220 2.0.0 Ready to start TLS")
                    await conn.break_tls()
                    return
                elif self.starttls == "inject":
                    await conn.send(b"220 2.0.0 Ready\r\n" + (self.inject or b"250 injected\r\n"))
                    # A client that (wrongly) goes on gets a normal session, so a test sees
                    # whether it took the injected bytes for the server's first TLS answer.
                    if not await conn.start_tls():
                        return
                    self.tls_upgrades += 1
                else:
                    await conn.sendline("220 2.0.0 Ready to start TLS")
                    if not await conn.start_tls():
                        return
                    self.tls_upgrades += 1
            elif cmd == b"AUTH":
                words = text.split(b" ")
                mech = words[1].upper() if len(words) > 1 else b""
                if mech == b"PLAIN":
                    payload = words[2] if len(words) > 2 else None
                    if payload is None:
                        await conn.sendline("334 ")
                        payload = (await conn.readline()).rstrip(b"\r\n")
                    ok = self._sasl_plain(payload)
                elif mech == b"LOGIN":
                    if len(words) > 2:  # the user name as an initial response (RFC 4954)
                        user = base64.b64decode(words[2])
                    else:
                        await conn.sendline("334 VXNlcm5hbWU6")
                        user = base64.b64decode((await conn.readline()).strip() or b"")
                    await conn.sendline("334 UGFzc3dvcmQ6")
                    password = base64.b64decode((await conn.readline()).strip() or b"")
                    ok = self._login_ok(user.decode(), password.decode())
                else:
                    await conn.sendline("504 5.5.4 mechanism not supported")
                    continue
                await conn.sendline("235 2.7.0 Authenticated" if ok else "535 5.7.8 bad credentials")
            elif cmd == b"MAIL":
                sender, rcpts = text, []
                await conn.sendline("250 2.1.0 Ok")
            elif cmd == b"RCPT":
                rcpts.append(text)
                await conn.sendline("250 2.1.5 Ok")
            elif cmd == b"DATA":
                await conn.sendline("354 End data with <CR><LF>.<CR><LF>")
                raw = await conn.read_until(b"\r\n.\r\n")
                if not raw.endswith(b"\r\n.\r\n"):
                    return
                body = (b"\r\n" + raw[: -len(b".\r\n")]).replace(b"\r\n..", b"\r\n.")[2:]
                self.accepted.append((sender or b"", rcpts, body))
                await conn.sendline(self.data_reply)
            elif cmd == b"RSET":
                sender, rcpts = None, []
                await conn.sendline("250 2.0.0 Ok")
            elif cmd == b"NOOP":
                await conn.sendline("250 2.0.0 Ok")
            elif cmd == b"QUIT":
                await conn.sendline("221 2.0.0 Bye")
                return
            else:
                await conn.sendline("502 5.5.2 command not recognized")


@dataclass
class FakeIMAP(FakeBase):
    """An IMAP4rev1 server (CAPABILITY, STARTTLS, LOGIN, AUTHENTICATE PLAIN, SELECT, LOGOUT, NOOP)
    with hostile knobs. ``greeting`` may be a PREAUTH or carry an ``[ALERT]``; ``pre_tls_untagged``
    are lines injected before the STARTTLS go-ahead (tampering)."""

    greeting: bytes | None = None  # default: "* OK [CAPABILITY <caps of the current state>] ready"
    pre_caps: tuple[str, ...] = ("IMAP4rev1", "STARTTLS", "LOGINDISABLED")
    post_caps: tuple[str, ...] = ("IMAP4rev1", "AUTH=PLAIN", "IDLE", "UIDPLUS")
    pre_tls_untagged: tuple[bytes, ...] = ()
    exists: int = 0
    extra: Callable[[ScriptConn, bytes, bytes, bytes], Awaitable[bool]] | None = None
    commands: list[bytes] = field(default_factory=list)  # whole commands, literals inlined

    async def __call__(self, conn: ScriptConn) -> None:
        self._check_mode()
        caps = self.post_caps if conn.encrypted else self.pre_caps
        if self.starttls == "missing":
            caps = tuple(c for c in caps if c != "STARTTLS")
        greeting = self.greeting or b"* OK [CAPABILITY " + " ".join(caps).encode() + b"] fake IMAP ready"
        await conn.sendline(greeting)
        authed = greeting.upper().startswith(b"* PREAUTH")
        while True:
            line = await read_imap_command(conn)
            if not line:
                return
            self.commands.append(line)
            tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
            cmd, _, args = rest.partition(b" ")
            cmd = cmd.upper()
            if self.extra is not None and await self.extra(conn, tag, cmd, args):
                continue
            if cmd == b"CAPABILITY":
                caps = self.post_caps if conn.encrypted else self.pre_caps
                if self.starttls == "missing":
                    caps = tuple(c for c in caps if c != "STARTTLS")
                await conn.sendline(b"* CAPABILITY " + " ".join(caps).encode())
                await conn.sendline(tag + b" OK CAPABILITY completed")
            elif cmd == b"STARTTLS" and not conn.encrypted:
                for untagged in self.pre_tls_untagged:
                    await conn.sendline(untagged)
                if self.starttls in ("missing", "error"):
                    await conn.sendline(tag + b" NO STARTTLS not available")
                elif self.starttls == "garbage":
                    await conn.sendline(b"\x16\x03\x01 what is TLS?")
                elif self.starttls == "broken":
                    await conn.sendline(tag + b" OK Begin TLS negotiation now")
                    await conn.break_tls()
                    return
                elif self.starttls == "inject":
                    injected = self.inject or b"* OK [ALERT] injected\r\n"
                    await conn.send(tag + b" OK Begin TLS\r\n" + injected)
                    # A client that (wrongly) goes on gets a normal session, so a test sees
                    # whether it took the injected bytes for the server's first TLS answer.
                    if not await conn.start_tls():
                        return
                    self.tls_upgrades += 1
                else:
                    await conn.sendline(tag + b" OK Begin TLS negotiation now")
                    if not await conn.start_tls():
                        return
                    self.tls_upgrades += 1
            elif cmd == b"LOGIN":
                names = _imap_args(args)
                authed = len(names) == 2 and self._login_ok(names[0], names[1])
                answer = b" OK LOGIN completed" if authed else b" NO [AUTHENTICATIONFAILED] no"
                await conn.sendline(tag + answer)
            elif cmd == b"AUTHENTICATE":
                parts = args.split(b" ")
                if parts[0].upper() != b"PLAIN":
                    await conn.sendline(tag + b" NO unsupported mechanism")
                    continue
                sasl = parts[1] if len(parts) > 1 else None
                if sasl is None:
                    await conn.sendline("+ ")
                    sasl = (await conn.readline()).rstrip(b"\r\n")
                authed = self._sasl_plain(sasl)
                await conn.sendline(tag + (b" OK logged in" if authed else b" NO [AUTHENTICATIONFAILED] no"))
            elif cmd == b"LOGOUT":
                await conn.sendline("* BYE logging out")
                await conn.sendline(tag + b" OK LOGOUT completed")
                return
            elif cmd == b"NOOP":
                await conn.sendline(tag + b" OK NOOP completed")
            elif not authed:
                await conn.sendline(tag + b" BAD log in first")
            elif cmd in (b"SELECT", b"EXAMINE"):
                await conn.sendline(f"* {self.exists} EXISTS")
                await conn.sendline("* 0 RECENT")
                await conn.sendline("* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft)")
                await conn.sendline("* OK [UIDVALIDITY 1] UIDs valid")
                await conn.sendline(f"* OK [UIDNEXT {self.exists + 1}] next")
                await conn.sendline(tag + b" OK [READ-WRITE] SELECT completed")
            else:
                await conn.sendline(tag + b" OK done")  # LIST, SEARCH, STORE...: nothing to report


_LITERAL = re.compile(rb"\{(\d+)(\+?)\}\r\n$")


async def read_imap_command(conn: ScriptConn) -> bytes:
    """One whole command with its literals (answering "+" to synchronizing ones); b"" at the end.

    Literal bytes are kept in place, so a test can tell a literal's content from a command line.
    """
    command = bytearray()
    while True:
        line = await conn.readline()
        if not line:
            return b""
        command += line
        match = _LITERAL.search(line)
        if match is None:
            return bytes(command)
        if not match.group(2):
            await conn.sendline(b"+ go ahead")
        size = int(match.group(1))
        literal = bytearray()
        while len(literal) < size:
            chunk = await conn.read(size - len(literal))
            if not chunk:
                return b""
            literal += chunk
        command += literal


def _imap_args(args: bytes) -> list[str]:
    """Split IMAP atoms and quoted strings (no literals: the fakes advertise none)."""
    out: list[str] = []
    i = 0
    while i < len(args):
        if args[i : i + 1] == b" ":
            i += 1
        elif args[i : i + 1] == b'"':
            j, buf = i + 1, bytearray()
            while j < len(args) and args[j : j + 1] != b'"':
                if args[j : j + 1] == b"\\":
                    j += 1
                buf += args[j : j + 1]
                j += 1
            out.append(buf.decode())
            i = j + 1
        else:
            j = args.find(b" ", i)
            j = len(args) if j < 0 else j
            out.append(args[i:j].decode())
            i = j
    return out


class ScriptedServers:
    """Several scripted servers at fixed addresses (``127.0.0.x:port``), closed together."""

    def __init__(self) -> None:
        self.servers: list[ScriptedServer] = []

    def script(
        self, host: str, port: int, script: Script, *, cert: ServerCert | None = None
    ) -> ScriptedServer:
        server = ScriptedServer(script, cert=cert, host=host, port=port, timeout=30.0)
        self.servers.append(server.start())
        return server

    def add(self, host: str, port: int, handler: StreamHandler) -> ScriptedServer:
        """A server for a handler written against asyncio's (reader, writer) pair."""
        return self.script(host, port, streams(handler))

    def close(self) -> None:
        for server in self.servers:
            server.close()

    def __enter__(self) -> ScriptedServers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
