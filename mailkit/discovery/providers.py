"""Built-in knowledge of the big mail providers: hosts, ports, security, OAuth2 preference, limits.

Rule: plain data, matched by the address's domain or by its MX host; every entry is still probed
before use (a table can be out of date, the network cannot lie about a verified TLS login).
Limits are the providers' published figures at the time of writing, approximate by nature.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ..config import Protocol, Security
from .candidates import Candidate

__all__ = ["PROVIDERS", "Provider", "provider_for_domain", "provider_for_mx"]

_TLS, _STARTTLS = Security.TLS, Security.STARTTLS

Server = tuple[str, int, Security]


@dataclass(frozen=True)
class Provider:
    name: str
    domains: tuple[str, ...]
    mx_suffixes: tuple[str, ...]
    smtp: tuple[Server, ...]
    imap: tuple[Server, ...]
    pop3: tuple[Server, ...] = ()
    oauth2: bool = False  # OAuth2 preferred (or required) over passwords
    limits: Mapping[str, int | str] = field(default_factory=lambda: MappingProxyType({}))
    notes: str = ""

    def servers(self, protocol: Protocol) -> tuple[Server, ...]:
        servers: tuple[Server, ...] = getattr(self, Protocol(protocol).value)
        return servers

    def candidates(self, protocol: Protocol, source: str = "provider") -> list[Candidate]:
        return [Candidate(protocol, h, p, s, source) for h, p, s in self.servers(protocol)]


def _limits(**values: int | str) -> Mapping[str, int | str]:
    return MappingProxyType(values)


PROVIDERS: tuple[Provider, ...] = (
    Provider(
        "gmail",
        ("gmail.com", "googlemail.com"),
        ("google.com", "googlemail.com"),
        smtp=(("smtp.gmail.com", 465, _TLS), ("smtp.gmail.com", 587, _STARTTLS)),
        imap=(("imap.gmail.com", 993, _TLS),),
        pop3=(("pop.gmail.com", 995, _TLS),),
        oauth2=True,
        limits=_limits(recipients_per_day=500, recipients_per_message=100),
        notes="passwords need 2-step verification and an app password; OAuth2 preferred",
    ),
    Provider(
        "outlook",
        ("outlook.com", "hotmail.com", "live.com", "msn.com", "outlook.de", "hotmail.co.uk"),
        ("olc.protection.outlook.com",),
        smtp=(("smtp-mail.outlook.com", 587, _STARTTLS),),
        imap=(("outlook.office365.com", 993, _TLS),),
        pop3=(("outlook.office365.com", 995, _TLS),),
        oauth2=True,
        limits=_limits(recipients_per_day=300, recipients_per_message=100),
        notes="basic authentication is being retired: use OAuth2",
    ),
    Provider(
        "office365",
        (),
        ("mail.protection.outlook.com",),
        smtp=(("smtp.office365.com", 587, _STARTTLS),),
        imap=(("outlook.office365.com", 993, _TLS),),
        pop3=(("outlook.office365.com", 995, _TLS),),
        oauth2=True,
        limits=_limits(recipients_per_day=10000, messages_per_minute=30),
        notes="SMTP AUTH may be disabled per tenant; OAuth2 required for IMAP/POP3",
    ),
    Provider(
        "yahoo",
        ("yahoo.com", "ymail.com", "rocketmail.com", "yahoo.co.uk", "yahoo.de", "yahoo.fr"),
        ("yahoodns.net",),
        smtp=(("smtp.mail.yahoo.com", 465, _TLS), ("smtp.mail.yahoo.com", 587, _STARTTLS)),
        imap=(("imap.mail.yahoo.com", 993, _TLS),),
        pop3=(("pop.mail.yahoo.com", 995, _TLS),),
        oauth2=True,
        limits=_limits(recipients_per_day=500),
        notes="passwords must be app passwords",
    ),
    Provider(
        "icloud",
        ("icloud.com", "me.com", "mac.com"),
        ("mail.icloud.com",),
        smtp=(("smtp.mail.me.com", 587, _STARTTLS),),
        imap=(("imap.mail.me.com", 993, _TLS),),
        limits=_limits(recipients_per_day=1000, recipients_per_message=500),
        notes="no POP3; passwords must be app-specific passwords",
    ),
    Provider(
        "fastmail",
        ("fastmail.com", "fastmail.fm", "fastmail.net", "fastmail.org", "messagingengine.com"),
        ("messagingengine.com",),
        smtp=(("smtp.fastmail.com", 465, _TLS), ("smtp.fastmail.com", 587, _STARTTLS)),
        imap=(("imap.fastmail.com", 993, _TLS),),
        pop3=(("pop.fastmail.com", 995, _TLS),),
        limits=_limits(recipients_per_day=8000),
        notes="passwords must be app passwords",
    ),
    Provider(
        "zoho",
        ("zoho.com", "zohomail.com", "zoho.eu"),
        ("zoho.com", "zoho.eu", "zohomail.com"),
        smtp=(("smtp.zoho.com", 465, _TLS), ("smtp.zoho.com", 587, _STARTTLS)),
        imap=(("imap.zoho.com", 993, _TLS),),
        pop3=(("pop.zoho.com", 995, _TLS),),
        oauth2=True,
        limits=_limits(recipients_per_day=500),
        notes="IMAP/POP3 access must be enabled in the account settings",
    ),
    Provider(
        "gmx",
        ("gmx.net", "gmx.de", "gmx.at", "gmx.ch"),
        ("gmx.net",),
        smtp=(("mail.gmx.net", 465, _TLS), ("mail.gmx.net", 587, _STARTTLS)),
        imap=(("imap.gmx.net", 993, _TLS),),
        pop3=(("pop.gmx.net", 995, _TLS),),
        limits=_limits(recipients_per_day=500),
        notes="IMAP/POP3 access must be enabled in the account settings",
    ),
    Provider(
        "gmx.com",
        ("gmx.com", "gmx.us", "gmx.co.uk"),
        ("gmx.com",),
        smtp=(("mail.gmx.com", 465, _TLS), ("mail.gmx.com", 587, _STARTTLS)),
        imap=(("imap.gmx.com", 993, _TLS),),
        pop3=(("pop.gmx.com", 995, _TLS),),
        limits=_limits(recipients_per_day=500),
    ),
    Provider(
        "aol",
        ("aol.com", "aim.com"),
        ("mx-aol.mail.gm0.yahoodns.net",),
        smtp=(("smtp.aol.com", 465, _TLS), ("smtp.aol.com", 587, _STARTTLS)),
        imap=(("imap.aol.com", 993, _TLS),),
        pop3=(("pop.aol.com", 995, _TLS),),
        oauth2=True,
        limits=_limits(recipients_per_day=500),
        notes="passwords must be app passwords",
    ),
)


def provider_for_domain(domain: str) -> Provider | None:
    domain = domain.rstrip(".").lower()
    for provider in PROVIDERS:
        if domain in provider.domains:
            return provider
    return None


def provider_for_mx(mx_host: str) -> Provider | None:
    """Match an MX host (``alt1.gmail-smtp-in.l.google.com``) to a provider; most specific first."""
    host = mx_host.rstrip(".").lower()
    best: tuple[int, Provider] | None = None
    for provider in PROVIDERS:
        for suffix in provider.mx_suffixes:
            if (host == suffix or host.endswith("." + suffix)) and (best is None or len(suffix) > best[0]):
                best = (len(suffix), provider)
    return best[1] if best else None
