"""mailkit: send, download and sync email from Python, secure by default.

Discovery (dnspython) and SMTP (aiosmtplib) load on first use of their names: a program that only
downloads over POP3 or IMAP does not pay for them at import.
"""

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .account import Account, AsyncAccount
from .config import Endpoint, OAuth2, Password, Protocol, Security, Timeouts
from .errors import (
    AuthenticationError,
    CertificateError,
    CommandError,
    ConfigError,
    ConnectError,
    ConnectionLost,
    MailkitError,
    PermanentError,
    ProtocolError,
    Reply,
    SecurityError,
    StateError,
    TimeoutError,
    TLSError,
    TransientError,
)
from .tls import InsecureWarning, create_ssl_context

if TYPE_CHECKING:
    from .discovery import Attempt, Choice, Profile, discover, discover_async
    from .smtp import (
        DeliveryUnknownError,
        JournalStore,
        RecipientsDeferredError,
        RecipientsRefusedError,
        SendDeferredError,
        SendRefusedError,
        SendResult,
        SMTPUTF8RequiredError,
        SQLiteJournal,
    )

_DISCOVERY = ("Attempt", "Choice", "Profile", "discover", "discover_async")
_SMTP = (
    "DeliveryUnknownError",
    "JournalStore",
    "RecipientsDeferredError",
    "RecipientsRefusedError",
    "SendDeferredError",
    "SendRefusedError",
    "SendResult",
    "SMTPUTF8RequiredError",
    "SQLiteJournal",
)
_LAZY = {**dict.fromkeys(_DISCOVERY, "discovery"), **dict.fromkeys(_SMTP, "smtp")}


def __getattr__(name: str) -> Any:
    package = _LAZY.get(name)
    if package is None:
        raise AttributeError(f"module 'mailkit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{package}", __name__), name)
    globals()[name] = value  # later lookups are plain module attributes
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "Account",
    "AsyncAccount",
    "Attempt",
    "AuthenticationError",
    "CertificateError",
    "Choice",
    "CommandError",
    "ConfigError",
    "ConnectError",
    "ConnectionLost",
    "DeliveryUnknownError",
    "Endpoint",
    "InsecureWarning",
    "JournalStore",
    "MailkitError",
    "OAuth2",
    "Password",
    "PermanentError",
    "Profile",
    "Protocol",
    "ProtocolError",
    "RecipientsDeferredError",
    "RecipientsRefusedError",
    "Reply",
    "SMTPUTF8RequiredError",
    "SQLiteJournal",
    "Security",
    "SecurityError",
    "SendDeferredError",
    "SendRefusedError",
    "SendResult",
    "StateError",
    "TLSError",
    "TimeoutError",
    "Timeouts",
    "TransientError",
    "__version__",
    "create_ssl_context",
    "discover",
    "discover_async",
]
