"""IMAP: mailboxes, search, fetch, flags and incremental sync (filled in by the IMAP work)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._portal import Portal
    from ..account import AsyncAccount

__all__ = ["IMAP", "AsyncIMAP"]


class AsyncIMAP:
    def __init__(self, account: AsyncAccount, mailbox: str | None = None) -> None:
        self._account = account
        self._mailbox = mailbox


class IMAP:
    def __init__(self, async_imap: AsyncIMAP, portal: Portal) -> None:
        self._async = async_imap
        self._portal = portal
