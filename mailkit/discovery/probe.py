"""The I/O side of a probe: connect to one candidate and run its sans-I/O dialogue over the stream.

Rule: every step is bounded (connect, each line, the TLS upgrade) and every failure becomes an
outcome (``refused``, ``timeout``, ``tls-error``, ...), never an exception. The certificate is
always verified against the candidate's host name, even when connecting to an overridden address.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import ssl
import time
from dataclasses import dataclass

from .._log import REDACTED, redact_command
from .._net import Stream, abort_transport, open_stream, start_tls
from ..config import Endpoint, Security
from ..errors import (
    CertificateError,
    ConnectError,
    ConnectionLost,
    MailkitError,
    SecurityError,
    TimeoutError,
    TLSError,
)
from .candidates import Candidate
from .dialogue import Finding, Login, Read, Send, UpgradeTLS, dialogue_for

__all__ = ["ProbeLimits", "ProbeResult", "probe"]

log = logging.getLogger("mailkit.discovery")

MAX_LINE = 16 * 1024


@dataclass(frozen=True)
class ProbeLimits:
    """Seconds for each step of one probe."""

    connect: float = 5.0
    step: float = 8.0


@dataclass(frozen=True)
class ProbeResult:
    candidate: Candidate
    finding: Finding
    seconds: float

    @property
    def outcome(self) -> str:
        return self.finding.outcome

    @property
    def usable(self) -> bool:
        """The endpoint works: capabilities were read as asked (a refused login still proves it)."""
        return self.finding.outcome in ("ok", "auth-failed")


def _outcome_of(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, CertificateError):
        return "tls-error", str(exc)
    if isinstance(exc, (TLSError, SecurityError)):
        return "tls-error", str(exc)
    if isinstance(exc, (TimeoutError, builtins.TimeoutError)):
        return "timeout", str(exc) or "timed out"
    if isinstance(exc, ConnectError) and "refused" in str(exc):
        return "refused", "connection refused"
    if isinstance(exc, ConnectionLost):
        return "refused", str(exc)
    if isinstance(exc, (ValueError, asyncio.LimitOverrunError)):
        return "refused", "the server sent a line longer than allowed"
    return "refused", str(exc) or exc.__class__.__name__


async def probe(
    candidate: Candidate,
    address: str,
    ssl_context: ssl.SSLContext,
    login: Login | None,
    limits: ProbeLimits,
) -> ProbeResult:
    """Connect to ``address`` as ``candidate.host`` and run the protocol dialogue."""
    started = time.monotonic()
    where = f"{candidate.protocol.value} {candidate.host}:{candidate.port}"
    target = Endpoint(candidate.protocol, address, candidate.port, candidate.security)
    stream: Stream | None = None
    try:
        stream = await open_stream(
            target,
            ssl_context if candidate.security is Security.TLS else None,
            connect_timeout=limits.connect,
            limit=MAX_LINE,
            server_hostname=candidate.host,
        )
        finding = await _drive(stream, candidate, ssl_context, login, limits, where)
    except (MailkitError, OSError, ssl.SSLError, builtins.TimeoutError, ValueError) as exc:
        outcome, detail = _outcome_of(exc)
        finding = Finding(outcome, detail)
    except BaseException:
        # Cancelled (a better candidate won, or time ran out): drop the connection at once.
        if stream is not None:
            abort_transport(stream.writer.transport)
        raise
    elapsed = time.monotonic() - started
    if stream is not None:
        await stream.close(timeout=1.0)
    log.debug("%s: %s (%s) in %.3fs", where, finding.outcome, finding.detail, elapsed)
    return ProbeResult(candidate, finding, elapsed)


async def _drive(
    stream: Stream,
    candidate: Candidate,
    ssl_context: ssl.SSLContext,
    login: Login | None,
    limits: ProbeLimits,
    where: str,
) -> Finding:
    sockname = stream.writer.get_extra_info("sockname")
    local = sockname[0] if isinstance(sockname, tuple) and sockname else "127.0.0.1"
    ehlo_name = f"[IPv6:{local}]" if ":" in local else f"[{local}]"
    dialogue = dialogue_for(candidate.protocol, candidate.security, login, ehlo_name=ehlo_name)
    answer: bytes | None = None
    try:
        while True:
            op = dialogue.send(answer)
            answer = None
            if isinstance(op, Read):
                answer = await asyncio.wait_for(stream.reader.readline(), limits.step)
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("%s S: %s", where, answer.decode("utf-8", "replace").rstrip("\r\n"))
            elif isinstance(op, Send):
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("%s C: %s", where, REDACTED if op.secret else redact_command(op.line))
                stream.writer.write(op.line + b"\r\n")
                await asyncio.wait_for(stream.writer.drain(), limits.step)
            elif isinstance(op, UpgradeTLS):
                try:
                    await start_tls(stream, ssl_context, timeout=limits.step, server_hostname=candidate.host)
                except (TLSError, SecurityError, builtins.TimeoutError):
                    raise
                except (MailkitError, OSError) as exc:
                    # The server agreed to STARTTLS, then reset or closed instead of negotiating:
                    # a failed upgrade, whatever the socket said.
                    raise TLSError(f"{where}: STARTTLS upgrade failed: {exc}") from exc
    except StopIteration as stop:
        result: Finding = stop.value
        return result
    except builtins.TimeoutError:
        raise TimeoutError(f"{where}: no answer within {limits.step:g}s") from None
    finally:
        dialogue.close()
