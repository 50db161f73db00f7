"""mailkit's IMAP client (``AsyncAccount.imap()``) against hostile IMAP servers.

Each test names the guarantee it proves; docs/security.md lists them. Servers are FakeIMAP
personalities on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailkit import errors
from mailkit.account import AsyncAccount
from mailkit.config import Timeouts
from mailkit.imap import Q
from tests.faults.scripted import (
    Certs,
    FakeIMAP,
    ScriptConn,
    ScriptedServer,
    assert_no_secret,
    hostile_account,
    secret_forms,
)

pytestmark = pytest.mark.faults

USER, PASSWORD = "alice@example.test", "S3cret-imap-pw"
TIMEOUTS = Timeouts(connect=2, command=2, data=3)
# AsyncIMAP.connect allows connect + 6 commands + 3 s for the whole opening (greeting, STARTTLS, login).
OPEN_BOUND = 2 + 6 * 2 + 3
SLACK = 1.0
TYPED = (errors.SecurityError, errors.TLSError, errors.ProtocolError, errors.CommandError)
POST_CAPS = ("IMAP4rev1", "AUTH=PLAIN", "UIDPLUS")


def account(port: int, certs: Certs, security: str = "starttls", **kw: object) -> AsyncAccount:
    return hostile_account(
        "imap", port, certs, security, user=USER, **({"password": PASSWORD, "timeouts": TIMEOUTS} | kw)
    )


async def open_and_select(port: int, certs: Certs, security: str = "starttls", **kw: object) -> int:
    """Log in, select INBOX; returns the EXISTS count the client believes."""
    async with account(port, certs, security, **kw) as acct, acct.imap() as imap:
        mailbox = await imap.select("INBOX")
        return mailbox.exists


def fake(**kw: object) -> FakeIMAP:
    options: dict[str, object] = {"user": USER, "password": PASSWORD, "exists": 3}
    options.update(kw)
    return FakeIMAP(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_login_over_tls_sends_no_secret_in_plaintext(certs: Certs, security: str) -> None:
    server_fake = fake()
    async with ScriptedServer(server_fake, certs, implicit_tls=security == "tls") as server:
        exists = await open_and_select(server.port, certs, security)
        conn = (await server.await_finished(1))[0]
        server.check()
    assert exists == 3 and server_fake.logins == 1
    plain = bytes(conn.received_plain)
    assert_no_secret(plain, USER, PASSWORD)
    if security == "starttls":
        assert plain.upper().endswith(b" STARTTLS\r\n"), plain


@pytest.mark.parametrize("mode", ["missing", "error", "garbage"])
async def test_starttls_stripping_stops_before_any_credential(certs: Certs, mode: str) -> None:
    server_fake = fake(starttls=mode)
    async with ScriptedServer(server_fake, certs) as server:
        with pytest.raises(TYPED) as info:
            await open_and_select(server.port, certs)
        conn = (await server.await_finished(1))[0]
        server.check()
    plain = bytes(conn.received_plain).upper()
    assert server_fake.logins == 0 and not conn.encrypted
    assert_no_secret(plain, USER, PASSWORD)
    for word in (b"LOGIN", b"AUTHENTICATE", b"SELECT", b"LIST"):
        assert word not in plain, plain
    if mode == "missing":
        assert b"STARTTLS" not in plain
    else:
        assert plain.endswith(b" STARTTLS\r\n"), plain
    assert PASSWORD not in str(info.value)


async def test_preauth_greeting_on_a_starttls_endpoint_is_refused(certs: Certs) -> None:
    server_fake = fake(greeting=b"* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] you are in, no TLS needed")
    async with ScriptedServer(server_fake, certs) as server:
        with pytest.raises(TYPED):
            await open_and_select(server.port, certs)
        conn = (await server.await_finished(1))[0]
    plain = bytes(conn.received_plain).upper()
    assert not conn.encrypted
    for word in (b"LOGIN", b"AUTHENTICATE", b"SELECT", b"LIST", b"FETCH"):
        assert word not in plain, plain
    assert_no_secret(plain, USER, PASSWORD)


@pytest.mark.parametrize(
    "inject",
    [
        b"* 99 EXISTS\r\n* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n",
        b"* OK [ALERT] injected\r\n",
        b"X",
    ],
)
async def test_plaintext_injected_after_the_go_ahead_is_never_read_as_tls(
    certs: Certs, inject: bytes
) -> None:
    # Over TLS: no AUTH=PLAIN (LOGIN must be used) and 3 messages. Reading the injection as TLS data
    # would mean AUTHENTICATE PLAIN, or 99 messages.
    server_fake = fake(starttls="inject", inject=inject, post_caps=("IMAP4rev1", "UIDPLUS"))
    async with ScriptedServer(server_fake, certs) as server:
        try:
            exists: int | None = await open_and_select(server.port, certs)
        except (errors.SecurityError, errors.TLSError):
            exists = None  # refused: the stricter, equally correct outcome
        conn = (await server.await_finished(1))[0]
    tls = bytes(conn.received_tls).upper()
    assert b"AUTHENTICATE PLAIN" not in tls
    if exists is not None:
        assert exists == 3
        assert server_fake.logins == 1


async def test_capabilities_injected_before_the_handshake_do_not_survive_it(certs: Certs) -> None:
    server_fake = fake(
        pre_caps=("IMAP4rev1", "STARTTLS", "AUTH=PLAIN"),
        post_caps=("IMAP4rev1", "UIDPLUS"),  # over TLS: LOGIN only
    )
    async with ScriptedServer(server_fake, certs) as server:
        await open_and_select(server.port, certs)
        conn = (await server.await_finished(1))[0]
    tls = bytes(conn.received_tls).upper()
    assert b"AUTHENTICATE PLAIN" not in tls, "a plaintext capability decided the login over TLS"
    assert b" LOGIN " in tls


async def test_untagged_responses_injected_before_the_handshake_do_not_survive_it(certs: Certs) -> None:
    server_fake = fake(
        pre_tls_untagged=(b"* 99 EXISTS", b"* FLAGS (\\Injected)", b"* 1 FETCH (FLAGS (\\Seen))"),
    )
    async with ScriptedServer(server_fake, certs) as server:
        exists = await open_and_select(server.port, certs)
    assert exists == 3


async def test_alert_in_a_plaintext_greeting_is_not_surfaced(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    spoof = "Your mailbox is locked: call +1-555-0100"
    server_fake = fake(greeting=f"* OK [ALERT] {spoof} [CAPABILITY IMAP4rev1 STARTTLS]".encode())
    caplog.set_level(logging.INFO, logger="mailkit")
    async with (
        ScriptedServer(server_fake, certs) as server,
        account(server.port, certs) as acct,
        acct.imap() as imap,
    ):
        await imap.select("INBOX")
        shown = repr(imap) + repr(acct) + " ".join(imap.capabilities)
    assert "555-0100" not in shown
    assert all("555-0100" not in r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)


# -- certificates and credentials -------------------------------------------------------------------


@pytest.mark.parametrize("security", ["starttls", "tls"])
@pytest.mark.parametrize("bad", ["self_signed", "expired", "wrong_host", "unknown_ca"])
async def test_bad_certificates_are_refused_before_any_credential(
    certs: Certs, security: str, bad: str
) -> None:
    server_fake = fake()
    cert = certs.all_bad()[bad]
    async with ScriptedServer(server_fake, cert=cert, implicit_tls=security == "tls") as server:
        with pytest.raises(errors.CertificateError):
            await open_and_select(server.port, certs, security)
        conn = (await server.await_finished(1))[0]
    assert server_fake.logins == 0 and conn.received_tls == b""
    assert_no_secret(conn.received, USER, PASSWORD, "whole")


async def test_allow_insecure_accepts_a_bad_certificate_and_ca_file_a_private_one(certs: Certs) -> None:
    async with ScriptedServer(fake(), cert=certs.expired, implicit_tls=True) as server:
        assert await open_and_select(server.port, certs, "tls", allow_insecure=True) == 3
    async with ScriptedServer(fake(), cert=certs.unknown_ca) as server:
        assert await open_and_select(server.port, certs, ca_file=certs.unknown_ca_file) == 3


async def test_plaintext_endpoint_is_refused_without_allow_insecure(certs: Certs) -> None:
    async with ScriptedServer(fake(), certs) as server:
        with pytest.raises(errors.SecurityError):
            account(server.port, certs, "insecure")
        await asyncio.sleep(0.1)
        assert server.connections == []


@pytest.mark.parametrize("post_caps", [POST_CAPS, ("IMAP4rev1",)], ids=["authenticate", "login"])
async def test_wrong_password_error_and_debug_log_hold_no_secret(
    certs: Certs, caplog: pytest.LogCaptureFixture, post_caps: tuple[str, ...]
) -> None:
    caplog.set_level(logging.DEBUG, logger="mailkit")
    caplog.set_level(logging.DEBUG, logger="imapclient")
    server_fake = fake(password="another-password", post_caps=post_caps)
    async with ScriptedServer(server_fake, certs) as server:
        with pytest.raises(errors.AuthenticationError) as info:
            await open_and_select(server.port, certs)
    text = caplog.text + str(info.value) + repr(info.value)
    for form in secret_forms(USER, PASSWORD):
        assert form.decode() not in text


# -- resource exhaustion ----------------------------------------------------------------------------


async def test_a_10_mb_greeting_line_is_refused_within_bounded_time(certs: Certs) -> None:
    async def script(conn: ScriptConn) -> None:
        await conn.send(b"* OK ")
        for _ in range(160):
            await conn.send(b"A" * 65536)
        await conn.read_rest(2)

    async with ScriptedServer(script, certs) as server:
        start = time.monotonic()
        with pytest.raises(errors.MailkitError):
            await open_and_select(server.port, certs)
        elapsed = time.monotonic() - start
    assert elapsed < OPEN_BOUND + SLACK, f"took {elapsed:.1f}s"




async def test_a_greeting_dripping_one_byte_at_a_time_is_bounded_and_leaks_nothing(certs: Certs) -> None:
    async def script(conn: ScriptConn) -> None:
        while True:
            await conn.send(b"*")
            await asyncio.sleep(0.2)  # well inside the per-read socket timeout

    quick = Timeouts(connect=0.5, command=0.5, data=1)
    bound = 0.5 + 6 * 0.5 + 3  # AsyncIMAP.connect's own limit for the opening
    async with ScriptedServer(script, certs) as server:
        start = time.monotonic()
        with pytest.raises(errors.TimeoutError):
            await open_and_select(server.port, certs, timeouts=quick)  # closes the account too
        raised = time.monotonic() - start
        await asyncio.sleep(1)
        workers = [t.name for t in threading.enumerate() if t.name.startswith("mailkit-imap")]
    assert raised < bound + SLACK, f"took {raised:.1f}s"
    assert workers == [], f"worker threads still running after close: {workers}"


class PeakRSS:
    """Samples this process's resident memory every 5 ms (ru_maxrss never goes down between tests)."""

    def __init__(self) -> None:
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def grown_mb(self) -> float:
        return (self.peak - self.base) / (1 << 20)




