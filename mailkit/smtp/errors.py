"""SMTP errors, and the one place where aiosmtplib's exceptions become mailkit errors.

    CommandError
    ├── TransientError
    │   └── SendDeferredError          4xx to MAIL, DATA or the end of DATA; retry later
    │       └── RecipientsDeferredError  every recipient refused, at least one of them with 4xx
    └── PermanentError
        └── SendRefusedError           5xx to MAIL, DATA or the end of DATA; do not retry
            ├── RecipientsRefusedError   every recipient refused with 5xx
            └── SMTPUTF8RequiredError    the message needs SMTPUTF8 and the server lacks it
    ProtocolError
    └── DeliveryUnknownError           lost after the end of DATA, before the reply: the message
                                       may have been accepted; do not resend blindly

Rule: a caller decides by class: ``TransientError`` (and ``ConnectionLost`` before the end of
DATA) may be retried, ``PermanentError`` must not, ``DeliveryUnknownError`` needs a human.
"""

from __future__ import annotations

import builtins
import re
import ssl
from collections.abc import Mapping

import aiosmtplib

from ..errors import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    ConnectionLost,
    MailkitError,
    PermanentError,
    ProtocolError,
    Reply,
    SecurityError,
    TimeoutError,
    TransientError,
    translate_os_error,
)

__all__ = [
    "DeliveryUnknownError",
    "RecipientsDeferredError",
    "RecipientsRefusedError",
    "SMTPUTF8RequiredError",
    "SendDeferredError",
    "SendRefusedError",
    "is_retryable",
    "reply_error",
    "smtp_reply",
    "translate",
]


class SendDeferredError(TransientError):
    """The server refused the message for now (4xx); the same message may go through later."""


class SendRefusedError(PermanentError):
    """The server refused the sender or the message (5xx)."""


class RecipientsRefusedError(SendRefusedError):
    """Every recipient was refused; ``.refused`` maps each to the server's reply."""

    def __init__(self, message: str, *, reply: Reply | None = None,
                 refused: Mapping[str, Reply] | None = None) -> None:
        super().__init__(message, reply=reply)
        self.refused: Mapping[str, Reply] = dict(refused or {})


class RecipientsDeferredError(SendDeferredError):
    """Every recipient was refused and some only for now (4xx); ``.refused`` has the replies."""

    def __init__(self, message: str, *, reply: Reply | None = None,
                 refused: Mapping[str, Reply] | None = None) -> None:
        super().__init__(message, reply=reply)
        self.refused: Mapping[str, Reply] = dict(refused or {})


class SMTPUTF8RequiredError(SendRefusedError):
    """The message has internationalized addresses or headers and the server lacks SMTPUTF8."""


class DeliveryUnknownError(ProtocolError):
    """The connection was lost (or timed out) after the end of DATA was sent: maybe delivered."""


_ENHANCED = re.compile(r"([245])\.\d{1,3}\.\d{1,3}(?: |$)")


def smtp_reply(code: int, text: str) -> Reply:
    """A Reply with its enhanced status code (RFC 3463) split off the text when present."""
    match = _ENHANCED.match(text)
    if match is not None and ord(match.group(1)) - 48 == code // 100:
        return Reply("smtp", code, text[match.end() :], text[: match.end()].rstrip())
    return Reply("smtp", code, text, None)


def reply_error(reply: Reply, what: str) -> MailkitError:
    """The error for a refusal: 4xx -> SendDeferredError, else SendRefusedError."""
    code = reply.code if isinstance(reply.code, int) else 0
    cls = SendDeferredError if 400 <= code < 500 else SendRefusedError
    return cls(f"{what} refused", reply=reply)


def is_retryable(exc: BaseException) -> bool:
    """True for failures that happened before the server could have accepted the message."""
    if isinstance(exc, DeliveryUnknownError):
        return False
    return isinstance(exc, TransientError | ConnectError | ConnectionLost | TimeoutError)


def translate(exc: BaseException, where: str) -> MailkitError:
    """Map an aiosmtplib (or socket/ssl) exception to a MailkitError, most specific first."""
    if isinstance(exc, MailkitError):
        return exc
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return AuthenticationError(f"{where}: authentication failed", reply=smtp_reply(exc.code, exc.message))
    if isinstance(exc, aiosmtplib.SMTPConnectTimeoutError | aiosmtplib.SMTPTimeoutError):
        return TimeoutError(f"{where}: timed out")
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        reply = smtp_reply(exc.code, exc.message)
        return ConnectError(f"{where}: the server refused the session", reply=reply)
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return ConnectionLost(f"{where}: connection lost")
    if isinstance(exc, aiosmtplib.SMTPConnectError):
        cause = exc.__cause__
        if isinstance(cause, OSError):
            return translate_os_error(cause, where)
        return ConnectError(f"{where}: {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPHeloError):
        return ProtocolError(f"{where}: EHLO refused", reply=smtp_reply(exc.code, exc.message))
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        reply = smtp_reply(exc.code, exc.message)
        if "STARTTLS" in where.upper():
            return SecurityError(f"{where}: the server refused STARTTLS", reply=reply)
        error = reply_error(reply, where)
        return error
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return SecurityError(f"{where}: {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPException):
        if "STARTTLS" in exc.message.upper() or "TLS" in where.upper():
            return SecurityError(f"{where}: {exc.message}")
        return ProtocolError(f"{where}: {exc.message}")
    if isinstance(exc, ssl.SSLError | OSError | EOFError | builtins.TimeoutError):
        return translate_os_error(exc, where)
    if isinstance(exc, ValueError):
        return ConfigError(f"{where}: {exc}")
    return ProtocolError(f"{where}: {exc.__class__.__name__}: {exc}")
