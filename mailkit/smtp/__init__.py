"""SMTP: compose and send, and bulk mailing that never double-sends.

Built on aiosmtplib for the session (TLS, STARTTLS, EHLO, AUTH); the mail transaction itself is
ours (``_wire``), pipelined when the server offers it, so that a lost connection is always known
to be before or after the end of DATA.
"""

from .client import AsyncSMTP, smtp_for
from .errors import (
    DeliveryUnknownError,
    RecipientsDeferredError,
    RecipientsRefusedError,
    SendDeferredError,
    SendRefusedError,
    SMTPUTF8RequiredError,
)
from .journal import JournalEntry, JournalStore, SQLiteJournal
from .result import SendResult

__all__ = [
    "AsyncSMTP",
    "DeliveryUnknownError",
    "JournalEntry",
    "JournalStore",
    "RecipientsDeferredError",
    "RecipientsRefusedError",
    "SMTPUTF8RequiredError",
    "SQLiteJournal",
    "SendDeferredError",
    "SendRefusedError",
    "SendResult",
    "smtp_for",
]
