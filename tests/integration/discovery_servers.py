"""Servers for the discovery tests: real Dovecot/Postfix profiles on real port numbers, a local DNS
server (dnsmasq), autoconfig over HTTPS/HTTP, and small scripted servers for the oddities.

Each 127.0.0.x address is its own host (127.0.0.10-30 belong to these tests):

    127.0.0.10  all.test        real stack, every port (25 465 587 2525 143 993 110 995)
    127.0.0.11  starttls.test   real stack, STARTTLS ports only (587 143 110); the blackhole
                                fixture adds 465/993/995 listeners that accept and never greet
    127.0.0.12  alt.test        real stack, SMTP on 2525 only
    127.0.0.13  wrongcert.test  real stack, every port, certificate for wrong.invalid
    127.0.0.20  plain.test      scripted, plaintext only (no STARTTLS anywhere)
    127.0.0.21  broken.test     scripted: 587/143 advertise STARTTLS and break the upgrade,
                                2525 works
    127.0.0.25  autoconfig.ac.test      HTTPS autoconfig (points at all.test hosts)
    127.0.0.26  autoconfig.achttp.test  plain-HTTP autoconfig (untrusted)
    127.0.0.30  dnsmasq on port 53: the names above, SRV for srv.test, MX for mx.test

Certificates come from a test CA (trustme) kept under ROOT so that stacks left running by an
earlier session still match. Set MAILKIT_DISCOVERY_KEEP=1 to leave the stacks running afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.server
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import trustme

from tests.integration.mailstack import MailStack

ROOT = Path(os.environ.get("MAILKIT_DISCOVERY_ROOT", "/tmp/ms-disc-profiles"))
DNS_ADDR = "127.0.0.30"
DNS_PORT = 53
NAMESERVER = f"{DNS_ADDR}:{DNS_PORT}"
USER = "alice@example.test"
PASSWORD = "alicepw"

REAL_PORTS = {
    "smtp_port": 25,
    "submissions_port": 465,
    "submission_port": 587,
    "alt_port": 2525,
    "imap_port": 143,
    "imaps_port": 993,
    "pop3_port": 110,
    "pop3s_port": 995,
}


@dataclass(frozen=True)
class StackProfile:
    name: str
    host: str
    domain: str
    ports: dict[str, int]
    cert_names: tuple[str, ...]


def _only(*enabled: str) -> dict[str, int]:
    return {name: (port if name in enabled else 0) for name, port in REAL_PORTS.items()}


STACKS = (
    StackProfile("all", "127.0.0.10", "all.test", dict(REAL_PORTS), ("all.test", "*.all.test")),
    StackProfile(
        "starttls",
        "127.0.0.11",
        "starttls.test",
        _only("submission_port", "imap_port", "pop3_port"),
        ("starttls.test", "*.starttls.test"),
    ),
    StackProfile("alt", "127.0.0.12", "alt.test", _only("alt_port"), ("alt.test", "*.alt.test")),
    StackProfile("wrongcert", "127.0.0.13", "wrongcert.test", dict(REAL_PORTS), ("wrong.invalid",)),
)

PLAIN_HOST, BROKEN_HOST = "127.0.0.20", "127.0.0.21"
AUTOCONFIG_HTTPS_HOST, AUTOCONFIG_HTTP_HOST = "127.0.0.25", "127.0.0.26"


# --- certificates ---------------------------------------------------------------------------------


class TestPKI:
    """A CA kept on disk (so running stacks keep matching) and per-name server certificates."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        cert, key = root / "ca.crt", root / "ca.key"
        if cert.exists() and key.exists():
            self.ca = trustme.CA.from_pem(cert.read_bytes(), key.read_bytes())
        else:
            self.ca = trustme.CA(organization_name="mailkit discovery tests")
            self.ca.private_key_pem.write_to_path(str(key))
            self.ca.cert_pem.write_to_path(str(cert))
        self.ca_file = cert

    def tls_dir(self, name: str, names: tuple[str, ...]) -> Path:
        """A mailstack TLS dir (ca.crt, server.crt, server.key) for ``names``; made once."""
        directory = self.root / f"tls-{name}"
        if not (directory / "server.crt").exists():
            directory.mkdir(parents=True, exist_ok=True)
            issued = self.ca.issue_cert(*names)
            issued.private_key_pem.write_to_path(str(directory / "server.key"))
            (directory / "server.crt").write_bytes(b"".join(p.bytes() for p in issued.cert_chain_pems))
            shutil.copy(self.ca_file, directory / "ca.crt")
            os.chmod(directory / "server.key", 0o600)
        return directory

    def server_context(self, *names: str) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*names).configure_cert(context)
        return context


# --- real stacks ------------------------------------------------------------------------------------


