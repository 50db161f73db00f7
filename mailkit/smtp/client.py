"""The SMTP side of an account: ``send`` one message, ``send_many`` for campaigns.

Rule: one ``AsyncSMTP`` per account, holding a pool of authenticated sessions that ``send``
reuses; the account's ``aclose`` closes it. A refusal of every recipient raises; a partial one is
reported in the SendResult. ``send`` does not retry by itself, except once on a fresh connection
when a pooled one turns out to be dead before anything was committed.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import AsyncGenerator, AsyncIterable, Collection, Iterable, Mapping, Sequence
from email.message import EmailMessage
from typing import TYPE_CHECKING

from ..config import Endpoint, Protocol, Security
from ..errors import ConfigError, ConnectionLost, MailkitError
from ..message import AddressLike, AddressPolicy, Attachment, AttachmentLike, Outgoing, compose, prepare
from ._session import DEFAULT_MECHANISMS, Session, SessionConfig, open_session
from .bulk import BulkItem, run_bulk
from .journal import JournalStore, open_journal
from .pool import Pool
from .result import SendResult

if TYPE_CHECKING:
    from ..account import AsyncAccount

__all__ = ["AsyncSMTP", "smtp_for"]

_CLIENTS: weakref.WeakKeyDictionary[AsyncAccount, AsyncSMTP] = weakref.WeakKeyDictionary()


def smtp_for(account: AsyncAccount) -> AsyncSMTP:
    """The account's SMTP client, made on first use (its pool closes with the account)."""
    client = _CLIENTS.get(account)
    if client is None:
        client = _CLIENTS[account] = AsyncSMTP(account)
        account.on_close(client.aclose)
    return client


