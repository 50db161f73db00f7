"""mailkit: send, download and sync email from Python, secure by default."""

from ._version import __version__
from .account import Account, AsyncAccount
from .config import Endpoint, OAuth2, Password, Protocol, Security, Timeouts
from .discovery import Attempt, Choice, Profile, discover, discover_async
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
    "Endpoint",
    "InsecureWarning",
    "MailkitError",
    "OAuth2",
    "Password",
    "PermanentError",
    "Profile",
    "Protocol",
    "ProtocolError",
    "Reply",
    "Security",
    "SecurityError",
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