def ensure_loopback_address(address: str) -> None:
    """Postfix refuses ``inet_interfaces = 127.0.0.x`` unless lo carries that exact address."""
    shown = subprocess.run(
        ["ip", "-4", "addr", "show", "dev", "lo"], capture_output=True, text=True, check=False
    )
    if f"inet {address}/" not in shown.stdout:
        subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"], capture_output=True, check=False)


def start_stacks(pki: TestPKI) -> dict[str, MailStack]:
    def start(profile: StackProfile) -> MailStack:
        ensure_loopback_address(profile.host)
        tls_dir = pki.tls_dir(profile.name, profile.cert_names)
        return MailStack.start(
            root=str(ROOT / f"stack-{profile.name}"), host=profile.host, tls_dir=str(tls_dir), **profile.ports
        )

    with ThreadPoolExecutor(len(STACKS)) as pool:
        stacks = list(pool.map(start, STACKS))
    return {profile.name: stack for profile, stack in zip(STACKS, stacks, strict=True)}


def stop_stacks(stacks: dict[str, MailStack]) -> None:
    with ThreadPoolExecutor(max(1, len(stacks))) as pool:
        list(pool.map(lambda s: s.script("down", check=False), stacks.values()))


# --- DNS --------------------------------------------------------------------------------------------


DNS_RECORDS = [
    "local=/test/",  # everything else under .test: NXDOMAIN, answered locally
    "local=/invalid/",
    *(f"address=/{p.domain}/{p.host}" for p in STACKS),
    f"address=/plain.test/{PLAIN_HOST}",
    f"address=/broken.test/{BROKEN_HOST}",
    f"address=/autoconfig.ac.test/{AUTOCONFIG_HTTPS_HOST}",
    f"address=/autoconfig.achttp.test/{AUTOCONFIG_HTTP_HOST}",
    "address=/achttp.test/127.0.0.10",  # the all.test stack: wrong certificate for achttp.test
    # RFC 6186 records for srv.test, pointing into all.test; _imap is explicitly absent.
    "srv-host=_submissions._tcp.srv.test,mail.all.test,465,0,1",
    "srv-host=_submission._tcp.srv.test,mail.all.test,587,0,1",
    "srv-host=_imaps._tcp.srv.test,mail.all.test,993,0,1",
    "srv-host=_imap._tcp.srv.test",
    "srv-host=_pop3s._tcp.srv.test,mail.all.test,995,0,1",
    # MX for mx.test points into all.test
    "mx-host=mx.test,mx1.all.test,10",
]


