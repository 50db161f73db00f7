"""Probes against hostile scripted servers: injection after STARTTLS, endless lines, silence."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator

import pytest

from mailkit import Profile, Timeouts
from mailkit.discovery import discover_async
from tests.faults.scripted import ScriptedServers

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0, reason="needs Linux and root"
)

HOST = "127.0.0.22"


@pytest.fixture
def scripted() -> Iterator[ScriptedServers]:
    servers = ScriptedServers()
    try:
        yield servers
    finally:
        servers.close()


async def probe_one(url: str, protocol: str) -> Profile:
    try:
        return await discover_async(
            "alice@hostile.test",
            "pw",
            test_environment=True,
            cache=False,
            endpoints={protocol: url},
            protocols=[protocol],
            resolve={"hostile.test": HOST},
            timeouts=Timeouts(connect=1.0, command=0.5),
        )
    except Exception as exc:  # noqa: BLE001 - the attached profile is what we inspect
        profile: Profile = exc.profile  # type: ignore[attr-defined]
        return profile


async def test_plaintext_injected_after_starttls_is_refused(scripted: ScriptedServers) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hostile\r\n")
        await reader.readline()  # EHLO
        writer.write(b"250-hostile\r\n250 STARTTLS\r\n")
        await reader.readline()  # STARTTLS
        # the reply and an injected "capability" in one segment, before any TLS
        writer.write(b"220 go ahead\r\n250 AUTH PLAIN\r\n")
        await writer.drain()
        await reader.read(1024)

    scripted.add(HOST, 1587, handler)
    profile = await probe_one("smtp+starttls://hostile.test:1587", "smtp")
    (attempt,) = profile.attempts
    assert attempt.outcome == "tls-error" and "injection" in attempt.detail
    assert profile.smtp is None


async def test_endless_greeting_line_is_cut(scripted: ScriptedServers) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK " + b"A" * 100_000)
        await writer.drain()
        await reader.read(1024)

    scripted.add(HOST, 1143, handler)
    profile = await probe_one("imap+starttls://hostile.test:1143", "imap")
    (attempt,) = profile.attempts
    assert attempt.outcome == "refused" and "longer than allowed" in attempt.detail


async def test_silent_server_times_out_at_the_step_limit(scripted: ScriptedServers) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)  # accepts, never greets

    scripted.add(HOST, 1110, handler)
    started = time.monotonic()
    profile = await probe_one("pop3+starttls://hostile.test:1110", "pop3")
    (attempt,) = profile.attempts
    assert attempt.outcome == "timeout"
    assert time.monotonic() - started < 2.0


async def test_wrong_protocol_on_the_port(scripted: ScriptedServers) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")
        await writer.drain()
        await reader.read(1024)

    scripted.add(HOST, 1025, handler)
    profile = await probe_one("smtp+starttls://hostile.test:1025", "smtp")
    (attempt,) = profile.attempts
    assert attempt.outcome == "refused" and "not an SMTP reply" in attempt.detail
