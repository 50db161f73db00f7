"""POP3: download-and-delete that never loses a message (filled in by the POP3 work)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._portal import Portal
    from ..account import AsyncAccount

__all__ = ["POP3", "AsyncPOP3"]


class AsyncPOP3:
    def __init__(self, account: AsyncAccount) -> None:
        self._account = account


class POP3:
    def __init__(self, async_pop3: AsyncPOP3, portal: Portal) -> None:
        self._async = async_pop3
        self._portal = portal