class AsyncSMTP:
    def __init__(self, account: AsyncAccount, *, mechanisms: Sequence[str] = DEFAULT_MECHANISMS) -> None:
        self._account = account
        self._mechanisms = tuple(mechanisms)
        self._pool: Pool | None = None
        self._config: SessionConfig | None = None

    @property
    def policy(self) -> AddressPolicy:
        return AddressPolicy(test_environment=self._account.settings.test_environment)

    async def session_config(self, endpoint: Endpoint | None = None) -> SessionConfig:
        if endpoint is None:
            endpoint = await self._account.endpoint(Protocol.SMTP)
        if self._config is None or self._config.endpoint != endpoint:
            settings = self._account.settings
            self._config = SessionConfig(
                endpoint=endpoint,
                credentials=settings.credentials,
                login_user=settings.login_user(endpoint),
                ssl_context=None if endpoint.security is Security.INSECURE else settings.ssl_context(),
                timeouts=settings.timeouts,
                allow_insecure=settings.allow_insecure,
                mechanisms=self._mechanisms,
            )
        return self._config

    async def open_session(self) -> Session:
        """A new authenticated session (a discovered server that went away is looked for again)."""
        return await self._account.connect_with(Protocol.SMTP, self._open_at)

    async def _open_at(self, endpoint: Endpoint) -> Session:
        return await open_session(await self.session_config(endpoint))

    def _pool_for_send(self) -> Pool:
        if self._pool is None:
            self._pool = Pool(self.open_session, per_connection=100, max_idle=2,
                              command_timeout=self._account.settings.timeouts.command)  # fmt: skip
        return self._pool

    # --- composing --------------------------------------------------------------------
    def outgoing(
        self,
        message: EmailMessage | bytes | None = None,
        *,
        to: AddressLike | Sequence[AddressLike] | None = None,
        cc: AddressLike | Sequence[AddressLike] | None = None,
        bcc: AddressLike | Sequence[AddressLike] | None = None,
        reply_to: AddressLike | Sequence[AddressLike] | None = None,
        subject: str = "",
        text: str | None = None,
        html: str | None = None,
        attachments: Iterable[AttachmentLike | Attachment] = (),
        inline: Mapping[str, AttachmentLike | Attachment] | Iterable[Attachment] = (),
        headers: Mapping[str, str] | None = None,
        sender: AddressLike | None = None,
        recipients: Iterable[str] | None = None,
        key: str | None = None,
        check_deliverability: bool = False,
    ) -> Outgoing:
        """Compose (unless ``message`` is given) and prepare a message for this account."""
        envelope_from = self._account.address
        policy = AddressPolicy(self._account.settings.test_environment, check_deliverability)
        if message is None:
            if to is None and cc is None and bcc is None and recipients is None:
                raise ConfigError("a message needs at least one of to=, cc=, bcc=")
            message = compose(
                sender=sender or envelope_from, to=to, cc=cc, bcc=bcc, reply_to=reply_to, subject=subject,
                text=text, html=html, attachments=attachments, inline=inline, headers=headers,
            )  # fmt: skip
        elif any(v for v in (to, cc, bcc, reply_to, subject, text, html, attachments, inline, headers)):
            raise ConfigError("pass either a message or its parts (to=, subject=, ...), not both")
        return prepare(message, sender=envelope_from, recipients=recipients, key=key, policy=policy)

    def _bulk_prepare(self, item: BulkItem) -> Outgoing:
        if isinstance(item, Outgoing):
            return item
        key = None
        if isinstance(item, tuple):
            key, item = item
        out = prepare(item, sender=self._account.address, key=key, policy=self.policy)
        return out

    # --- sending ----------------------------------------------------------------------
    async def send(
        self, message: EmailMessage | bytes | Outgoing | None = None, **parts: object
    ) -> SendResult:
        if isinstance(message, Outgoing):
            out = message
        elif parts.get("check_deliverability"):
            # email-validator's DNS lookups block: keep them off the event loop.
            out = await asyncio.to_thread(self.outgoing, message, **parts)  # type: ignore[arg-type]
        else:
            out = self.outgoing(message, **parts)  # type: ignore[arg-type]
        pool = self._pool_for_send()
        timeouts = self._account.settings.timeouts
        for attempt in (1, 2):
            session = await pool.acquire()
            fresh = session.sent == 0
            reuse = True
            try:
                tx = await session.wire.send(
                    out, session.caps, command_timeout=timeouts.command, data_timeout=timeouts.data
                )
            except ConnectionLost:
                reuse = False
                if fresh or attempt == 2:
                    raise
                continue  # a pooled session died while idle; nothing was committed: once more
            except MailkitError:
                reuse = session.usable
                raise
            finally:
                session.sent += 1
                await pool.release(session, reuse=reuse)
            return SendResult(
                key=out.key, message_id=out.message_id, state="accepted", accepted=tx.accepted,
                refused=tx.refused, reply=tx.reply,
            )  # fmt: skip
        raise AssertionError("unreachable")  # pragma: no cover

    async def send_many(
        self,
        messages: Iterable[BulkItem] | AsyncIterable[BulkItem],
        *,
        concurrency: int = 4,
        rate_per_minute: float | None = None,
        per_connection: int = 100,
        journal: str | os.PathLike[str] | JournalStore | None = None,
        resend_unknown: bool | Collection[str] = False,
        retries: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
    ) -> AsyncGenerator[SendResult, None]:
        store, owned = open_journal(journal) if journal is not None else (None, False)
        try:
            config = await self.session_config()
            results = run_bulk(
                messages, prepare=self._bulk_prepare, opener=self.open_session,
                timeouts=config.timeouts, concurrency=concurrency, rate_per_minute=rate_per_minute,
                per_connection=per_connection, journal=store, resend_unknown=resend_unknown,
                retries=retries, backoff=backoff, max_backoff=max_backoff,
            )  # fmt: skip
            try:
                async for result in results:
                    yield result
            finally:
                await results.aclose()
        finally:
            if owned and store is not None:
                store.close()

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
