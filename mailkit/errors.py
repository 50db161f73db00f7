"""Every error mailkit raises, and the one place where dependency errors are translated.

    MailkitError
    ├── ConfigError            bad settings or arguments, raised before any I/O (also ValueError)
    ├── ConnectError           could not reach the server (also ConnectionError)
    ├── TimeoutError           a network step ran out of time (also builtins.TimeoutError)
    ├── TLSError               the TLS handshake failed
    │   └── CertificateError   the certificate did not verify
    ├── SecurityError          the server would make us weaker than asked (no STARTTLS, plaintext)
    ├── AuthenticationError    the server refused the credentials
    ├── ProtocolError          the peer broke the protocol; the connection is unusable
    │   └── ConnectionLost     the connection closed under us
    ├── CommandError           the server said no; the connection is still usable
    │   ├── TransientError     4xx-style: try again later
    │   └── PermanentError     5xx-style: do not retry
    └── StateError             local durable state is unusable (corrupt journal or sync state)

Errors built from a server reply carry it as ``.reply``.
"""

from __future__ import annotations

import asyncio
import builtins
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = [
    "AuthenticationError",
    "CertificateError",
    "CommandError",
    "ConfigError",
    "ConnectError",
    "ConnectionLost",
    "MailkitError",
    "PermanentError",
    "ProtocolError",
    "Reply",
    "SecurityError",
    "StateError",
    "TLSError",
    "TimeoutError",
    "TransientError",
    "translating_os_errors",
]


@dataclass(frozen=True)
class Reply:
    """A server's answer: ``code`` is the numeric code (SMTP) or status word (IMAP/POP3)."""

    protocol: str
    code: int | str | None
    text: str
    enhanced: str | None = None

    def __str__(self) -> str:
        parts = [str(p) for p in (self.code, self.enhanced) if p is not None]
        return " ".join([*parts, self.text]).strip()


class MailkitError(Exception):
    """Root of every mailkit error."""

    def __init__(self, message: str, *, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reply = reply

    def __str__(self) -> str:
        if self.reply is not None and str(self.reply) not in self.message:
            return f"{self.message} (server said: {self.reply})"
        return self.message


class ConfigError(MailkitError, ValueError):
    """Settings or arguments are invalid; raised before any network I/O."""


class ConnectError(MailkitError, ConnectionError):
    """The server could not be reached."""


class TimeoutError(MailkitError, builtins.TimeoutError):
    """A network step took longer than its timeout."""


class TLSError(MailkitError):
    """The TLS handshake failed."""


class CertificateError(TLSError):
    """The server's certificate did not verify (unknown CA, expired, wrong host name)."""


class SecurityError(MailkitError):
    """Going on would be less secure than asked: STARTTLS missing or failed, plaintext refused."""


class AuthenticationError(MailkitError):
    """The server refused the credentials, or offers no mechanism we may use."""


class ProtocolError(MailkitError):
    """The peer broke the protocol or sent more than allowed; the connection is unusable."""


class ConnectionLost(ProtocolError):
    """The connection closed before the exchange finished."""


class CommandError(MailkitError):
    """The server refused a command; the connection remains usable."""


class TransientError(CommandError):
    """A temporary refusal (e.g. SMTP 4xx): the same command may succeed later."""


class PermanentError(CommandError):
    """A permanent refusal (e.g. SMTP 5xx): retrying will not help."""


class StateError(MailkitError):
    """Local durable state (journal, sync state) is missing, corrupt or for another account."""


def translate_os_error(exc: BaseException, where: str) -> MailkitError:
    """Map a socket, ssl or asyncio error to the matching MailkitError (most specific first)."""
    if isinstance(exc, MailkitError):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or exc
        return CertificateError(f"{where}: certificate verification failed: {detail}")
    if isinstance(exc, ssl.SSLError):
        return TLSError(f"{where}: TLS handshake failed: {getattr(exc, 'reason', None) or exc}")
    if isinstance(exc, builtins.TimeoutError):  # also socket.timeout and asyncio's
        return TimeoutError(f"{where}: timed out")
    if isinstance(exc, asyncio.IncompleteReadError):
        return ConnectionLost(f"{where}: connection closed by the server")
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, EOFError)):
        return ConnectionLost(f"{where}: connection lost ({exc.__class__.__name__})")
    if isinstance(exc, ConnectionRefusedError):
        return ConnectError(f"{where}: connection refused")
    if isinstance(exc, socket.gaierror):
        return ConnectError(f"{where}: cannot resolve host ({exc.strerror})")
    if isinstance(exc, OSError):
        return ConnectError(f"{where}: {exc.strerror or exc}")
    return ProtocolError(f"{where}: {exc.__class__.__name__}: {exc}")


@contextmanager
def translating_os_errors(where: str) -> Iterator[None]:
    """Re-raise socket/ssl/asyncio errors inside the block as MailkitErrors, keeping the cause."""
    try:
        yield
    except MailkitError:
        raise
    except (OSError, EOFError, builtins.TimeoutError, asyncio.IncompleteReadError) as exc:
        raise translate_os_error(exc, where) from exc
