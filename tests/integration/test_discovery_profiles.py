"""Discovery against differently configured real servers on real port numbers (see discovery_servers)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mailkit import CertificateError, InsecureWarning, Profile, SecurityError, Timeouts
from mailkit.cli import cli
from mailkit.config import Protocol, Security
from mailkit.discovery import DiscoveryStats, ProfileCache, discover, discover_async
from mailkit.discovery.profile import Choice
from tests.integration.discovery_servers import (
    NAMESERVER,
    PASSWORD,
    USER,
    DiscoveryWorld,
    blackholes,
    discovery_world,
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0,
    reason="real-port discovery profiles need Linux and root",
)

CONNECT = 1.0
STAGGER = 0.1


@pytest.fixture(scope="module")
def world() -> Iterator[DiscoveryWorld]:
    with discovery_world() as built:
        yield built


async def run(
    world: DiscoveryWorld, address: str, password: str | None = PASSWORD, **options: Any
) -> Profile:
    settings: dict[str, Any] = {
        "user": USER,
        "ca_file": world.ca_file,
        "nameserver": NAMESERVER,
        "test_environment": True,
        "cache": False,
        "timeouts": Timeouts(connect=CONNECT, command=2.0),
        "stagger": STAGGER,
    }
    settings.update(options)
    return await discover_async(address, password, **settings)


def chosen(profile: Profile, protocol: str) -> Choice:
    choice = profile.choice(protocol)
    assert choice is not None, f"no {protocol}: {[a.to_dict() for a in profile.attempts]}"
    return choice


def outcomes(profile: Profile, protocol: str) -> list[tuple[str, int, str, str]]:
    return [
        (a.host, a.port, a.security.value, a.outcome)
        for a in profile.attempts
        if a.protocol.value == protocol
    ]


async def test_every_port_open_picks_implicit_tls_and_logs_in(world: DiscoveryWorld) -> None:
    profile = await run(world, "alice@all.test")
    for protocol, host, port in (
        ("smtp", "smtp.all.test", 465),
        ("imap", "imap.all.test", 993),
        ("pop3", "pop.all.test", 995),
    ):
        choice = chosen(profile, protocol)
        assert (choice.endpoint.host, choice.endpoint.port, choice.endpoint.security) == (
            host,
            port,
            Security.TLS,
        )
        assert choice.source == "guess"
        assert choice.verified is True
        assert "PLAIN" in choice.auth_mechanisms
        first = next(a for a in profile.attempts if a.protocol.value == protocol)
        assert (first.port, first.outcome) == (port, "ok")
    assert Profile.from_json(profile.to_json()) == profile


async def test_starttls_only_server_falls_back_to_587_143_110(world: DiscoveryWorld) -> None:
    profile = await run(world, "alice@starttls.test")
    assert chosen(profile, "smtp").endpoint.url == "smtp+starttls://smtp.starttls.test:587"
    assert chosen(profile, "imap").endpoint.url == "imap+starttls://imap.starttls.test:143"
    assert chosen(profile, "pop3").endpoint.url == "pop3+starttls://pop.starttls.test:110"
    assert all(chosen(profile, p).verified for p in ("smtp", "imap", "pop3"))
    assert ("smtp.starttls.test", 465, "tls", "refused") in outcomes(profile, "smtp")
    assert ("imap.starttls.test", 993, "tls", "refused") in outcomes(profile, "imap")
    assert ("pop.starttls.test", 995, "tls", "refused") in outcomes(profile, "pop3")


async def test_only_2525_open(world: DiscoveryWorld) -> None:
    profile = await run(world, "alice@alt.test", protocols=["smtp"])
    choice = chosen(profile, "smtp")
    assert (choice.endpoint.port, choice.endpoint.security, choice.verified) == (
        2525,
        Security.STARTTLS,
        True,
    )
    tried = outcomes(profile, "smtp")
    assert tried[:3] == [
        ("smtp.alt.test", 465, "tls", "refused"),
        ("smtp.alt.test", 587, "starttls", "refused"),
        ("smtp.alt.test", 2525, "starttls", "ok"),
    ]


async def test_missing_protocol_is_null_with_a_reason(world: DiscoveryWorld) -> None:
    profile = await run(world, "alice@alt.test")
    assert profile.smtp is not None
    assert profile.imap is None and profile.pop3 is None
    assert json.loads(profile.to_json())["imap"] is None
    assert "no working imap server" in str(profile.failure("imap"))


async def test_plaintext_only_server_is_refused_with_how_to_opt_in(world: DiscoveryWorld) -> None:
    with pytest.raises(SecurityError) as caught:
        await run(world, "alice@plain.test")
    assert "plaintext" in str(caught.value) and "allow_insecure=True" in str(caught.value)
    profile: Profile = caught.value.profile  # type: ignore[attr-defined]
    assert ("smtp.plain.test", 587, "starttls", "no-starttls") in outcomes(profile, "smtp")
    assert not any(a.security is Security.INSECURE for a in profile.attempts)
    assert world.plain.logins == []  # no password ever went over plaintext


async def test_plaintext_only_server_accepted_with_allow_insecure(world: DiscoveryWorld) -> None:
    with pytest.warns(InsecureWarning):
        profile = await run(world, "alice@plain.test", allow_insecure=True)
    smtp, imap, pop3 = (chosen(profile, p) for p in ("smtp", "imap", "pop3"))
    assert smtp.endpoint.url == "smtp+insecure://smtp.plain.test:587"
    assert imap.endpoint.url == "imap+insecure://imap.plain.test:143"
    assert pop3.endpoint.url == "pop3+insecure://pop.plain.test:110"
    assert smtp.verified and imap.verified and pop3.verified
    # every secure candidate was tried first
    secure_first = [a.security for a in profile.attempts if a.protocol is Protocol.SMTP]
    assert secure_first.index(Security.INSECURE) > secure_first.index(Security.STARTTLS)


async def test_blackholed_implicit_tls_ports_cost_one_timeout_in_total(world: DiscoveryWorld) -> None:
    with blackholes("127.0.0.11"):
        started = time.monotonic()
        profile = await run(world, "alice@starttls.test")
        elapsed = time.monotonic() - started
    assert chosen(profile, "smtp").endpoint.port == 587
    assert chosen(profile, "imap").endpoint.port == 143
    assert chosen(profile, "pop3").endpoint.port == 110
    for protocol, port in (("smtp", 465), ("imap", 993), ("pop3", 995)):
        assert (
            f"{'pop' if protocol == 'pop3' else protocol}.starttls.test",
            port,
            "tls",
            "timeout",
        ) in outcomes(profile, protocol)
    # three blackholed ports, raced in parallel: one connect timeout plus the stagger, not three
    assert elapsed < CONNECT + STAGGER + 0.9, elapsed


async def test_starttls_that_breaks_the_upgrade_is_never_used(world: DiscoveryWorld) -> None:
    profile = await run(world, "alice@broken.test", protocols=["smtp", "imap"])
    assert ("smtp.broken.test", 587, "starttls", "tls-error") in outcomes(profile, "smtp")
    smtp = chosen(profile, "smtp")
    assert (smtp.endpoint.port, smtp.endpoint.security, smtp.verified) == (2525, Security.STARTTLS, True)
    assert profile.imap is None
    assert ("imap.broken.test", 143, "starttls", "tls-error") in outcomes(profile, "imap")
    assert world.broken.logins == []


async def test_certificate_for_another_host_is_never_used(world: DiscoveryWorld) -> None:
    with pytest.raises(CertificateError) as caught:
        await run(world, "alice@wrongcert.test")
    profile: Profile = caught.value.profile  # type: ignore[attr-defined]
    assert profile.attempts
    secure = [a for a in profile.attempts if a.outcome != "skipped"]
    assert secure and all(a.outcome == "tls-error" for a in secure), outcomes(profile, "smtp")
    assert any("wrong.invalid" in a.detail or "match" in a.detail for a in secure)


async def test_srv_records(world: DiscoveryWorld) -> None:
    profile = await run(world, "alice@srv.test")
    for protocol, url in (
        ("smtp", "smtps://mail.all.test:465"),
        ("imap", "imaps://mail.all.test:993"),
        ("pop3", "pop3s://mail.all.test:995"),
    ):
        choice = chosen(profile, protocol)
        assert (choice.endpoint.url, choice.source) == (url, "srv")


async def test_mx_host_domain(world: DiscoveryWorld) -> None:
    profile = await run(world, "alice@mx.test", protocols=["smtp", "imap"])
    assert chosen(profile, "smtp").endpoint.url == "smtps://smtp.all.test:465"
    assert chosen(profile, "smtp").source == "mx"
    assert chosen(profile, "imap").source == "mx"


async def test_autoconfig_over_https(world: DiscoveryWorld) -> None:
    profile = await run(world, "alice@ac.test")
    assert chosen(profile, "smtp").endpoint.url == "smtp+starttls://mail.all.test:587"
    assert chosen(profile, "imap").endpoint.url == "imap+starttls://imap.all.test:143"
    assert chosen(profile, "pop3").endpoint.url == "pop3s://pop.all.test:995"
    assert {chosen(profile, p).source for p in ("smtp", "imap", "pop3")} == {"autoconfig"}
    assert all(chosen(profile, p).verified for p in ("smtp", "imap", "pop3"))


async def test_autoconfig_over_plain_http_is_untrusted(world: DiscoveryWorld) -> None:
    with pytest.raises(CertificateError) as caught:
        await run(world, "alice@achttp.test", protocols=["smtp"], allow_insecure=False)
    profile: Profile = caught.value.profile  # type: ignore[attr-defined]
    assert any(hit.startswith("autoconfig.achttp.test/mail/config-v1.1.xml") for hit in world.http.hits)
    smtp = [a for a in profile.attempts if a.protocol is Protocol.SMTP]
    # outside the domain: ignored; plaintext: dropped; in-domain TLS entry: probed, bad cert, not used
    assert not any(a.host == "smtp.all.test" for a in smtp)
    assert not any(a.security is Security.INSECURE for a in smtp)
    first = smtp[0]
    assert (first.host, first.port, first.source, first.outcome) == (
        "smtp.achttp.test",
        465,
        "autoconfig",
        "tls-error",
    )


async def test_wrong_password_keeps_endpoint_unverified(world: DiscoveryWorld) -> None:
    profile = await run(world, "alice@all.test", "not-the-password", protocols=["smtp", "pop3"])
    smtp = chosen(profile, "smtp")
    assert smtp.endpoint.port == 465 and smtp.verified is False
    assert outcomes(profile, "smtp")[0][3] == "auth-failed"
    assert chosen(profile, "pop3").verified is False


async def test_without_password_reads_capabilities_only(world: DiscoveryWorld) -> None:
    profile = await run(world, "alice@all.test", None, protocols=["imap"])
    imap = chosen(profile, "imap")
    assert imap.endpoint.port == 993 and imap.verified is False and "PLAIN" in imap.auth_mechanisms


async def test_resolve_overrides_address_but_tls_checks_the_name(world: DiscoveryWorld) -> None:
    # smtp.all.test is sent to the 2525-only stack, whose certificate is for alt.test
    profile = await run(world, "alice@all.test", protocols=["smtp"], resolve={"smtp.all.test": "127.0.0.12"})
    assert outcomes(profile, "smtp")[:3] == [
        ("smtp.all.test", 465, "tls", "refused"),
        ("smtp.all.test", 587, "starttls", "refused"),
        ("smtp.all.test", 2525, "starttls", "tls-error"),
    ]
    assert chosen(profile, "smtp").endpoint.url == "smtps://mail.all.test:465"


async def test_resolve_without_dns(world: DiscoveryWorld) -> None:
    hosts = {h: "127.0.0.10" for h in ("smtp.all.test", "imap.all.test", "pop.all.test")}
    profile = await run(world, "alice@all.test", nameserver="127.0.0.31:53", resolve=hosts)
    assert [chosen(profile, p).endpoint.port for p in ("smtp", "imap", "pop3")] == [465, 993, 995]


async def test_cache_is_tried_first_and_a_dead_entry_falls_through(
    world: DiscoveryWorld, tmp_path: Path
) -> None:
    first = await run(world, "alice@all.test", cache=True, cache_dir=tmp_path)
    assert chosen(first, "smtp").source == "guess"
    second = await run(world, "alice@all.test", cache=True, cache_dir=tmp_path)
    assert {chosen(second, p).source for p in ("smtp", "imap", "pop3")} == {"cache"}
    # a cached endpoint that stopped answering: re-discovered, not fatal
    store = ProfileCache(tmp_path)
    entry = store.load("alice@all.test")
    assert entry is not None and entry.profile is not None
    dead = Choice(
        chosen(entry.profile, "smtp").endpoint.__class__.parse("smtps://smtp.all.test:4465"), "guess", True
    )
    store.save("alice@all.test", dataclasses.replace(entry.profile, smtp=dead), entry.latch)
    third = await run(world, "alice@all.test", cache=True, cache_dir=tmp_path, protocols=["smtp"])
    assert outcomes(third, "smtp")[0] == ("smtp.all.test", 4465, "tls", "refused")
    assert chosen(third, "smtp").endpoint.port == 465 and chosen(third, "smtp").source == "guess"
    # discovering only SMTP refreshed its entry and kept what was known for the others
    entry = store.load("alice@all.test")
    assert entry is not None and entry.profile is not None
    assert chosen(entry.profile, "smtp").endpoint.port == 465
    assert chosen(entry.profile, "imap").endpoint.port == 993
    assert entry.latch[Protocol.IMAP] is Security.TLS  # the latch outlives the entries


async def test_explicit_settings_are_the_only_candidate_and_exempt_from_the_latch(
    world: DiscoveryWorld, tmp_path: Path
) -> None:
    ProfileCache(tmp_path).save("alice@starttls.test", None, {Protocol.SMTP: Security.TLS})
    profile = await run(
        world,
        "alice@starttls.test",
        cache=True,
        cache_dir=tmp_path,
        endpoints={"smtp": "smtp+starttls://smtp.starttls.test:587"},
        protocols=["smtp"],
    )
    assert [(a.port, a.source, a.outcome) for a in profile.attempts] == [(587, "settings", "ok")]
    assert chosen(profile, "smtp").source == "settings" and chosen(profile, "smtp").verified


async def test_downgrade_latch(world: DiscoveryWorld, tmp_path: Path) -> None:
    store = ProfileCache(tmp_path)
    # As if this address had reached implicit TLS before, and 465/993/995 are now unreachable:
    store.save("alice@starttls.test", None, {Protocol.SMTP: Security.TLS, Protocol.IMAP: Security.TLS})
    with pytest.raises(SecurityError) as caught:
        await run(world, "alice@starttls.test", cache=True, cache_dir=tmp_path, protocols=["smtp", "imap"])
    assert "latched" in str(caught.value)
    profile: Profile = caught.value.profile  # type: ignore[attr-defined]
    assert ("smtp.starttls.test", 587, "starttls", "skipped") in outcomes(profile, "smtp")
    # an explicit re-run accepts the weaker level and records it
    profile = await run(
        world, "alice@starttls.test", cache=True, cache_dir=tmp_path, refresh=True, protocols=["smtp", "imap"]
    )
    assert chosen(profile, "smtp").endpoint.security is Security.STARTTLS
    entry = store.load("alice@starttls.test")
    assert entry is not None and entry.latch[Protocol.SMTP] is Security.STARTTLS


def test_sync_discover_and_stats(world: DiscoveryWorld) -> None:
    stats = DiscoveryStats()
    profile = discover(
        "alice@starttls.test",
        PASSWORD,
        user=USER,
        ca_file=world.ca_file,
        nameserver=NAMESERVER,
        test_environment=True,
        cache=False,
        stats=stats,
        protocols=["smtp"],
    )
    assert chosen(profile, "smtp").endpoint.port == 587
    assert stats.connections == len([a for a in profile.attempts if a.outcome != "skipped"])


def test_cli_json_and_explain(world: DiscoveryWorld, tmp_path: Path) -> None:
    runner = CliRunner()
    common = ["--ca-file", world.ca_file, "--nameserver", NAMESERVER, "--timeout", "2"]
    result = runner.invoke(cli, ["discover", "alice@starttls.test", "--json", *common])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) >= {"address", "smtp", "imap", "pop3", "attempts"}
    assert data["smtp"]["port"] == 587 and data["smtp"]["security"] == "starttls"
    assert set(data["smtp"]) >= {"host", "port", "security", "source", "verified"}
    assert set(data["attempts"][0]) >= {
        "protocol",
        "host",
        "port",
        "security",
        "outcome",
        "seconds",
        "detail",
    }

    result = runner.invoke(cli, ["discover", "alice@starttls.test", "--explain", *common])
    assert result.exit_code == 0, result.output
    assert "refused" in result.stdout and "smtp.starttls.test" in result.stdout


@pytest.mark.filterwarnings("ignore::mailkit.InsecureWarning")
def test_cli_plaintext_only_says_how_to_opt_in(world: DiscoveryWorld) -> None:
    runner = CliRunner()
    args = [
        "discover",
        "alice@plain.test",
        "--ca-file",
        world.ca_file,
        "--nameserver",
        NAMESERVER,
        "--timeout",
        "2",
    ]
    result = runner.invoke(cli, args)
    assert result.exit_code == 1
    assert "--allow-insecure" in result.stderr
    result = runner.invoke(cli, [*args, "--allow-insecure", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["smtp"]["security"] == "insecure"


def test_cli_resolve_option(world: DiscoveryWorld) -> None:
    runner = CliRunner()
    args = ["discover", "alice@all.test", "--ca-file", world.ca_file, "--nameserver", "127.0.0.31:53"]
    args += ["--resolve", "smtp.all.test=127.0.0.10", "--resolve", "imap.all.test=127.0.0.10", "--json"]
    args += ["--resolve", "pop.all.test=127.0.0.10", "--timeout", "2"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["imap"]["port"] == 993
