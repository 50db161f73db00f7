"""Discovery end to end: gather candidates from every source, race them per protocol, build a Profile.

Rule: sources only suggest; nothing is chosen without a probe that read the capabilities over
verified TLS (or over plaintext the caller explicitly allowed, last, with a warning). Sources in
order: settings, cache, provider table, autoconfig, SRV, MX, guessing. The three protocols race
at the same time, so a blackholed server costs one timeout in total, not one per port.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import logging
import os
import ssl
import time
import warnings
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from email_validator import EmailNotValidError, validate_email

from ..config import Endpoint, Protocol, Security, Timeouts, check_line_safe
from ..errors import CertificateError, ConfigError, ConnectError, MailkitError, SecurityError, TimeoutError
from ..tls import InsecureWarning, create_ssl_context
from . import autoconfig as _autoconfig
from ._http import http_get
from .cache import ProfileCache
from .candidates import PORT_TABLE, SECURITY_RANK, Candidate, guess_hosts, order_candidates
from .dialogue import Finding, Login
from .probe import ProbeLimits, ProbeResult, probe
from .profile import Attempt, Choice, Profile
from .providers import Provider, provider_for_domain, provider_for_mx
from .race import race
from .resolver import Resolver, parse_resolve, registered_domain_guess
from .srv import srv_candidates, srv_names

__all__ = ["DiscoveryStats", "discover_async"]

log = logging.getLogger("mailkit.discovery")

DEFAULT_STAGGER = 0.25
DEFAULT_TOTAL = 30.0
PROBE_CONNECT_CAP = 5.0
PROBE_STEP_CAP = 8.0
LOOKUP_CAP = 5.0


@dataclass
class DiscoveryStats:
    """Counters for benchmarks and ``--explain``: filled in when passed to ``discover_async``."""

    connections: int = 0
    lookups_seconds: float = 0.0
    probe_seconds: float = 0.0
    sources: dict[str, list[str]] = field(default_factory=dict)  # source -> notes/errors


@dataclass
class _Sources:
    per_protocol: dict[Protocol, list[Candidate]]
    provider: Provider | None = None
    notes: dict[str, list[str]] = field(default_factory=dict)


def _cap(value: float | None, cap: float) -> float:
    return cap if value is None else min(value, cap)


def _domain_of(address: str, test_environment: bool) -> str:
    check_line_safe(address, "address")
    try:
        valid = validate_email(address, check_deliverability=False, test_environment=test_environment)
    except EmailNotValidError as exc:
        raise ConfigError(f"invalid address {address!r}: {exc}") from None
    return str(valid.ascii_domain).lower()


def _explicit(
    endpoints: Mapping[Protocol | str, Endpoint | str] | None, allow_insecure: bool
) -> dict[Protocol, Endpoint]:
    result: dict[Protocol, Endpoint] = {}
    for key, value in (endpoints or {}).items():
        try:
            protocol = Protocol(key)
        except ValueError:
            raise ConfigError(f"unknown protocol {key!r} in endpoints; use smtp, imap or pop3") from None
        endpoint = value if isinstance(value, Endpoint) else Endpoint.parse(value, protocol)
        if endpoint.protocol is not protocol:
            raise ConfigError(f"{endpoint.url} given as the {protocol.value} endpoint")
        if endpoint.security is Security.INSECURE and not allow_insecure:
            raise SecurityError(
                f"{endpoint.url} is plaintext; pass allow_insecure=True (or --allow-insecure) to permit it"
            )
        result[protocol] = endpoint
    return result


async def _gather_sources(
    address: str,
    domain: str,
    protocols: Sequence[Protocol],
    explicit: dict[Protocol, Endpoint],
    cached: Profile | None,
    resolver: Resolver,
    ssl_context: ssl.SSLContext,
    lookup_timeout: float,
) -> _Sources:
    out = _Sources({p: [] for p in protocols})
    notes = out.notes
    lists: dict[str, dict[Protocol, list[Candidate]]] = {
        name: {p: [] for p in protocols}
        for name in ("settings", "cache", "provider", "autoconfig", "srv", "mx", "guess")
    }
    for protocol, endpoint in explicit.items():
        lists["settings"][protocol].append(
            Candidate(protocol, endpoint.host, endpoint.port, endpoint.security, "settings", endpoint.user)
        )
    if cached is not None:
        for protocol in protocols:
            choice = cached.choice(protocol)
            if choice is not None:
                e = choice.endpoint
                lists["cache"][protocol].append(
                    Candidate(protocol, e.host, e.port, e.security, "cache", e.user)
                )
    provider = provider_for_domain(domain)
    open_protocols = [p for p in protocols if p not in explicit]
    if provider is not None:
        out.provider = provider
        notes.setdefault("provider", []).append(f"{domain} is {provider.name}")
        for protocol in open_protocols:
            lists["provider"][protocol].extend(provider.candidates(protocol))
    elif open_protocols:
        # Each source gets a bounded share of time; a slow one only loses its own suggestions.
        limit = 2 * lookup_timeout
        ac, srv, (mx, out.provider) = await asyncio.gather(
            _bounded(_autoconfig_source(address, domain, resolver, ssl_context, lookup_timeout, notes),
                     limit, [], notes, "autoconfig"),
            _bounded(_srv_source(domain, resolver, notes), limit, [], notes, "srv"),
            _bounded(_mx_source(domain, resolver, notes), limit, ([], None), notes, "mx"),
        )  # fmt: skip
        for name, candidates in (("autoconfig", ac), ("srv", srv), ("mx", mx)):
            for candidate in candidates:
                if candidate.protocol in lists[name]:
                    lists[name][candidate.protocol].append(candidate)
    for protocol in open_protocols:
        for host in guess_hosts(protocol, domain):
            lists["guess"][protocol].extend(
                Candidate(protocol, host, port, security, "guess") for port, security in PORT_TABLE[protocol]
            )
    for protocol in protocols:
        if protocol in explicit:
            out.per_protocol[protocol] = list(lists["settings"][protocol])
            continue
        merged: list[Candidate] = []
        for name in ("cache", "provider", "autoconfig", "srv", "mx", "guess"):
            merged.extend(lists[name][protocol])
        out.per_protocol[protocol] = merged
    return out


T = TypeVar("T")


async def _bounded(
    coro: Coroutine[Any, Any, T], limit: float, default: T, notes: dict[str, list[str]], name: str
) -> T:
    try:
        return await asyncio.wait_for(coro, limit)
    except builtins.TimeoutError:
        notes.setdefault(name, []).append(f"gave up after {limit:g}s")
        return default


async def _autoconfig_source(
    address: str,
    domain: str,
    resolver: Resolver,
    ssl_context: ssl.SSLContext,
    timeout: float,
    notes: dict[str, list[str]],
) -> list[Candidate]:
    from urllib.parse import urlsplit

    for url in _autoconfig.autoconfig_urls(address, domain):
        host = urlsplit(url).hostname or domain
        addresses = await resolver.addresses(host)
        if not addresses:
            notes.setdefault("autoconfig", []).append(f"{host} does not resolve")
            continue
        result = await http_get(url, addresses[0], ssl_context, timeout=timeout)
        if result.body is None:
            notes.setdefault("autoconfig", []).append(f"{url}: {result.error}")
            continue
        trusted = url.startswith("https://")
        parsed = _autoconfig.parse_autoconfig(result.body, address, trusted=trusted)
        notes.setdefault("autoconfig", []).extend(parsed.errors)
        if parsed.candidates:
            notes["autoconfig"].append(
                f"{url}: {len(parsed.candidates)} server(s)" + ("" if trusted else " (untrusted: plain HTTP)")
            )
            return list(parsed.candidates)
    return []


async def _srv_source(domain: str, resolver: Resolver, notes: dict[str, list[str]]) -> list[Candidate]:
    names = srv_names(domain)
    answers = await asyncio.gather(*(resolver.srv(name) for name in names))
    candidates, errors = srv_candidates(domain, dict(zip(names, answers, strict=True)))
    notes.setdefault("srv", []).extend(errors)
    return candidates


async def _mx_source(
    domain: str, resolver: Resolver, notes: dict[str, list[str]]
) -> tuple[list[Candidate], Provider | None]:
    records = [r for r in await resolver.mx(domain) if r.host not in (".", "")]
    if not records:
        return [], None
    mx_host = records[0].host
    provider = provider_for_mx(mx_host)
    if provider is not None:
        notes.setdefault("mx", []).append(f"MX {mx_host} is {provider.name}")
        return [c for p in Protocol for c in provider.candidates(p, "mx")], provider
    mx_domain = registered_domain_guess(mx_host)
    if mx_domain == domain:
        return [], None  # guessing covers the address's own domain
    notes.setdefault("mx", []).append(f"MX {mx_host}: guessing hosts in {mx_domain}")
    candidates: list[Candidate] = []
    for p in Protocol:
        for host in guess_hosts(p, mx_domain):
            try:
                candidates.extend(Candidate(p, host, port, sec, "mx") for port, sec in PORT_TABLE[p])
            except ConfigError as exc:  # an MX host that is no valid host name
                notes["mx"].append(f"MX {mx_host} skipped: {exc}")
                return [], None
    return candidates, None


_SERVER_LEVEL = frozenset({"refused", "timeout", "no-starttls"})


class _Prober:
    def __init__(
        self,
        resolver: Resolver,
        ssl_context: ssl.SSLContext,
        login: Login | None,
        limits: ProbeLimits,
        stats: DiscoveryStats,
    ) -> None:
        self.resolver = resolver
        self.ssl_context = ssl_context
        self.login = login
        self.limits = limits
        self.stats = stats
        # (protocol, address, port, security) -> the first probe's finding and host name. Names that
        # resolve to one address are one server: a refusal, timeout or missing STARTTLS there is
        # not worth a second connection (nor a second timeout). Success and TLS errors depend on
        # the name (the certificate), so those are always probed per name.
        self._shared: dict[tuple[Protocol, str, int, Security], tuple[asyncio.Future[Finding], str]] = {}

    async def __call__(self, candidate: Candidate) -> ProbeResult:
        started = time.monotonic()
        try:
            addresses = await self.resolver.addresses(candidate.host)
        except (OSError, MailkitError) as exc:  # defensive: lookups return [] on failure
            addresses = []
            log.debug("lookup of %s failed: %s", candidate.host, exc)
        if not addresses:
            return ProbeResult(
                candidate, Finding("skipped", "host does not resolve"), time.monotonic() - started
            )
        key = (candidate.protocol, addresses[0], candidate.port, candidate.security)
        shared = self._shared.get(key)
        if shared is not None:
            future, first_host = shared
            try:
                earlier = await asyncio.shield(future)
            except asyncio.CancelledError:
                if not future.cancelled():
                    raise  # we were cancelled ourselves
            else:
                if earlier.outcome in _SERVER_LEVEL:
                    detail = f"{earlier.detail} (same server as {first_host})"
                    return ProbeResult(
                        candidate, Finding(earlier.outcome, detail), time.monotonic() - started
                    )
        future = asyncio.get_running_loop().create_future()
        self._shared.setdefault(key, (future, candidate.host))
        login = self.login
        if login is not None and candidate.user is not None:
            login = Login(candidate.user, login.password)
        self.stats.connections += 1
        try:
            result = await probe(candidate, addresses[0], self.ssl_context, login, self.limits)
        except BaseException:
            future.cancel()
            raise
        if not future.done():
            future.set_result(result.finding)
        return ProbeResult(candidate, result.finding, time.monotonic() - started)


def _attempt(result: ProbeResult) -> Attempt:
    c = result.candidate
    return Attempt(
        c.protocol,
        c.host,
        c.port,
        c.security,
        result.outcome,
        result.seconds,
        result.finding.detail,
        c.source,
    )


async def _race_protocol(
    protocol: Protocol,
    candidates: list[Candidate],
    prober: _Prober,
    *,
    stagger: float,
    deadline: float,
) -> tuple[ProbeResult | None, list[Attempt]]:
    outcome = await race(candidates, prober, lambda r: r.usable, stagger=stagger, deadline=deadline)
    attempts: list[Attempt] = []
    for index in sorted({*outcome.results, *outcome.cancelled}):
        if index in outcome.results:
            attempts.append(_attempt(outcome.results[index]))
            continue
        c = candidates[index]
        if outcome.winner is not None and index > outcome.winner:
            outcome_name, detail = "skipped", "stopped: a better candidate succeeded"
        else:
            outcome_name, detail = "timeout", "stopped: discovery time limit reached"
        attempts.append(Attempt(c.protocol, c.host, c.port, c.security, outcome_name, 0.0, detail, c.source))
    winner = outcome.results[outcome.winner] if outcome.winner is not None else None
    return winner, attempts


def _choice(result: ProbeResult, provider: Provider | None) -> Choice:
    c = result.candidate
    # also for a cached or guessed endpoint that happens to be the provider's: the limits still apply
    from_provider = provider is not None and any(
        (h, p, s) == (c.host, c.port, c.security) for h, p, s in provider.servers(c.protocol)
    )
    return Choice(
        c.endpoint(),
        c.source,
        verified=result.finding.logged_in,
        auth_mechanisms=result.finding.auth_mechanisms,
        oauth2=bool(provider.oauth2) if from_provider and provider else False,
        limits=dict(provider.limits) if from_provider and provider else {},
    )


def _nothing_found(profile: Profile) -> MailkitError:
    failures = [(p, profile.failure(p)) for p in Protocol]
    errors = [(p, e) for p, e in failures if e is not None and any(a.protocol is p for a in profile.attempts)]
    if not errors:
        errors = [(p, e) for p, e in failures if e is not None]
    for kind in (SecurityError, CertificateError, TimeoutError):
        for _, error in errors:
            if isinstance(error, kind):
                chosen: MailkitError = error
                break
        else:
            continue
        break
    else:
        chosen = errors[0][1] if errors else ConnectError(f"no server found for {profile.address}")
    message = "; ".join(str(e) for _, e in errors)
    error = type(chosen)(message)
    error.profile = profile  # type: ignore[attr-defined]  # so callers can still explain it
    return error


def _apply_latch(
    candidates: list[Candidate], floor: Security | None
) -> tuple[list[Candidate], list[Attempt]]:
    """Split off candidates weaker than the latched security (explicit settings are exempt)."""
    if floor is None:
        return candidates, []
    usable: list[Candidate] = []
    refused: list[Attempt] = []
    for c in candidates:
        if SECURITY_RANK[c.security] < SECURITY_RANK[floor] and c.source != "settings":
            detail = (
                f"weaker than the latched security ({floor.value}); run discovery again "
                "explicitly (refresh=True / mailkit discover) to accept it"
            )
            refused.append(Attempt(c.protocol, c.host, c.port, c.security, "skipped", 0.0, detail, c.source))
        else:
            usable.append(c)
    return usable, refused


async def discover_async(
    address: str,
    password: str | None = None,
    *,
    user: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    allow_insecure: bool = False,
    timeouts: Timeouts | None = None,
    resolve: Mapping[str, str] | Iterable[str] | None = None,
    nameserver: str | None = None,
    test_environment: bool = False,
    endpoints: Mapping[Protocol | str, Endpoint | str] | None = None,
    protocols: Iterable[Protocol | str] | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    refresh: bool = False,
    stagger: float = DEFAULT_STAGGER,
    total_timeout: float = DEFAULT_TOTAL,
    stats: DiscoveryStats | None = None,
) -> Profile:
    """Find the best working endpoint per protocol for ``address``; see docs/discovery.md."""
    domain = _domain_of(address, test_environment)
    if password is not None:
        check_line_safe(password, "password", secret=True)
    if user is not None:
        check_line_safe(user, "user name")
    if not stagger >= 0 or not total_timeout > 0:
        raise ConfigError("stagger must be >= 0 and total_timeout > 0")
    try:
        wanted = list(dict.fromkeys(Protocol(p) for p in (protocols or Protocol)))
    except ValueError:
        raise ConfigError(f"protocols must be among smtp, imap, pop3: {protocols!r}") from None
    explicit = _explicit(endpoints, allow_insecure)
    overrides = parse_resolve(resolve if isinstance(resolve, Mapping) or resolve is None else tuple(resolve))
    timeouts = timeouts or Timeouts()
    limits = ProbeLimits(
        connect=_cap(timeouts.connect, PROBE_CONNECT_CAP), step=_cap(timeouts.command, PROBE_STEP_CAP)
    )
    lookup_timeout = _cap(timeouts.command, LOOKUP_CAP)
    # Discovery never trusts an unverified certificate, even with allow_insecure: a candidate
    # with a bad certificate is never used. allow_insecure only adds plaintext candidates.
    ssl_context = create_ssl_context(ca_file)
    if allow_insecure:
        warnings.warn(
            "allow_insecure=True: plaintext candidates will be tried after every secure one",
            InsecureWarning,
            stacklevel=2,
        )
    stats = stats if stats is not None else DiscoveryStats()
    store = ProfileCache(cache_dir) if cache else None
    entry = store.load(address) if store is not None else None
    latch: dict[Protocol, Security] = {} if refresh or entry is None else dict(entry.latch)
    cached = None if refresh or entry is None else entry.profile

    resolver = Resolver(overrides=overrides, nameserver=nameserver, timeout=lookup_timeout)
    try:
        started = time.monotonic()
        sources = await _gather_sources(
            address, domain, wanted, explicit, cached, resolver, ssl_context, lookup_timeout
        )
        stats.lookups_seconds = time.monotonic() - started
        stats.sources = sources.notes
        login = Login(user or address, password) if password is not None else None
        prober = _Prober(resolver, ssl_context, login, limits, stats)
        deadline = time.monotonic() + total_timeout
        attempts: list[Attempt] = []
        races = []
        for protocol in wanted:
            ordered = order_candidates(sources.per_protocol[protocol], allow_insecure=allow_insecure)
            usable, refused = _apply_latch(ordered, latch.get(protocol))
            attempts.extend(refused)
            races.append(_race_protocol(protocol, usable, prober, stagger=stagger, deadline=deadline))
        probe_started = time.monotonic()
        outcomes = await asyncio.gather(*races)
        stats.probe_seconds = time.monotonic() - probe_started
    finally:
        resolver.close()

    choices: dict[str, Choice | None] = {p.value: None for p in Protocol}
    for protocol, (winner, tried) in zip(wanted, outcomes, strict=True):
        attempts.extend(tried)
        if winner is not None:
            chosen = _choice(winner, sources.provider)
            choices[protocol.value] = chosen
            if chosen.endpoint.security is Security.INSECURE:
                message = f"{protocol.value} for {address} uses plaintext {chosen.endpoint.url}"
                warnings.warn(message, InsecureWarning, stacklevel=2)
                log.warning(message)
    profile = Profile(
        address=address,
        smtp=choices["smtp"],
        imap=choices["imap"],
        pop3=choices["pop3"],
        # per protocol in candidate order; candidates refused by the latch after the ones tried
        attempts=tuple(
            sorted(attempts, key=lambda a: (list(Protocol).index(a.protocol), "latched" in a.detail))
        ),
        provider=sources.provider.name if sources.provider else None,
    )
    if store is not None and any(c is not None and c.verified for c in choices.values()):
        new_latch = dict(latch)
        for protocol in wanted:
            choice = profile.choice(protocol)
            if choice is not None:
                new_latch[protocol] = choice.endpoint.security
        saved = profile
        if cached is not None and len(wanted) < len(Protocol):
            # Discovering some protocols must not make the cache forget the others.
            merged = {p: profile.choice(p) if p in wanted else cached.choice(p) for p in Protocol}
            saved = dataclasses.replace(
                profile, smtp=merged[Protocol.SMTP], imap=merged[Protocol.IMAP], pop3=merged[Protocol.POP3]
            )
        try:
            store.save(address, saved, new_latch)
        except OSError as exc:
            log.warning("cannot save the discovered profile: %s", exc)
    if not profile.found:
        raise _nothing_found(profile)
    return profile