class Dnsmasq:
    def __init__(self, root: Path) -> None:
        self.conf = root / "dnsmasq.conf"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if shutil.which("dnsmasq") is None:
            raise RuntimeError("dnsmasq is not installed (apt-get install dnsmasq)")
        self.conf.write_text("\n".join(DNS_RECORDS) + "\n", encoding="utf-8")
        self.proc = subprocess.Popen(
            [
                "dnsmasq",
                "--keep-in-foreground",
                "--conf-file=" + str(self.conf),
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                f"--listen-address={DNS_ADDR}",
                f"--port={DNS_PORT}",
                "--except-interface=none",
                "--pid-file=",
                "--log-facility=-",
                "--user=root",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"dnsmasq exited: {err}")
            if _udp_answers(DNS_ADDR, DNS_PORT):
                return
            time.sleep(0.05)
        raise RuntimeError("dnsmasq did not answer")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _udp_answers(host: str, port: int) -> bool:
    import dns.message
    import dns.query

    try:
        dns.query.udp(dns.message.make_query("all.test", "A"), host, port=port, timeout=0.3)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not yet"
        return False


# --- autoconfig over HTTP(S) ------------------------------------------------------------------------


AC_XML = b"""<?xml version="1.0" encoding="UTF-8"?>
<clientConfig version="1.1">
  <emailProvider id="ac.test">
    <domain>ac.test</domain>
    <incomingServer type="imap">
      <hostname>imap.all.test</hostname><port>143</port><socketType>STARTTLS</socketType>
      <username>%EMAILADDRESS%</username><authentication>password-cleartext</authentication>
    </incomingServer>
    <incomingServer type="pop3">
      <hostname>pop.all.test</hostname><port>995</port><socketType>SSL</socketType>
    </incomingServer>
    <outgoingServer type="smtp">
      <hostname>mail.all.test</hostname><port>587</port><socketType>STARTTLS</socketType>
    </outgoingServer>
  </emailProvider>
</clientConfig>
"""

# Served over plain HTTP: plaintext entries must be dropped, hosts outside achttp.test ignored,
# and the in-domain TLS entry is probed (and fails: the server there has an all.test certificate).
ACHTTP_XML = b"""<?xml version="1.0"?>
<clientConfig version="1.1"><emailProvider id="achttp.test">
  <outgoingServer type="smtp">
    <hostname>smtp.achttp.test</hostname><port>25</port><socketType>plain</socketType>
  </outgoingServer>
  <outgoingServer type="smtp">
    <hostname>smtp.all.test</hostname><port>465</port><socketType>SSL</socketType>
  </outgoingServer>
  <outgoingServer type="smtp">
    <hostname>smtp.achttp.test</hostname><port>465</port><socketType>SSL</socketType>
  </outgoingServer>
</emailProvider></clientConfig>
"""


class _Handler(http.server.BaseHTTPRequestHandler):
    documents: dict[str, bytes] = {}  # noqa: RUF012 - set per server subclass
    hits: list[str] = []  # noqa: RUF012

    def do_GET(self) -> None:
        self.hits.append(f"{self.headers.get('Host')}{self.path}")
        body = self.documents.get(self.path.split("?")[0])
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class HttpServers:
    def __init__(self, pki: TestPKI) -> None:
        self.pki = pki
        self.servers: list[http.server.ThreadingHTTPServer] = []
        self.hits: list[str] = []

    def serve(
        self, host: str, port: int, documents: dict[str, bytes], tls_names: tuple[str, ...] = ()
    ) -> None:
        handler = type("Handler", (_Handler,), {"documents": documents, "hits": self.hits})
        server = http.server.ThreadingHTTPServer((host, port), handler)
        if tls_names:
            context = self.pki.server_context(*tls_names)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.servers.append(server)

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


# --- scripted servers -------------------------------------------------------------------------------


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ScriptedServers:
    """asyncio servers on a private loop in a thread, so sync and async tests can both use them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers: list[asyncio.base_events.Server] = []
        self.connections = 0

    def add(self, host: str, port: int, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await handler(reader, writer)
            except (OSError, ssl.SSLError, asyncio.IncompleteReadError, ValueError):
                pass
            finally:
                writer.transport.abort()

        async def start() -> asyncio.base_events.Server:
            return await asyncio.start_server(counted, host, port, ssl=ssl_context, reuse_address=True)

        self.servers.append(asyncio.run_coroutine_threadsafe(start(), self.loop).result(10))

    def close(self) -> None:
        async def stop() -> None:
            for server in self.servers:
                server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _check_plain(b64: str) -> bool:
    try:
        _, user, password = base64.b64decode(b64).split(b"\0")
    except ValueError:
        return False
    return user.decode() == USER and password.decode() == PASSWORD


@dataclass
class Script:
    """Options for the scripted servers: STARTTLS "none" (not offered), "ok", or "broken"."""

    starttls: str = "none"
    tls_context: ssl.SSLContext | None = None
    logins: list[str] = field(default_factory=list)


async def _upgrade(writer: asyncio.StreamWriter, script: Script) -> bool:
    if script.starttls == "broken":
        writer.write(b"this is not a TLS handshake\r\n" * 4)
        await writer.drain()
        return False
    assert script.tls_context is not None
    await writer.start_tls(script.tls_context)
    return True


def smtp_script(script: Script) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = False
        writer.write(b"220 scripted ESMTP\r\n")
        while line := await reader.readline():
            command = line.decode().strip()
            verb = command.split(" ")[0].upper()
            if verb == "EHLO":
                caps = ["scripted", "8BITMIME"]
                if script.starttls != "none" and not tls:
                    caps.append("STARTTLS")
                caps.append("AUTH PLAIN")
                writer.write(
                    "".join(f"250-{c}\r\n" for c in caps[:-1]).encode() + f"250 {caps[-1]}\r\n".encode()
                )
            elif verb == "STARTTLS" and script.starttls != "none":
                writer.write(b"220 go ahead\r\n")
                await writer.drain()
                if not await _upgrade(writer, script):
                    return
                tls = True
            elif verb == "AUTH":
                ok = _check_plain(command.split(" ")[2])
                script.logins.append(f"smtp tls={tls} ok={ok}")
                writer.write(b"235 ok\r\n" if ok else b"535 5.7.8 no\r\n")
            elif verb == "QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"502 no\r\n")
            await writer.drain()

    return handle


def imap_script(script: Script) -> Handler:
    def caps(tls: bool) -> bytes:
        extra = " STARTTLS" if script.starttls != "none" and not tls else ""
        return f"IMAP4rev1{extra} AUTH=PLAIN".encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = False
        writer.write(b"* OK [CAPABILITY " + caps(tls) + b"] scripted\r\n")
        while line := await reader.readline():
            tag, _, rest = line.decode().strip().partition(" ")
            verb = rest.split(" ")[0].upper()
            if verb == "CAPABILITY":
                writer.write(b"* CAPABILITY " + caps(tls) + f"\r\n{tag} OK done\r\n".encode())
            elif verb == "STARTTLS" and script.starttls != "none":
                writer.write(f"{tag} OK begin TLS\r\n".encode())
                await writer.drain()
                if not await _upgrade(writer, script):
                    return
                tls = True
            elif verb == "AUTHENTICATE":
                writer.write(b"+ \r\n")
                await writer.drain()
                ok = _check_plain((await reader.readline()).decode().strip())
                script.logins.append(f"imap tls={tls} ok={ok}")
                writer.write(f"{tag} {'OK' if ok else 'NO'} auth\r\n".encode())
            elif verb == "LOGOUT":
                writer.write(f"* BYE\r\n{tag} OK bye\r\n".encode())
                await writer.drain()
                return
            else:
                writer.write(f"{tag} BAD no\r\n".encode())
            await writer.drain()

    return handle


def pop3_script(script: Script) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = False
        user = ""
        writer.write(b"+OK scripted\r\n")
        while line := await reader.readline():
            command = line.decode().strip()
            verb = command.split(" ")[0].upper()
            if verb == "CAPA":
                stls = "STLS\r\n" if script.starttls != "none" and not tls else ""
                writer.write(f"+OK\r\nUSER\r\n{stls}SASL PLAIN\r\n.\r\n".encode())
            elif verb == "STLS" and script.starttls != "none":
                writer.write(b"+OK begin TLS\r\n")
                await writer.drain()
                if not await _upgrade(writer, script):
                    return
                tls = True
            elif verb == "AUTH":
                ok = _check_plain(command.split(" ")[2])
                script.logins.append(f"pop3 tls={tls} ok={ok}")
                writer.write(b"+OK in\r\n" if ok else b"-ERR no\r\n")
            elif verb == "USER":
                user = command[5:]
                writer.write(b"+OK\r\n")
            elif verb == "PASS":
                ok = user == USER and command[5:] == PASSWORD
                script.logins.append(f"pop3 tls={tls} ok={ok}")
                writer.write(b"+OK in\r\n" if ok else b"-ERR no\r\n")
            elif verb == "QUIT":
                writer.write(b"+OK bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"-ERR no\r\n")
            await writer.drain()

    return handle


async def blackhole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept the connection and never say anything (nor answer a TLS ClientHello)."""
    while await reader.read(4096):
        pass


# --- everything together ----------------------------------------------------------------------------


@dataclass
class DiscoveryWorld:
    pki: TestPKI
    stacks: dict[str, MailStack]
    dns: Dnsmasq
    http: HttpServers
    scripted: ScriptedServers
    plain: Script
    broken: Script

    @property
    def ca_file(self) -> str:
        return str(self.pki.ca_file)


@contextlib.contextmanager
def discovery_world() -> Iterator[DiscoveryWorld]:
    pki = TestPKI(ROOT)
    stacks = start_stacks(pki)
    dns = Dnsmasq(ROOT)
    http_servers = HttpServers(pki)
    scripted = ScriptedServers()
    plain, broken = Script("none"), Script("broken")
    try:
        dns.start()
        http_servers.serve(
            AUTOCONFIG_HTTPS_HOST, 443, {"/mail/config-v1.1.xml": AC_XML}, ("autoconfig.ac.test",)
        )
        http_servers.serve(AUTOCONFIG_HTTP_HOST, 80, {"/mail/config-v1.1.xml": ACHTTP_XML})
        for port in (25, 587, 2525):
            scripted.add(PLAIN_HOST, port, smtp_script(plain))
        scripted.add(PLAIN_HOST, 143, imap_script(plain))
        scripted.add(PLAIN_HOST, 110, pop3_script(plain))
        scripted.add(BROKEN_HOST, 587, smtp_script(broken))
        scripted.add(BROKEN_HOST, 143, imap_script(broken))
        good = Script("ok", pki.server_context("broken.test", "*.broken.test"))
        scripted.add(BROKEN_HOST, 2525, smtp_script(good))
        yield DiscoveryWorld(pki, stacks, dns, http_servers, scripted, plain, broken)
    finally:
        scripted.close()
        http_servers.close()
        dns.stop()
        if os.environ.get("MAILKIT_DISCOVERY_KEEP") != "1":
            stop_stacks(stacks)


@contextlib.contextmanager
def blackholes(host: str, ports: tuple[int, ...] = (465, 993, 995)) -> Iterator[ScriptedServers]:
    servers = ScriptedServers()
    try:
        for port in ports:
            servers.add(host, port, blackhole)
        yield servers
    finally:
        servers.close()


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False
