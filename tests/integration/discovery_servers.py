"""Servers for the discovery tests: real Dovecot/Postfix profiles on real port numbers, a local DNS
server (dnsmasq), autoconfig over HTTPS/HTTP, and scripted servers (tests/faults/scripted.py) for
the oddities.

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

import contextlib
import http.server
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import trustme

from tests.faults.scripted import FakeBase, FakeIMAP, FakePOP3, FakeSMTP, ScriptedServers, ServerCert, silent
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

    def server_cert(self, name: str, names: tuple[str, ...]) -> ServerCert:
        """The certificate of ``tls_dir`` as a scripted server presents it."""
        directory = self.tls_dir(name, names)
        return ServerCert(name, directory / "server.crt", directory / "server.key")

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
        log = self.conf.with_suffix(".log")
        # stderr to a file (a pipe nobody reads would fill up and block dnsmasq); the child keeps
        # its own copy of the descriptor.
        with log.open("wb") as err:
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
                stderr=err,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dnsmasq exited: {log.read_text(errors='replace')}")
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


# --- scripted servers (tests/faults/scripted.py) ------------------------------------------------


@dataclass
class ScriptedHost:
    """The scripted servers of one host; ``logins`` lists every login attempt any of them saw."""

    fakes: list[FakeBase] = field(default_factory=list)

    @property
    def logins(self) -> list[str]:
        return [attempt for fake in self.fakes for attempt in fake.attempts]


# one of the protocol fakes (they share FakeBase's login bookkeeping and each have pre_caps)
Fake = TypeVar("Fake", FakeSMTP, FakeIMAP, FakePOP3)


def _fake(kind: type[Fake], host: ScriptedHost, starttls: str, pre_caps: tuple[str, ...]) -> Fake:
    fake = kind(user=USER, password=PASSWORD, starttls=starttls, pre_caps=pre_caps)
    host.fakes.append(fake)
    return fake


def plain_servers(servers: ScriptedServers) -> ScriptedHost:
    """plain.test: SMTP (25, 587, 2525), IMAP (143), POP3 (110), none of them offering STARTTLS."""
    plain = ScriptedHost()
    for port in (25, 587, 2525):
        servers.script(PLAIN_HOST, port, _fake(FakeSMTP, plain, "missing", ("8BITMIME", "AUTH PLAIN")))
    servers.script(PLAIN_HOST, 143, _fake(FakeIMAP, plain, "missing", ("IMAP4rev1", "AUTH=PLAIN")))
    servers.script(PLAIN_HOST, 110, _fake(FakePOP3, plain, "missing", ("USER", "SASL PLAIN")))
    return plain


def broken_servers(servers: ScriptedServers, pki: TestPKI) -> ScriptedHost:
    """broken.test: 587 and 143 advertise STARTTLS and break the upgrade; 2525 works (not in logins)."""
    broken = ScriptedHost()
    smtp_caps = ("8BITMIME", "STARTTLS", "AUTH PLAIN")
    servers.script(BROKEN_HOST, 587, _fake(FakeSMTP, broken, "broken", smtp_caps))
    servers.script(
        BROKEN_HOST, 143, _fake(FakeIMAP, broken, "broken", ("IMAP4rev1", "STARTTLS", "AUTH=PLAIN"))
    )
    good = _fake(FakeSMTP, ScriptedHost(), "ok", smtp_caps)
    servers.script(BROKEN_HOST, 2525, good, cert=pki.server_cert("broken", ("broken.test", "*.broken.test")))
    return broken


# --- everything together ----------------------------------------------------------------------------


@dataclass
class DiscoveryWorld:
    pki: TestPKI
    stacks: dict[str, MailStack]
    dns: Dnsmasq
    http: HttpServers
    scripted: ScriptedServers
    plain: ScriptedHost
    broken: ScriptedHost

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
    try:
        dns.start()
        http_servers.serve(
            AUTOCONFIG_HTTPS_HOST, 443, {"/mail/config-v1.1.xml": AC_XML}, ("autoconfig.ac.test",)
        )
        http_servers.serve(AUTOCONFIG_HTTP_HOST, 80, {"/mail/config-v1.1.xml": ACHTTP_XML})
        plain, broken = plain_servers(scripted), broken_servers(scripted, pki)
        yield DiscoveryWorld(pki, stacks, dns, http_servers, scripted, plain, broken)
    finally:
        scripted.close()
        http_servers.close()
        dns.stop()
        if os.environ.get("MAILKIT_DISCOVERY_KEEP") != "1":
            stop_stacks(stacks)


@contextlib.contextmanager
def blackholes(host: str, ports: tuple[int, ...] = (465, 993, 995)) -> Iterator[ScriptedServers]:
    with ScriptedServers() as servers:
        for port in ports:
            servers.script(host, port, silent)
        yield servers


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False
