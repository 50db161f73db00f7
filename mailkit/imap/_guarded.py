"""imapclient's connection, with the two guards imaplib lacks.

Rule: the socket is handed to its owner the moment it exists (so a stuck greeting or handshake can
be cut from another thread), and no literal larger than ``max_literal`` is ever read into memory
(imaplib trusts whatever size a server announces, e.g. ``{9999999999}``).
"""

from __future__ import annotations

import imaplib
import socket
import ssl
from collections.abc import Callable
from typing import Any

from imapclient import IMAPClient
from imapclient.tls import wrap_socket

from ..errors import ProtocolError

__all__ = ["MAX_LITERAL", "GuardedIMAPClient"]

# Literals read through imaplib (command replies, small fetches); bulk bodies take mailkit's own
# streaming path and have their own limits.
MAX_LITERAL = 256 << 20

SocketHook = Callable[[socket.socket], None]


class _Guards(imaplib.IMAP4):
    """Mixed into imaplib's connection classes; set up by GuardedIMAPClient."""

    on_socket: SocketHook
    max_literal: int
    connect_timeout: float | None
    tls_context: ssl.SSLContext | None

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        raw = socket.create_connection((self.host, self.port), self.connect_timeout)
        self.on_socket(raw)  # from now on the owner can shut it down, even mid-handshake
        if self.tls_context is None:
            return raw
        tls: socket.socket = wrap_socket(raw, self.tls_context, self.host)
        self.on_socket(tls)
        return tls

    def read(self, size: int) -> bytes:
        if size > self.max_literal:
            raise ProtocolError(
                f"the IMAP server announced a {size}-byte literal; the limit is {self.max_literal}"
            )
        return super().read(size)


def _connection_class(
    on_socket: SocketHook, max_literal: int, timeout: float | None, context: ssl.SSLContext | None
) -> type[imaplib.IMAP4]:
    attrs = {
        "on_socket": staticmethod(on_socket),
        "max_literal": max_literal,
        "connect_timeout": timeout,
        "tls_context": context,
    }
    return type("GuardedIMAP4", (_Guards,), attrs)


class GuardedIMAPClient(IMAPClient):  # type: ignore[misc]  # imapclient ships no types
    """``IMAPClient`` whose socket is reported through ``on_socket`` and whose literals are capped."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        timeout: Any,
        on_socket: SocketHook,
        max_literal: int = MAX_LITERAL,
    ) -> None:
        self._guard = (on_socket, max_literal)
        super().__init__(
            host, port, ssl=ssl_context is not None, ssl_context=ssl_context, timeout=timeout
        )

    def _create_IMAP4(self) -> imaplib.IMAP4:  # imapclient calls it by this name
        on_socket, max_literal = self._guard
        connect_timeout = getattr(self._timeout, "connect", None)
        cls = _connection_class(
            on_socket, max_literal, connect_timeout, self.ssl_context if self.ssl else None
        )
        return cls(self.host, self.port)
