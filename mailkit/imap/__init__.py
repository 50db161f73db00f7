"""IMAP: mailboxes, search, fetch, flags, IDLE and incremental sync, over imapclient.

Rule: one async implementation (``AsyncIMAP``, imapclient on a worker thread per connection,
bulk FETCH on a fast path of our own); ``IMAP`` is its blocking face through the account's Portal.
"""

from __future__ import annotations

from ._types import (
    Address,
    Change,
    ChangeKind,
    Envelope,
    Folder,
    FolderStatus,
    Mailbox,
    Message,
    SpecialUse,
)
from .client import IMAP, AsyncIMAP
from .mirror import MaildirMirror, maildir_flags
from .query import Q
from .state import SyncState

__all__ = [
    "IMAP",
    "Address",
    "AsyncIMAP",
    "Change",
    "ChangeKind",
    "Envelope",
    "Folder",
    "FolderStatus",
    "Mailbox",
    "MaildirMirror",
    "Message",
    "Q",
    "SpecialUse",
    "SyncState",
    "maildir_flags",
]
