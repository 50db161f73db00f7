"""RFC 6186 / RFC 8314 SRV records to candidates: which names to query and how to read the answers.

Rule: pure. Implicit-TLS services come before their STARTTLS twins (RFC 8314 section 5.1);
within a service, lower priority first, then higher weight. A target of "." means the service
is deliberately not offered; a record that cannot be valid is skipped with a reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..config import Protocol, Security
from ..errors import ConfigError
from .candidates import Candidate
from .resolver import SrvRecord

__all__ = ["SRV_SERVICES", "srv_candidates", "srv_names"]

SRV_SERVICES: dict[Protocol, tuple[tuple[str, Security], ...]] = {
    Protocol.SMTP: (("_submissions", Security.TLS), ("_submission", Security.STARTTLS)),
    Protocol.IMAP: (("_imaps", Security.TLS), ("_imap", Security.STARTTLS)),
    Protocol.POP3: (("_pop3s", Security.TLS), ("_pop3", Security.STARTTLS)),
}


def srv_names(domain: str) -> list[str]:
    return [f"{service}._tcp.{domain}" for services in SRV_SERVICES.values() for service, _ in services]


def srv_candidates(
    domain: str, answers: Mapping[str, Sequence[SrvRecord]]
) -> tuple[list[Candidate], list[str]]:
    """Candidates (all protocols, best first per protocol) and reasons for skipped records."""
    candidates: list[Candidate] = []
    errors: list[str] = []
    for protocol, services in SRV_SERVICES.items():
        for service, security in services:
            name = f"{service}._tcp.{domain}"
            records = sorted(answers.get(name, ()), key=lambda r: (r.priority, -r.weight))
            for record in records:
                if record.target in (".", ""):
                    continue  # RFC 2782: "decidedly not available at this domain"
                try:
                    if not 1 <= record.port <= 65535:
                        raise ConfigError(f"port {record.port} out of range")
                    candidates.append(Candidate(protocol, record.target, record.port, security, "srv"))
                except ConfigError as exc:
                    errors.append(f"SRV {name} -> {record.target}:{record.port} skipped: {exc}")
    return candidates, errors
