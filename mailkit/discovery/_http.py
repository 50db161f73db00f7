"""A minimal HTTP/1.1 GET for fetching autoconfig XML: bounded in size and time, no redirects.

Rule: this is only for small documents; any surprise (status, size, framing) is a ``None`` result
with a reason, never an exception. HTTPS certificates are verified like every other connection.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from .._net import open_stream
from ..config import Endpoint, Protocol, Security
from ..errors import MailkitError

__all__ = ["HttpResult", "http_get"]

MAX_BODY = 256 * 1024


@dataclass(frozen=True)
class HttpResult:
    url: str
    status: int | None
    body: bytes | None
    error: str = ""


async def http_get(url: str, address: str, ssl_context: ssl.SSLContext, *, timeout: float) -> HttpResult:
    """GET ``url`` from ``address`` (already resolved); the Host header and SNI use the URL's host."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    # Endpoint only carries the address and port here; the protocol is irrelevant to open_stream.
    target = Endpoint(Protocol.SMTP, address, port, Security.TLS if secure else Security.INSECURE)
    try:
        stream = await open_stream(
            target, ssl_context if secure else None, connect_timeout=timeout, server_hostname=host
        )
    except MailkitError as exc:
        return HttpResult(url, None, None, str(exc))
    try:
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: mailkit\r\n"
            "Accept: application/xml, text/xml\r\nConnection: close\r\n\r\n"
        )
        stream.writer.write(request.encode("ascii"))
        raw = await asyncio.wait_for(_read_all(stream.reader), timeout)
    except (TimeoutError, OSError, ssl.SSLError, ValueError, MailkitError) as exc:
        return HttpResult(url, None, None, f"{exc.__class__.__name__}: {exc}")
    finally:
        await stream.close(timeout=1.0)
    return parse_response(url, raw)


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    data = bytearray()
    while chunk := await reader.read(65536):
        data += chunk
        if len(data) > MAX_BODY + 16384:
            raise ValueError("response too large")
    return bytes(data)


def parse_response(url: str, raw: bytes) -> HttpResult:
    """Parse a complete HTTP/1.x response (the connection was closed by the server)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return HttpResult(url, None, None, "malformed HTTP response")
    lines = head.decode("latin-1").split("\r\n")
    status_words = lines[0].split(" ", 2)
    if len(status_words) < 2 or not status_words[0].startswith("HTTP/1.") or not status_words[1].isdigit():
        return HttpResult(url, None, None, "malformed HTTP status line")
    status = int(status_words[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    if status != 200:
        return HttpResult(url, status, None, f"HTTP {status}")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        decoded = _dechunk(body)
        if decoded is None:
            return HttpResult(url, status, None, "malformed chunked body")
        body = decoded
    elif "content-length" in headers:
        length = headers["content-length"]
        if not length.isdigit() or int(length) > len(body):
            return HttpResult(url, status, None, "truncated body")
        body = body[: int(length)]
    if len(body) > MAX_BODY:
        return HttpResult(url, status, None, "body too large")
    return HttpResult(url, status, body)


def _dechunk(body: bytes) -> bytes | None:
    out = bytearray()
    rest = body
    while True:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            return None
        try:
            size = int(size_line.split(b";")[0].strip(), 16)
        except ValueError:
            return None
        if size == 0:
            return bytes(out)
        if len(rest) < size + 2:
            return None
        out += rest[:size]
        rest = rest[size + 2 :]
