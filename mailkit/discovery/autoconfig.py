"""Mozilla-style autoconfig (``config-v1.1.xml``): where to fetch it and how to read it.

Rule: parsing is pure and tolerant: a malformed document or entry yields an error string and is
skipped, never a crash. A document fetched over plain HTTP is untrusted: its plaintext entries
are dropped and only hosts inside the address's own domain are kept; the TLS probe that every
candidate passes is what verifies the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree import ElementTree

from ..config import Protocol, Security
from ..errors import ConfigError
from .candidates import Candidate

__all__ = ["AutoconfigResult", "autoconfig_urls", "parse_autoconfig"]

_SOCKET_TYPES = {
    "SSL": Security.TLS,
    "TLS": Security.TLS,
    "STARTTLS": Security.STARTTLS,
    "PLAIN": Security.INSECURE,
}
_TYPES = {"smtp": Protocol.SMTP, "imap": Protocol.IMAP, "pop3": Protocol.POP3}


@dataclass(frozen=True)
class AutoconfigResult:
    candidates: tuple[Candidate, ...]
    errors: tuple[str, ...] = ()


def autoconfig_urls(address: str, domain: str, *, include_http: bool = True) -> list[str]:
    """The documented locations, most trustworthy first (HTTPS before plain HTTP)."""
    urls = [
        f"https://autoconfig.{domain}/mail/config-v1.1.xml?emailaddress={address}",
        f"https://{domain}/.well-known/autoconfig/mail/config-v1.1.xml",
    ]
    if include_http:
        urls.append(f"http://autoconfig.{domain}/mail/config-v1.1.xml?emailaddress={address}")
    return urls


def _fill(template: str, address: str) -> str:
    local, _, domain = address.rpartition("@")
    return (
        template.replace("%EMAILADDRESS%", address)
        .replace("%EMAILLOCALPART%", local)
        .replace("%EMAILDOMAIN%", domain)
    )


def _in_domain(host: str, domain: str) -> bool:
    return host == domain or host.endswith("." + domain)


def parse_autoconfig(document: bytes | str, address: str, *, trusted: bool) -> AutoconfigResult:
    """Candidates from a config-v1.1 document, in document order (its preference order)."""
    data = document.encode("utf-8") if isinstance(document, str) else document
    # Entity declarations are how XML bombs work; autoconfig never needs them.
    if b"<!DOCTYPE" in data.upper() or b"<!ENTITY" in data.upper():
        return AutoconfigResult((), ("autoconfig document declares a DTD or entities; ignored",))
    try:
        root = ElementTree.fromstring(data)  # noqa: S314 - DTDs refused above; size bounded by the fetch
    except ElementTree.ParseError as exc:
        return AutoconfigResult((), (f"autoconfig document is not well-formed XML: {exc}",))
    if root.tag != "clientConfig":
        return AutoconfigResult((), (f"autoconfig root element is <{root.tag}>, not <clientConfig>",))
    domain = address.rpartition("@")[2].lower()
    candidates: list[Candidate] = []
    errors: list[str] = []
    for provider in root.findall("emailProvider"):
        servers = provider.findall("incomingServer") + provider.findall("outgoingServer")
        for server in servers:
            kind = (server.get("type") or "").lower()
            protocol = _TYPES.get(kind)
            if protocol is None:
                continue  # exchange, jmap, ...: not ours
            try:
                candidate = _server(server, protocol, address, trusted)
            except (ConfigError, ValueError) as exc:
                errors.append(f"autoconfig {kind} entry skipped: {exc}")
                continue
            if not trusted and not _in_domain(candidate.host, domain):
                errors.append(f"untrusted autoconfig points outside {domain} ({candidate.host}); ignored")
                continue
            candidates.append(candidate)
    if not candidates and not errors:
        errors.append("autoconfig document lists no SMTP, IMAP or POP3 server")
    return AutoconfigResult(tuple(candidates), tuple(errors))


def _server(server: ElementTree.Element, protocol: Protocol, address: str, trusted: bool) -> Candidate:
    hostname = (server.findtext("hostname") or "").strip()
    port_text = (server.findtext("port") or "").strip()
    socket_type = (server.findtext("socketType") or "").strip().upper()
    if not hostname:
        raise ValueError("no hostname")
    if not port_text.isdigit():
        raise ValueError(f"port {port_text!r} is not a number")
    security = _SOCKET_TYPES.get(socket_type)
    if security is None:
        raise ValueError(f"unknown socketType {socket_type!r}")
    username = (server.findtext("username") or "").strip()
    user = _fill(username, address) if username else None
    return Candidate(
        protocol,
        _fill(hostname, address),
        int(port_text),
        security,
        "autoconfig",
        user=None if user == address else user,
        trusted=trusted,
    )
