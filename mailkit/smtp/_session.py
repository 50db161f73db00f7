"""Opening an authenticated SMTP session with aiosmtplib: connect, TLS, EHLO, AUTH.

Rule: the security mode is always an explicit choice given to aiosmtplib (``use_tls`` and
``start_tls`` are True or False, never its opportunistic ``None``); capabilities are read from
the EHLO sent after TLS; every aiosmtplib exception is translated by ``errors.translate``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiosmtplib

from .. import _sasl
from .._log import log_received, log_sent
from .._net import abort_transport
from ..config import Credentials, Endpoint, OAuth2, Password, Security, Timeouts
from ..errors import AuthenticationError, ConfigError, MailkitError, SecurityError, translate_os_error
from ._wire import Capabilities, Wire
from .errors import smtp_reply, translate

__all__ = ["DEFAULT_MECHANISMS", "Session", "SessionConfig", "open_session"]

log = logging.getLogger("mailkit.smtp")

DEFAULT_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")


@dataclass(frozen=True)
class SessionConfig:
    """Everything needed to open a session; built from AccountSettings, no I/O."""

    endpoint: Endpoint
    credentials: Credentials | None
    login_user: str | None
    ssl_context: ssl.SSLContext | None
    timeouts: Timeouts
    allow_insecure: bool = False
    mechanisms: Sequence[str] = DEFAULT_MECHANISMS
    local_hostname: str | None = None

    def __post_init__(self) -> None:
        if self.endpoint.security is Security.INSECURE and not self.allow_insecure:
            raise SecurityError(f"{self.endpoint.url} is plaintext; allow_insecure=True is required")
        if self.endpoint.security is not Security.INSECURE and self.ssl_context is None:
            raise ConfigError(f"{self.endpoint.url} needs an SSL context")


@dataclass(eq=False)
class Session:
    """One authenticated connection, ready for transactions."""

    wire: Wire
    caps: Capabilities
    endpoint: Endpoint
    sent: int = 0
    opened: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)

    @property
    def usable(self) -> bool:
        return self.wire.usable

    async def quit(self, timeout: float | None = 5.0) -> None:
        """Say QUIT politely and close, each step within ``timeout``; never raises."""
        if self.wire.usable:
            with contextlib.suppress(MailkitError, OSError):
                await self.wire.command("QUIT", timeout)
        await self.wire.close_within(timeout)


async def _connect_socket(endpoint: Endpoint, timeout: float | None) -> socket.socket:
    loop = asyncio.get_running_loop()
    where = f"connecting to {endpoint.host}:{endpoint.port}"
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
            last: OSError | None = None
            for family, type_, proto, _, address in infos:
                sock = socket.socket(family, type_, proto)
                sock.setblocking(False)
                try:
                    await loop.sock_connect(sock, address)
                except OSError as exc:
                    sock.close()
                    last = exc
                    continue
                except BaseException:
                    sock.close()
                    raise
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return sock
            raise last or OSError(f"no address for {endpoint.host}")
    except (OSError, TimeoutError) as exc:
        raise translate_os_error(exc, where) from exc


async def open_session(config: SessionConfig) -> Session:
    """Connect, secure, EHLO and authenticate; return the session with our wire in charge."""
    endpoint = config.endpoint
    where = f"SMTP {endpoint.host}:{endpoint.port}"
    timeouts = config.timeouts
    sock = await _connect_socket(endpoint, timeouts.connect)
    local = config.local_hostname or _address_literal(sock)
    client = _OpeningClient(
        hostname=endpoint.host,
        sock=sock,
        use_tls=endpoint.security is Security.TLS,
        start_tls=endpoint.security is Security.STARTTLS,  # explicit: never "if offered"
        tls_context=config.ssl_context if endpoint.security is not Security.INSECURE else None,
        validate_certs=endpoint.security is not Security.INSECURE,
        timeout=timeouts.command,
        local_hostname=local,
    )
    step = "connecting"
    watcher = (
        asyncio.create_task(_quickack_after_handshake(client, sock))
        if endpoint.security is Security.TLS
        else None
    )
    try:
        step = "greeting, TLS and STARTTLS"
        try:
            response = await client.connect(timeout=timeouts.connect)
        finally:
            if watcher is not None:
                watcher.cancel()
        log_received(log, f"{response.code} {response.message}")
        if endpoint.security is not Security.INSECURE and client.get_transport_info("sslcontext") is None:
            raise SecurityError(f"{where}: the session is not encrypted")  # pragma: no cover - guard
        step = "EHLO"
        log_sent(log, f"EHLO {local}")
        ehlo = await client.ehlo()  # after STARTTLS: capabilities from the encrypted session only
        log_received(log, f"{ehlo.code} {ehlo.message}")
        caps = Capabilities.from_ehlo(client.esmtp_extensions)
        if config.credentials is not None:
            step = "AUTH"
            await _authenticate(client, config, caps)
        transport = client.transport
        if transport is None:
            raise MailkitError(f"{where}: no transport after connecting")
    except asyncio.CancelledError:
        _abort(client, sock)
        raise
    except MailkitError:
        _abort(client, sock)
        raise  # already ours: chaining it to itself would make its cause a cycle
    except Exception as exc:
        _abort(client, sock)
        raise translate(exc, f"{where}: {step}") from exc
    wire = Wire(transport, where)  # type: ignore[arg-type]
    return Session(wire, caps, endpoint)


class _OpeningClient(aiosmtplib.SMTP):
    """aiosmtplib for the opening only (our Wire takes the connection over); its closes abort.

    A polite close over TLS sends close_notify and waits up to asyncio's 30 s for the peer's.
    aiosmtplib closes by itself when a command times out or the server disconnects, and then
    forgets the transport: a peer that stopped reading kept that connection registered in the
    event loop, so the next connection given the same descriptor number never received data, or
    was refused ("File descriptor N is used by transport"). A failed opening is dropped at once.
    """

    def close(self) -> None:
        if self.transport is not None:
            abort_transport(self.transport)
        super().close()


def _abort(client: aiosmtplib.SMTP, sock: socket.socket) -> None:
    client.close()
    with contextlib.suppress(OSError):
        sock.close()  # also when no transport was made yet


def _set_quickack(sock: socket.socket) -> None:
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if quickack is not None:
        # Postfix's implicit-TLS greeting waits ~40 ms for our delayed ACK of its TLS 1.3 session
        # ticket (Nagle on its side); quick ACKs must be switched on after the handshake.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)


async def _quickack_after_handshake(client: aiosmtplib.SMTP, sock: socket.socket) -> None:
    # aiosmtplib offers no hook between the TLS handshake and reading the greeting: its transport
    # appears once the handshake is done; turn quick ACKs on in the same loop iteration.
    # Spin for the first few milliseconds (a loopback or LAN handshake), then poll each
    # millisecond, which is still well within a remote server's round trip.
    spin_until = time.monotonic() + 0.02
    while client.transport is None:
        await asyncio.sleep(0 if time.monotonic() < spin_until else 0.001)
    _set_quickack(sock)


def _address_literal(sock: socket.socket) -> str:
    try:
        host = sock.getsockname()[0]
    except OSError:
        return "localhost"
    return f"[IPv6:{host}]" if ":" in host else f"[{host}]"


async def _authenticate(client: aiosmtplib.SMTP, config: SessionConfig, caps: Capabilities) -> None:
    offered = [m.upper() for m in client.server_auth_methods]
    creds = config.credentials
    user = config.login_user or (creds.user if creds else "")
    if not offered and "auth" not in caps.extensions:
        raise AuthenticationError(f"SMTP {config.endpoint.host}: the server offers no AUTH")
    if isinstance(creds, OAuth2):
        mechanism = _sasl.choose_oauth(offered)
        if mechanism is None:
            raise AuthenticationError(
                f"SMTP {config.endpoint.host}: OAuth2 credentials, but the server offers only "
                f"{', '.join(offered) or 'no mechanism'}"
            )
        token = await creds.token()  # a fresh token for every new connection
        log_sent(log, f"AUTH {mechanism} ***")
        if mechanism == "XOAUTH2":
            await client.auth_xoauth2(user, token)
            return
        initial = base64.b64encode(_sasl.oauthbearer(user, token, config.endpoint.host, config.endpoint.port))
        reply = await client.execute_command(b"AUTH", b"OAUTHBEARER", initial)
        if reply.code == 334:  # the error is in a challenge; ^A ends the exchange
            reply = await client.execute_command(base64.b64encode(_sasl.oauth_error_answer(mechanism)))
        if reply.code != 235:
            reply_ = smtp_reply(reply.code, reply.message)
            raise AuthenticationError(f"SMTP {config.endpoint.host}: authentication failed", reply=reply_)
        return
    assert isinstance(creds, Password)
    mechanism = next((m for m in config.mechanisms if m.upper() in offered), None)
    if mechanism is None:
        raise AuthenticationError(
            f"SMTP {config.endpoint.host}: no usable AUTH mechanism (server offers "
            f"{', '.join(offered) or 'none'}, allowed {', '.join(config.mechanisms)})"
        )
    log_sent(log, f"AUTH {mechanism} ***")
    method = {
        "PLAIN": client.auth_plain,
        "LOGIN": client.auth_login,
        "CRAM-MD5": client.auth_crammd5,
    }[mechanism.upper()]
    await method(user, creds.password)
