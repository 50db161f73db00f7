"""POP3: download-and-delete that never loses a message.

Rule: ``AsyncPOP3`` and ``POP3Client`` are the one implementation; ``POP3`` and ``POP3Session``
only run them through the account's portal. Each call opens its own session and ends it (POP3
locks the maildrop while a session is open); ``session()`` keeps one open for several commands.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from ..config import Endpoint, OAuth2, Password, Protocol, Security
from ..errors import MailkitError
from ._protocol import Capabilities, Command, Limits, Response
from ._state import UIDLState
from .client import POP3Client
from .download import DownloadReport, MessageError, Progress, Saved, Skipped, download
from .sinks import CallbackSink, MaildirSink, MessageInfo, Sink, SinkStream, as_sink

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
    "POP3Session",
    "Progress",
    "Saved",
    "Sink",
    "SinkStream",
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
        return await self._account.connect_with(Protocol.POP3, self._connect_to)

    async def _connect_to(self, endpoint: Endpoint) -> POP3Client:
        settings = self._account.settings
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

    def session(self) -> _AsyncSession:
        """``async with account.pop3.session() as pop:`` a logged-in ``POP3Client`` for several
        commands; leaving the block sends QUIT (committing DELEs), or on an error just drops the
        connection (the server then deletes nothing)."""
        return _AsyncSession(self)

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
        client = await self.connect()
        try:
            # The maildrop is the user on the host, whichever port or security reaches it.
            endpoint = client.endpoint
            key = f"{self._account.settings.login_user(endpoint)}@{endpoint.host}"
            uidl_state = UIDLState(":memory:" if state_path is None else state_path, key)
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
                uidl_state.close()
        finally:
            await client.close()  # no-op after QUIT; without QUIT nothing is deleted


class _AsyncSession:
    def __init__(self, pop3: AsyncPOP3) -> None:
        self._pop3 = pop3
        self._client: POP3Client | None = None

    async def __aenter__(self) -> POP3Client:
        if self._client is not None:
            raise MailkitError("a POP3 session is entered once; make a new one")
        self._client = await self._pop3.connect()
        return self._client

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._client is not None
        await self._client.__aexit__(exc_type, exc, tb)


class POP3:
    """The blocking face of ``AsyncPOP3`` (same names and arguments)."""

    def __init__(self, async_pop3: AsyncPOP3, portal: Portal) -> None:
        self._async = async_pop3
        self._portal = portal

    @property
    def limits(self) -> Limits:
        """Caps on what the server may send (``AsyncPOP3.limits``)."""
        return self._async.limits

    def connect(self) -> POP3Session:
        """A connected, logged-in session; end it with ``quit()`` (or ``close()``)."""
        return POP3Session(self._portal.call(self._async.connect()), self._portal)

    def session(self) -> POP3Session:
        """``with account.pop3.session() as pop:`` a logged-in session for several commands;
        leaving the block sends QUIT, or on an error just drops the connection."""
        return POP3Session(None, self._portal, opener=self._async)

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


class POP3Session:
    """The blocking face of ``POP3Client``: the same methods, run through the account's portal.

    From ``account.pop3.session()`` (connects when the ``with`` block is entered) or
    ``account.pop3.connect()`` (already connected). Message numbers are valid for this session.
    """

    def __init__(self, client: POP3Client | None, portal: Portal, *, opener: AsyncPOP3 | None = None) -> None:
        self._client = client
        self._portal = portal
        self._opener = opener

    def __repr__(self) -> str:
        return f"<POP3Session {self._client!r}>"

    @property
    def client(self) -> POP3Client:
        """The async client underneath (its coroutines run on the account's portal loop)."""
        if self._client is None:
            raise MailkitError("this POP3 session is not connected: use it in a with block")
        return self._client

    def __enter__(self) -> POP3Session:
        if self._client is None:
            if self._opener is None:
                raise MailkitError("a POP3 session is entered once; make a new one")
            opener, self._opener = self._opener, None
            self._client = self._portal.call(opener.connect())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._portal.call(self.client.__aexit__(exc_type, exc, tb))

    @property
    def greeting(self) -> str:
        return self.client.greeting

    @property
    def capabilities(self) -> Capabilities:
        return self.client.capabilities

    @property
    def pipelining(self) -> bool:
        return self.client.pipelining

    def stat(self) -> tuple[int, int]:
        """(number of messages, total size in octets)."""
        return self._portal.call(self.client.stat())

    def list(self) -> dict[int, int]:
        """{message number: size}."""
        return self._portal.call(self.client.list())

    def uidl(self) -> dict[int, str]:
        """{message number: unique id}."""
        return self._portal.call(self.client.uidl())

    def retr(self, number: int) -> bytes:
        """The whole message, byte for byte as stored (dot-unstuffed)."""
        return self._portal.call(self.client.retr(number))

    def top(self, number: int, lines: int = 0) -> bytes:
        """The header and the first ``lines`` lines of the body."""
        return self._portal.call(self.client.top(number, lines))

    def retr_many(self, numbers: Iterable[int], *, window: int = 64) -> Iterator[tuple[int, Response]]:
        """RETR each number, pipelined; yields (number, response) as they arrive."""
        return self._portal.iterate(self.client.retr_many(numbers, window=window))

    def dele(self, number: int) -> None:
        """Mark a message for deletion; the server deletes it when QUIT is answered."""
        self._portal.call(self.client.dele(number))

    def rset(self) -> None:
        """Unmark every message marked for deletion in this session."""
        self._portal.call(self.client.rset())

    def noop(self) -> None:
        self._portal.call(self.client.noop())

    def execute(self, command: Command, *, check: bool = True) -> Response:
        """Send one command and return its response; ``check`` turns -ERR into CommandError."""
        return self._portal.call(self.client.execute(command, check=check))

    def execute_many(self, commands: Sequence[Command], *, check: bool = True) -> builtins.list[Response]:
        """Run commands in order: in one write when pipelining, else one at a time."""
        return self._portal.call(self.client.execute_many(commands, check=check))

    def quit(self) -> None:
        """End the session; the server commits the deletions before it answers."""
        self._portal.call(self.client.quit())

    def close(self) -> None:
        """Drop the connection without QUIT (the server deletes nothing). Never raises."""
        self._portal.call(self.client.close())
