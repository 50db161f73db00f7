"""Discovery speed per server profile: mailkit's staggered parallel race against a sequential
prober and against the stdlib's bare logins to the already-known answer, in one run, as ratios.

    python bench/bench_discovery.py [--repeat 3] [--connect 1.0]

Needs root and the discovery test servers (tests/integration/discovery_servers.py: real
Dovecot/Postfix profiles on 127.0.0.10-13 with real port numbers, dnsmasq, scripted servers).
Cases per profile (address, password, all three protocols):

- ``mailkit``: ``discover_async`` as shipped (stagger 0.25 s, protocols raced together);
- ``sequential``: the same probes one at a time (next candidate only after the previous failed,
  one protocol after the other): what a simple "try 465, then 587, ..." loop costs;
- ``stdlib-login``: smtplib + imaplib + poplib logging in to the endpoints mailkit found (no
  discovery at all): the floor, what the answer costs when already known.

Reported: median seconds, connections made, and ratios to ``stdlib-login`` and ``sequential``.
"""

from __future__ import annotations

import argparse
import asyncio
import imaplib
import logging
import os
import poplib
import smtplib
import socket
import ssl
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mailkit import InsecureWarning, Profile, Timeouts  # noqa: E402
from mailkit.config import Protocol, Security  # noqa: E402
from mailkit.discovery import DiscoveryStats, discover_async  # noqa: E402
from tests.integration import discovery_servers as servers  # noqa: E402

PROFILES: list[tuple[str, str, dict[str, Any]]] = [
    ("every port", "alice@all.test", {}),
    ("STARTTLS only", "alice@starttls.test", {}),
    ("465/993/995 blackholed", "alice@starttls.test", {"blackhole": "127.0.0.11"}),
    ("2525 only (smtp)", "alice@alt.test", {"protocols": ["smtp"]}),
    ("broken STARTTLS (smtp)", "alice@broken.test", {"protocols": ["smtp"]}),
    ("plaintext only, allowed", "alice@plain.test", {"allow_insecure": True}),
    ("SRV records", "alice@srv.test", {}),
    ("autoconfig (HTTPS)", "alice@ac.test", {}),
]


async def run_mailkit(
    address: str, world: servers.DiscoveryWorld, connect: float, **options: Any
) -> tuple[Profile, int]:
    stats = DiscoveryStats()
    profile = await discover_async(
        address,
        servers.PASSWORD,
        user=servers.USER,
        ca_file=world.ca_file,
        nameserver=servers.NAMESERVER,
        test_environment=True,
        cache=False,
        timeouts=Timeouts(connect=connect, command=2.0),
        stats=stats,
        **options,
    )
    return profile, stats.connections


async def run_sequential(
    address: str, world: servers.DiscoveryWorld, connect: float, **options: Any
) -> tuple[Profile, int]:
    connections = 0
    protocols = options.pop("protocols", [p.value for p in Protocol])
    last: Profile | None = None
    for protocol in protocols:
        profile, count = await run_mailkit(
            address, world, connect, protocols=[protocol], stagger=3600.0, **options
        )
        connections += count
        last = profile
    assert last is not None
    return last, connections