async def test_a_huge_literal_announcement_is_refused_with_bounded_memory(certs: Certs) -> None:
    sent = 0

    async def huge_list(conn: ScriptConn, tag: bytes, cmd: bytes, args: bytes) -> bool:
        nonlocal sent
        if cmd != b"LIST":
            return False
        await conn.send(b'* LIST () "/" {9999999999}\r\n')
        chunk = b"x" * 65536
        while sent < 64 << 20:  # stop at 64 MB either way: enough to show the growth
            await conn.send(chunk)
            sent += len(chunk)
        await conn.read_rest(5)
        return True

    server_fake = fake(extra=huge_list)
    async with (
        ScriptedServer(server_fake, certs) as server,
        account(server.port, certs) as acct,
        acct.imap() as imap,
    ):
        start = time.monotonic()
        with PeakRSS() as memory, pytest.raises(errors.MailkitError):
            await imap.folders()
        elapsed = time.monotonic() - start
    assert memory.grown_mb < 32, f"peak memory grew by {memory.grown_mb:.0f} MB (server sent {sent >> 20} MB)"
    assert elapsed < TIMEOUTS.data + SLACK, f"took {elapsed:.1f}s"  # type: ignore[operator]




async def test_deeply_nested_fetch_response_is_a_typed_error(certs: Certs) -> None:
    depth = 100_000

    async def nested(conn: ScriptConn, tag: bytes, cmd: bytes, args: bytes) -> bool:
        if cmd != b"UID" or not args.upper().startswith(b"FETCH"):
            return False
        part = b'"text" "plain" NIL NIL NIL "7bit" 1 1'
        await conn.send(
            b"* 1 FETCH (UID 1 FLAGS () RFC822.SIZE 10 BODYSTRUCTURE "
            + b"(" * depth + part + b")" * depth + b")\r\n"
        )
        await conn.sendline(tag + b" OK done")
        return True

    async with (
        ScriptedServer(fake(extra=nested, exists=1), certs) as server,
        account(server.port, certs) as acct,
        acct.imap() as imap,
    ):
        start = time.monotonic()
        with pytest.raises(errors.MailkitError):
            async for _message in imap.fetch([1], mailbox="INBOX", bodystructure=True):
                pass
        assert time.monotonic() - start < TIMEOUTS.data + SLACK  # type: ignore[operator]


