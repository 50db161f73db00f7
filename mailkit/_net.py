"""Opening asyncio streams the way every mailkit adapter needs: bounded in time, TLS verified.

Rule: every step here takes a timeout, and every socket/ssl error leaves as a MailkitError.
STARTTLS refuses to start while bytes the server sent in plaintext are still unread: such bytes
could be a response injection (they must never be read as if they came over TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from dataclasses import dataclass

from .config import Endpoint, Security
from .errors import ConfigError, SecurityError, translating_os_errors

__all__ = ["Stream", "abort_transport", "open_stream", "pending_plaintext", "start_tls"]


def abort_transport(transport: asyncio.BaseTransport) -> None:
    """Drop a connection at once; safe on a transport whose connection is already gone."""
    if not isinstance(transport, asyncio.WriteTransport):
        transport.close()
        return
    # CPython before 3.11.5 raises AttributeError from an SSL transport's abort() once the
    # connection was lost (its protocol is already detached): then there is nothing left to drop.
    with contextlib.suppress(AttributeError):
        transport.abort()


@dataclass
class Stream:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    endpoint: Endpoint
    encrypted: bool

    async def close(self, timeout: float | None = 5.0) -> None:
        """Close the socket; never raises (the peer may already be gone)."""
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), timeout)
        except (TimeoutError, OSError, ssl.SSLError):
            abort_transport(self.writer.transport)


def _quickack(writer: asyncio.StreamWriter) -> None:
    # Some servers (Postfix on implicit TLS) stall ~40 ms on the greeting waiting for our delayed
    # ACK behind a TLS 1.3 session ticket; acknowledging at once removes the stall.
    sock = writer.get_extra_info("socket")
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if sock is not None and quickack is not None:
        # not supported on this socket: the stall is a cost, not an error
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)


async def open_stream(
    endpoint: Endpoint,
    ssl_context: ssl.SSLContext | None,
    *,
    connect_timeout: float | None,
    limit: int = 1 << 20,
    server_hostname: str | None = None,
) -> Stream:
    """Connect; for ``Security.TLS`` the TLS handshake is part of the connect step."""
    implicit = endpoint.security is Security.TLS
    if implicit and ssl_context is None:
        raise ConfigError(f"{endpoint.url} needs an SSL context")
    where = f"connecting to {endpoint.host}:{endpoint.port}"
    with translating_os_errors(where):
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                endpoint.host,
                endpoint.port,
                ssl=ssl_context if implicit else None,
                server_hostname=(server_hostname or endpoint.host) if implicit else None,
                limit=limit,
            ),
            connect_timeout,
        )
    _quickack(writer)
    return Stream(reader, writer, endpoint, encrypted=implicit)


def pending_plaintext(reader: asyncio.StreamReader) -> int:
    """How many received bytes are buffered but unread."""
    # StreamReader exposes no public way to peek at its buffer; _buffer has been stable since 3.4.
    buffer = getattr(reader, "_buffer", b"")
    return len(buffer)


async def start_tls(
    stream: Stream,
    ssl_context: ssl.SSLContext,
    *,
    timeout: float | None,
    server_hostname: str | None = None,
) -> None:
    """Upgrade ``stream`` in place after the server agreed to STARTTLS/STLS."""
    if stream.encrypted:
        raise SecurityError("STARTTLS on a connection that is already encrypted")
    if pending_plaintext(stream.reader):
        raise SecurityError(
            "the server sent data after agreeing to STARTTLS and before the TLS handshake "
            "(possible response injection); connection dropped"
        )
    hostname = server_hostname or stream.endpoint.host
    with translating_os_errors(f"TLS handshake with {stream.endpoint.host}:{stream.endpoint.port}"):
        await asyncio.wait_for(
            stream.writer.start_tls(ssl_context, server_hostname=hostname), timeout
        )
    stream.encrypted = True