@contextmanager
def names_for_stdlib(mapping: dict[str, str]) -> Iterator[None]:
    """The stdlib resolves through the system; point the test names at their loopback hosts."""
    real = socket.getaddrinfo

    def fake(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real(mapping.get(host, host), *args, **kwargs)

    socket.getaddrinfo = fake  # type: ignore[assignment]
    try:
        yield
    finally:
        socket.getaddrinfo = real  # type: ignore[assignment]


def stdlib_login(profile: Profile, context: ssl.SSLContext, timeout: float) -> int:
    count = 0
    user, password = servers.USER, servers.PASSWORD
    for protocol in Protocol:
        choice = profile.choice(protocol)
        if choice is None:
            continue
        e = choice.endpoint
        count += 1
        if protocol is Protocol.SMTP:
            cls = smtplib.SMTP_SSL if e.security is Security.TLS else smtplib.SMTP
            kwargs = {"context": context} if e.security is Security.TLS else {}
            with cls(e.host, e.port, timeout=timeout, **kwargs) as smtp:  # type: ignore[arg-type]
                if e.security is Security.STARTTLS:
                    smtp.starttls(context=context)
                smtp.login(user, password)
        elif protocol is Protocol.IMAP:
            imap = (
                imaplib.IMAP4_SSL(e.host, e.port, ssl_context=context, timeout=timeout)
                if e.security is Security.TLS
                else imaplib.IMAP4(e.host, e.port, timeout=timeout)
            )
            if e.security is Security.STARTTLS:
                imap.starttls(context)
            imap.authenticate("PLAIN", lambda _: f"\0{user}\0{password}".encode())
            imap.logout()
        else:
            pop = (
                poplib.POP3_SSL(e.host, e.port, context=context, timeout=timeout)
                if e.security is Security.TLS
                else poplib.POP3(e.host, e.port, timeout=timeout)
            )
            if e.security is Security.STARTTLS:
                pop.stls(context)
            pop.user(user)
            pop.pass_(password)
            pop.quit()
    return count


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--connect", type=float, default=1.0, help="connect timeout (s) for probes")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_discovery needs root (real port numbers on 127.0.0.x)")
    warnings.simplefilter("ignore", InsecureWarning)
    logging.getLogger("mailkit").setLevel(logging.ERROR)  # the plaintext profile warns each run

    hosts = {}
    for name, address in (("all", "127.0.0.10"), ("starttls", "127.0.0.11"), ("alt", "127.0.0.12")):
        for prefix in ("smtp.", "imap.", "pop.", "mail."):
            hosts[f"{prefix}{name}.test"] = address
    for prefix in ("smtp.", "imap.", "pop."):
        hosts[f"{prefix}plain.test"] = servers.PLAIN_HOST
        hosts[f"{prefix}broken.test"] = servers.BROKEN_HOST

    rows = []
    with servers.discovery_world() as world:
        context = ssl.create_default_context(cafile=world.ca_file)
        for label, address, extra in PROFILES:
            options = dict(extra)
            hole = options.pop("blackhole", None)
            guard = servers.blackholes(hole) if hole else nullcontext()
            with guard:
                mk_time, (profile, mk_conns) = timed(
                    lambda a=address, o=options: asyncio.run(run_mailkit(a, world, args.connect, **o)),
                    args.repeat,
                )
                seq_time, (_, seq_conns) = timed(
                    lambda a=address, o=options: asyncio.run(
                        run_sequential(a, world, args.connect, **dict(o))
                    ),
                    args.repeat,
                )
            with names_for_stdlib(hosts):
                std_time, std_conns = timed(lambda p=profile: stdlib_login(p, context, 5.0), args.repeat)
            chosen = " ".join(
                f"{p.value}:{c.endpoint.port}" for p in Protocol if (c := profile.choice(p)) is not None
            )
            rows.append((label, mk_time, mk_conns, seq_time, seq_conns, std_time, std_conns, chosen))

    print(f"discovery on loopback, median of {args.repeat}, connect timeout {args.connect:g}s, stagger 0.25s")
    header = (
        f"{'profile':26} {'mailkit s':>9} {'conns':>5} {'sequential s':>12} {'conns':>5} "
        f"{'stdlib-login s':>14} {'vs stdlib':>9} {'vs seq':>7}  chosen"
    )
    print(header)
    print("-" * len(header))
    for label, mk, mkc, seq, seqc, std, _stdc, chosen in rows:
        print(
            f"{label:26} {mk:9.3f} {mkc:5d} {seq:12.3f} {seqc:5d} {std:14.3f} "
            f"{mk / std:8.1f}x {mk / seq:6.2f}x  {chosen}"
        )


if __name__ == "__main__":
    main()
