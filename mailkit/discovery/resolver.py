"""Name lookups for discovery: host addresses (with curl-style ``--resolve`` overrides), SRV and MX.

Rule: every lookup is bounded in time and a failed lookup is an empty answer, never an exception:
a missing record only means that source has nothing to say. Only configuration errors raise.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception

from ..config import _check_host, check_line_safe
from ..errors import ConfigError

__all__ = [
    "MxRecord",
    "Resolver",
    "SrvRecord",
    "parse_nameserver",
    "parse_resolve",
    "registered_domain_guess",
]

log = logging.getLogger("mailkit.discovery")


@dataclass(frozen=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str  # "." means "no such service here" (RFC 2782)


@dataclass(frozen=True)
class MxRecord:
    preference: int
    host: str


def parse_nameserver(value: str) -> tuple[str, int]:
    """``"ADDRESS[:PORT]"`` (IPv6 as ``[ADDRESS]:PORT``) -> (address, port)."""
    text = value.strip()
    host, port_text = text, ""
    if text.startswith("["):
        host, bracket, tail = text[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ConfigError(f"nameserver {value!r}: expected ADDRESS[:PORT]")
        port_text = tail[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"nameserver {value!r}: {host!r} is not an IP address") from None
    if not port_text:
        return host, 53
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"nameserver {value!r}: bad port {port_text!r}")
    return host, int(port_text)


def parse_resolve(entries: Mapping[str, str] | list[str] | tuple[str, ...] | None) -> dict[str, str]:
    """``{"host": "address"}`` or ``["host=address", ...]`` (the CLI's form) -> checked dict."""
    if entries is None:
        return {}
    pairs: list[tuple[str, str]] = []
    if isinstance(entries, Mapping):
        pairs = [(str(k), str(v)) for k, v in entries.items()]
    else:
        for entry in entries:
            host, sep, address = str(entry).partition("=")
            if not sep:
                raise ConfigError(f"--resolve {entry!r}: expected HOST=ADDRESS")
            pairs.append((host, address))
    result: dict[str, str] = {}
    for host, address in pairs:
        check_line_safe(host, "resolve host")
        check_line_safe(address, "resolve address")
        host = host.strip().rstrip(".").lower()
        address = address.strip().strip("[]")
        _check_host(host)
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ConfigError(f"resolve {host}={address!r}: not an IP address") from None
        result[host] = address
    return result


class Resolver:
    """Looks names up once per discovery run; answers are cached for the run."""

    def __init__(
        self,
        *,
        overrides: Mapping[str, str] | None = None,
        nameserver: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.overrides = dict(overrides or {})
        self.timeout = timeout
        self.nameserver = parse_nameserver(nameserver) if nameserver else None
        self._addresses: dict[str, asyncio.Future[list[str]]] = {}
        self._dns: dns.asyncresolver.Resolver | None = None
        self._dns_broken = False

    def _resolver(self) -> dns.asyncresolver.Resolver | None:
        if self._dns is None and not self._dns_broken:
            try:
                if self.nameserver is not None:
                    resolver = dns.asyncresolver.Resolver(configure=False)
                    resolver.nameservers = [self.nameserver[0]]
                    resolver.port = self.nameserver[1]
                else:
                    resolver = dns.asyncresolver.Resolver()
            except dns.exception.DNSException as exc:  # no /etc/resolv.conf, for instance
                log.debug("no DNS resolver available: %s", exc)
                self._dns_broken = True
                return None
            resolver.lifetime = self.timeout
            resolver.timeout = self.timeout
            self._dns = resolver
        return self._dns

    async def _query(self, name: str, rdtype: str) -> list[object]:
        resolver = self._resolver()
        if resolver is None:
            return []
        try:
            answer = await resolver.resolve(name, rdtype, search=False, raise_on_no_answer=False)
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            log.debug("DNS %s %s: %s", rdtype, name, exc.__class__.__name__)
            return []
        return list(answer)

    async def srv(self, name: str) -> list[SrvRecord]:
        records = []
        for rdata in await self._query(name, "SRV"):
            target = str(getattr(rdata, "target", ".")).rstrip(".") or "."
            records.append(
                SrvRecord(
                    int(getattr(rdata, "priority", 0)),
                    int(getattr(rdata, "weight", 0)),
                    int(getattr(rdata, "port", 0)),
                    target,
                )
            )
        return records

    async def mx(self, domain: str) -> list[MxRecord]:
        records = []
        for rdata in await self._query(domain, "MX"):
            host = str(getattr(rdata, "exchange", ".")).rstrip(".")
            records.append(MxRecord(int(getattr(rdata, "preference", 0)), host or "."))
        return sorted(records, key=lambda r: r.preference)

    async def addresses(self, host: str) -> list[str]:
        """The addresses to connect to for ``host``; ``[]`` when it does not resolve."""
        key = host.rstrip(".").lower()
        future = self._addresses.get(key)
        if future is None:
            future = asyncio.ensure_future(self._lookup(key))
            self._addresses[key] = future
        return list(await asyncio.shield(future))

    async def _lookup(self, host: str) -> list[str]:
        if host in self.overrides:
            return [self.overrides[host]]
        try:
            ipaddress.ip_address(host)
            return [host]
        except ValueError:
            pass
        if host == "localhost":
            return ["127.0.0.1"]
        if self.nameserver is not None:
            v4, v6 = await asyncio.gather(self._query(host, "A"), self._query(host, "AAAA"))
            return [str(r) for r in v4] + [str(r) for r in v6]
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), self.timeout
            )
        except (TimeoutError, OSError, UnicodeError) as exc:
            log.debug("cannot resolve %s: %s", host, exc)
            return []
        seen: list[str] = []
        for family, *_rest, sockaddr in infos:
            address = str(sockaddr[0])
            if family in (socket.AF_INET, socket.AF_INET6) and address not in seen:
                seen.append(address)
        # IPv4 first: loopback tests and most mail hosts; IPv6 still tried when it is all there is
        return sorted(seen, key=lambda a: ":" in a)

    def close(self) -> None:
        for future in self._addresses.values():
            future.cancel()


def registered_domain_guess(host: str) -> str:
    """``mx1.mail.example.net`` -> ``mail.example.net`` (the MX host minus its first label)."""
    labels = host.rstrip(".").lower().split(".")
    return ".".join(labels[1:]) if len(labels) > 2 else ".".join(labels)