# -- injection: CR/LF/NUL in folder names, search terms, flags ---------------------------------------

SEEDED = settings(settings.get_profile("faults"), max_examples=25)
INJECTED_TAG = b"ZZ9"


@st.composite
def smuggled(draw: st.DrawFn) -> str:
    safe = st.text(st.characters(blacklist_characters="\r\n\x00", blacklist_categories=["Cs"]), max_size=10)
    return draw(safe) + draw(st.sampled_from(["\r\n", "\n", "\r", "\x00"])) + "ZZ9 DELETE INBOX" + draw(safe)


async def _hostile_calls(port: int, certs: Certs, values: list[str]) -> None:
    async with account(port, certs) as acct, acct.imap() as imap:
        for value in values:
            for call in (
                lambda v: imap.select(v),
                lambda v: imap.folders(v),
                lambda v: imap.create_folder(v),
                lambda v: imap.search(Q.subject(v), mailbox="INBOX"),
                lambda v: imap.search(Q.from_(v) | Q.header("X-Tag", v), mailbox="INBOX"),
                lambda v: imap.search(Q.keyword(v), mailbox="INBOX"),
                lambda v: imap.search(Q.raw(v), mailbox="INBOX"),
                lambda v: imap.search(v, mailbox="INBOX"),
                lambda v: imap.add_flags([1], [v], mailbox="INBOX"),
            ):
                with contextlib.suppress(errors.ConfigError, ValueError, errors.CommandError):
                    await call(value)


@SEEDED
@given(values=st.lists(smuggled(), min_size=1, max_size=3))
def test_line_breaks_never_start_a_second_command(certs: Certs, values: list[str]) -> None:
    server_fake = fake()
    with ScriptedServer(server_fake, certs) as server:
        asyncio.run(_hostile_calls(server.port, certs, values))
    for command in server_fake.commands:
        assert not command.startswith(INJECTED_TAG), command
        # outside literals (kept whole by read_imap_command), no line may start with the tag
        for line in command.split(b"\r\n")[1:]:
            if line.startswith(INJECTED_TAG):
                assert b"{" in command, command  # only as literal content
