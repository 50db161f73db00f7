"""What sending reports back: who was accepted, who was refused and why, and the final reply.

Rule: a partial refusal is reported here, never hidden; a complete refusal raises instead (from
``send``) or comes back with ``state == "failed"`` and ``.error`` set (from ``send_many``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from ..errors import MailkitError, Reply

__all__ = ["SendResult", "State"]

State = Literal["accepted", "deferred", "failed", "unknown", "skipped"]

_QUEUE_ID = re.compile(r"queued as ([A-Za-z0-9._-]+)", re.IGNORECASE)


@dataclass(frozen=True)
class SendResult:
    """The outcome of one message.

    ``state``: ``accepted`` (the server took it for at least one recipient; see ``refused``),
    ``deferred`` (temporary failure, retries exhausted), ``failed`` (permanent), ``unknown``
    (connection lost after the end of DATA: maybe delivered), ``skipped`` (a journal says an
    earlier run already settled it; ``accepted`` then lists who got it).
    """

    key: str
    message_id: str
    state: State
    accepted: tuple[str, ...] = ()
    refused: Mapping[str, Reply] = field(default_factory=dict)
    reply: Reply | None = None
    error: MailkitError | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.state == "accepted" and not self.refused

    @property
    def queue_id(self) -> str | None:
        """The server's queue id from the final reply (``250 2.0.0 Ok: queued as 4Xb...``)."""
        if self.reply is None:
            return None
        match = _QUEUE_ID.search(self.reply.text)
        return match.group(1) if match else None
