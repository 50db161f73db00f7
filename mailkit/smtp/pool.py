"""A pool of authenticated SMTP sessions, reused across messages.

Rule: a session goes back to the pool only if it is healthy and has sent fewer than
``per_connection`` messages; a session idle for longer than ``idle_check`` is probed with NOOP
before reuse (servers drop idle clients), and one that fails the probe is replaced silently.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from ..errors import MailkitError
from ._session import Session

__all__ = ["Pool"]


class Pool:
    def __init__(
        self,
        opener: Callable[[], Awaitable[Session]],
        *,
        per_connection: int = 100,
        max_idle: int = 8,
        idle_check: float = 10.0,
        command_timeout: float | None = 30.0,
    ) -> None:
        if per_connection < 1:
            raise ValueError("per_connection must be at least 1")
        self._opener = opener
        self.per_connection = per_connection
        self._max_idle = max_idle
        self._idle_check = idle_check
        self._command_timeout = command_timeout
        self._idle: list[Session] = []
        self._closed = False
        self.opened = 0  # sessions opened so far (for tests and reports)

    async def acquire(self) -> Session:
        if self._closed:
            raise MailkitError("the SMTP pool is closed")
        while self._idle:
            session = self._idle.pop()
            if not session.usable:
                session.wire.abort()
                continue
            if time.monotonic() - session.last_used > self._idle_check:
                try:
                    reply = await session.wire.command("NOOP", self._command_timeout)
                except MailkitError:
                    session.wire.abort()
                    continue
                if reply.code != 250:
                    await session.quit()
                    continue
            return session
        session = await self._opener()
        self.opened += 1
        return session

    async def release(self, session: Session, *, reuse: bool = True) -> None:
        session.last_used = time.monotonic()
        if (
            reuse
            and not self._closed
            and session.usable
            and session.sent < self.per_connection
            and len(self._idle) < self._max_idle
        ):
            self._idle.append(session)
            return
        await self.discard(session)

    async def discard(self, session: Session) -> None:
        if session.usable:
            await session.quit(self._command_timeout)
        else:
            session.wire.abort()

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        # Closing is bounded even when commands are not: 5 s unless the command timeout is shorter.
        timeout = 5.0 if self._command_timeout is None else min(self._command_timeout, 5.0)
        await asyncio.gather(*(s.quit(timeout) for s in idle), return_exceptions=True)
