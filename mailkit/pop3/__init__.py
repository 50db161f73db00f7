"""POP3: download-and-delete that never loses a message.

Rule: ``AsyncPOP3`` is the one implementation; ``POP3`` only runs it through the account's portal.
Each call opens its own session and ends it (POP3 locks the maildrop while a session is open).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..config import OAuth2, Password, Protocol, Security
from ._protocol import Limits
from ._state import UIDLState
from .client import POP3Client
from .download import DownloadReport, MessageError, Progress, Saved, Skipped, download
from .sinks import CallbackSink, MaildirSink, MessageInfo, Sink, as_sink

if TYPE_CHECKING:
    from .._portal import Portal
    from ..account import AsyncAccount
    from .sinks import Callback

__all__ = [
    "POP3",
    "AsyncPOP3",
    "CallbackSink",
    "DownloadReport",
    "Limits",
    "MaildirSink",
    "MessageError",
    "MessageInfo",
    "POP3Client",
    "Progress",
    "Saved",
    "Sink",
    "Skipped",
]

Into = Sink | str | os.PathLike[str] | Callable[[bytes, MessageInfo], object]


class AsyncPOP3:
    """``account.pop3``: download-and-delete, keep mode, and logged-in sessions."""

    def __init__(self, account: AsyncAccount, *, limits: Limits | None = None) -> None:
        self._account = account
        self.limits = limits or Limits()

    async def connect(self) -> POP3Client:
        """A connected, logged-in client; the caller ends it with ``quit()`` or ``close()``."""
        settings = self._account.settings
        endpoint = await self._account.endpoint(Protocol.POP3)
        # Plaintext endpoints need no context (building one loads the CA bundle).
        insecure = endpoint.security is Security.INSECURE
        client = POP3Client(
            endpoint,
            ssl_context=None if insecure else settings.ssl_context(),
            timeouts=settings.timeouts,
            limits=self.limits,
            allow_insecure=settings.allow_insecure,
        )
        await client.connect()
        try:
            if settings.credentials is not None:
                credentials = settings.credentials
                user = settings.login_user(endpoint)
                if user != credentials.user:
                    credentials = (
                        Password(user, credentials.password)
                        if isinstance(credentials, Password)
                        else OAuth2(user, credentials.token_provider)
                    )
                await client.login(credentials)
        except BaseException:
            await client.close()
            raise
        return client

    async def stat(self) -> tuple[int, int]:
        """(messages, total octets) in the maildrop."""
        client = await self.connect()
        try:
            result = await client.stat()
        except BaseException:
            await client.close()
            raise
        await client.quit()
        return result

    async def download_and_delete(
        self,
        into: Into,
        *,
        keep: bool = False,
        delete_after_days: float | None = None,
        state: str | os.PathLike[str] | None = None,
        max_messages: int | None = None,
        max_size: int | None = None,
        progress: Callable[[Progress], object] | None = None,
    ) -> DownloadReport:
        """Download every message into ``into`` and delete it from the server once saved.

        ``into``: a Maildir path, a ``Sink`` or a callable ``fn(raw, info)``. ``keep=True``
        leaves messages on the server (each is downloaded once; ``delete_after_days=N`` deletes
        those saved N days ago or more). ``state``: the SQLite file remembering saved UIDLs
        (default: ``.mailkit-pop3.db`` inside the Maildir; in memory for other sinks).
        """
        sink = as_sink(into)
        state_path = state if state is not None else sink.default_state()
        if keep and state_path is None:
            from ..errors import ConfigError

            raise ConfigError("keep=True needs state= (a file remembering what was downloaded)")
        endpoint = await self._account.endpoint(Protocol.POP3)
        # The maildrop is the user on the host, whichever port or security reaches it.
        key = f"{self._account.settings.login_user(endpoint)}@{endpoint.host}"
        uidl_state = UIDLState(":memory:" if state_path is None else state_path, key)
        try:
            client = await self.connect()
            try:
                return await download(
                    client,
                    sink,
                    uidl_state,
                    keep=keep,
                    delete_after_days=delete_after_days,
                    max_messages=max_messages,
                    max_size=max_size,
                    progress=progress,
                )
            finally:
                await client.close()  # no-op after QUIT; without QUIT nothing is deleted
        finally:
            uidl_state.close()


class POP3:
    """The blocking face of ``AsyncPOP3`` (same names and arguments)."""

    def __init__(self, async_pop3: AsyncPOP3, portal: Portal) -> None:
        self._async = async_pop3
        self._portal = portal

    def stat(self) -> tuple[int, int]:
        return self._portal.call(self._async.stat())

    def download_and_delete(
        self,
        into: Sink | str | os.PathLike[str] | Callback,
        *,
        keep: bool = False,
        delete_after_days: float | None = None,
        state: str | os.PathLike[str] | None = None,
        max_messages: int | None = None,
        max_size: int | None = None,
        progress: Callable[[Progress], object] | None = None,
    ) -> DownloadReport:
        return self._portal.call(
            self._async.download_and_delete(
                into,
                keep=keep,
                delete_after_days=delete_after_days,
                state=state,
                max_messages=max_messages,
                max_size=max_size,
                progress=progress,
            )
        )
