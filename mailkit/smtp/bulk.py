"""Bulk sending: a pool of sessions, one shared rate limit, retries with backoff, a journal.

Rule: a message whose end of DATA may have reached the server is never sent again unless the
user asks (``resend_unknown``); recipients that were accepted are never sent to again; permanent
refusals are never retried; transient ones are, with exponential backoff (tenacity).
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
)
from dataclasses import dataclass, field
from email.message import EmailMessage

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from ..config import Timeouts
from ..errors import AuthenticationError, ConfigError, MailkitError, Reply, SecurityError, TLSError
from ..message import Outgoing
from ._session import Session
from .errors import DeliveryUnknownError, RecipientsDeferredError, SendDeferredError, is_retryable
from .journal import JournalState, JournalStore
from .pool import Pool
from .result import SendResult, State

__all__ = ["BulkItem", "RateLimiter", "run_bulk"]

BulkItem = EmailMessage | bytes | Outgoing | tuple[str, EmailMessage | bytes]


class RateLimiter:
    """Spaces sends evenly: at most ``per_minute`` starts per minute, shared by all workers."""

    def __init__(self, per_minute: float | None) -> None:
        if per_minute is not None and not per_minute > 0:
            raise ConfigError(f"rate_per_minute must be positive, not {per_minute!r}")
        self._interval = 0.0 if per_minute is None else 60.0 / per_minute
        self._next = 0.0

    def ready(self) -> bool:
        """Take a slot if one is free right now (never sleeps)."""
        if not self._interval:
            return True
        now = time.monotonic()
        if self._next > now:
            return False
        self._next = now + self._interval
        return True

    async def wait(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)


class _PartlyDeferred(SendDeferredError):
    """Some recipients were deferred (4xx): retry the transaction for them only."""


@dataclass
class _Job:
    out: Outgoing
    accepted: list[str] = field(default_factory=list)
    refused: dict[str, Reply] = field(default_factory=dict)  # final (permanent) refusals
    deferred: dict[str, Reply] = field(default_factory=dict)  # temporary refusals, still pending
    pending: tuple[str, ...] = ()
    attempts: int = 0
    reply: Reply | None = None
    # set when the previous message's end of data already carried this one's envelope
    session: Session | None = None
    wire_out: Outgoing | None = None


class _Campaign:
    def __init__(
        self,
        pool: Pool,
        *,
        timeouts: Timeouts,
        limiter: RateLimiter,
        journal: JournalStore | None,
        retries: int,
        backoff: float,
        max_backoff: float,
    ) -> None:
        self.pool = pool
        self.timeouts = timeouts
        self.limiter = limiter
        self.journal = journal
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.held: set[Session] = set()  # sessions handed from one job to the next

    def mark(
        self, job: _Job, state: JournalState, *, error: str | None = None, attempt: bool = False,
        durable: bool = True,
    ) -> None:  # fmt: skip
        if self.journal is not None:
            self.journal.mark(
                job.out.key, state, message_id=job.out.message_id, recipients=job.out.recipients,
                accepted=job.accepted, refused={**job.refused, **job.deferred}, error=error, attempt=attempt,
                durable=durable,
            )  # fmt: skip

    async def deliver(self, job: _Job, peek: Callable[[], _Job | None] | None = None) -> SendResult:
        try:
            try:
                await self._attempt(job, peek)
            except MailkitError as exc:
                if not (is_retryable(exc) and self.retries):
                    raise
                # Only now pay for tenacity: the first attempt is the common, fast case.
                retrying = AsyncRetrying(
                    stop=stop_after_attempt(self.retries),
                    wait=wait_random_exponential(multiplier=self.backoff, max=self.max_backoff),
                    retry=retry_if_exception(is_retryable),
                    reraise=True,
                )
                await asyncio.sleep(random.uniform(self.backoff / 2, min(self.backoff, self.max_backoff)))
                async for attempt in retrying:
                    with attempt:
                        await self._attempt(job)
        except DeliveryUnknownError as exc:
            self.mark(job, "unknown", error=str(exc))
            return self._result(job, "unknown", exc)
        except (AuthenticationError, SecurityError, TLSError):
            self.mark(job, "queued")
            raise  # the whole campaign would fail the same way: stop it
        except MailkitError as exc:
            state: State = "deferred"
            jstate: JournalState = "deferred"
            if not is_retryable(exc):
                # Permanent: whoever is still pending gets this refusal as their final answer.
                refused = dict(getattr(exc, "refused", None) or {})
                fallback = exc.reply or Reply("smtp", None, str(exc))
                for rcpt in job.pending:
                    job.refused.setdefault(rcpt, refused.get(rcpt, fallback))
                job.deferred.clear()
                state = jstate = "accepted" if job.accepted else "failed"
            self.mark(job, jstate, error=str(exc))
            return self._result(job, state, exc)
        self.mark(job, "accepted")
        return self._result(job, "accepted", None)

    def _result(self, job: _Job, state: State, error: MailkitError | None) -> SendResult:
        if state == "accepted" and not job.accepted:
            state = "failed"
        return SendResult(
            key=job.out.key, message_id=job.out.message_id, state=state, accepted=tuple(job.accepted),
            refused={**job.refused, **job.deferred}, reply=job.reply, error=error, attempts=job.attempts,
        )  # fmt: skip

    def _begin(self, job: _Job) -> Outgoing:
        job.attempts += 1
        # Not needed for safety (a lost in_flight row reads as queued, which is right: the end of
        # data was not written yet), so it skips the fsync; "unknown" below is the durable one.
        self.mark(job, "in_flight", attempt=True, durable=False)
        if job.pending == job.out.recipients:
            return job.out
        return job.out.with_recipients(job.pending)

    async def _attempt(self, job: _Job, peek: Callable[[], _Job | None] | None = None) -> None:
        if job.wire_out is not None and job.session is not None:
            out, session = job.wire_out, job.session  # begun by the previous message
            self.held.discard(session)
        else:
            await self.limiter.wait()
            out = self._begin(job)
            session = await self.pool.acquire()
        job.wire_out = job.session = None
        following: list[_Job] = []

        def then() -> Outgoing | None:
            # Pipelining across messages: begin the next job now if it may start at once.
            if peek is None or session.sent + 2 > self.pool.per_connection or not self.limiter.ready():
                return None
            nxt = peek()
            if nxt is None:
                return None
            nxt.wire_out, nxt.session = self._begin(nxt), session
            self.held.add(session)
            following.append(nxt)
            return nxt.wire_out

        reuse = True
        try:
            tx = await session.wire.send(
                out,
                session.caps,
                command_timeout=self.timeouts.command,
                data_timeout=self.timeouts.data,
                before_end=(lambda: self.mark(job, "unknown")) if self.journal is not None else None,
                then=then,
            )
        except RecipientsDeferredError as exc:
            self._split(job, exc.refused)
            raise
        except DeliveryUnknownError:
            reuse = False
            raise
        finally:
            session.sent += 1
            if not following:  # else the session stays with the next job
                await self.pool.release(session, reuse=reuse)
        job.reply = tx.reply
        job.accepted.extend(tx.accepted)
        self._split(job, tx.refused)
        if job.pending:
            self.mark(job, "deferred")
            raise _PartlyDeferred("some recipients were deferred", reply=tx.refused[job.pending[0]])

    def _split(self, job: _Job, refused: Mapping[str, Reply]) -> None:
        """Permanent refusals are final; temporary ones stay pending for the next attempt."""
        job.deferred = {}
        for rcpt, reply in refused.items():
            if isinstance(reply.code, int) and 400 <= reply.code < 500:
                job.deferred[rcpt] = reply
            else:
                job.refused[rcpt] = reply
        job.pending = tuple(job.deferred)


def _peek(jobs: asyncio.Queue[_Job | None], taken: list[_Job | None]) -> _Job | None:
    """The next job if one is waiting (remembered in ``taken``, even the end marker)."""
    try:
        item = jobs.get_nowait()
    except asyncio.QueueEmpty:
        return None
    taken.append(item)
    return item


async def _aiter(items: Iterable[BulkItem] | AsyncIterable[BulkItem]) -> AsyncIterator[BulkItem]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


async def run_bulk(
    items: Iterable[BulkItem] | AsyncIterable[BulkItem],
    *,
    prepare: Callable[[BulkItem], Outgoing],
    opener: Callable[[], Awaitable[Session]],
    timeouts: Timeouts,
    concurrency: int = 4,
    rate_per_minute: float | None = None,
    per_connection: int = 100,
    journal: JournalStore | None = None,
    resend_unknown: bool | Collection[str] = False,
    retries: int = 3,
    backoff: float = 1.0,
    max_backoff: float = 60.0,
) -> AsyncGenerator[SendResult, None]:
    """Send every item; yield one SendResult per item as each completes (not in input order)."""
    if concurrency < 1:
        raise ConfigError("concurrency must be at least 1")
    if retries < 0:
        raise ConfigError("retries must be 0 or more")
    pool = Pool(opener, per_connection=per_connection, max_idle=concurrency,
                command_timeout=timeouts.command)  # fmt: skip
    campaign = _Campaign(
        pool, timeouts=timeouts, limiter=RateLimiter(rate_per_minute), journal=journal,
        retries=retries, backoff=backoff, max_backoff=max_backoff,
    )  # fmt: skip
    jobs: asyncio.Queue[_Job | None] = asyncio.Queue(maxsize=concurrency * 4)
    results: asyncio.Queue[SendResult | BaseException | None] = asyncio.Queue()
    seen: set[str] = set()

    def settled(out: Outgoing) -> SendResult | _Job:
        if out.key in seen:
            raise ConfigError(f"two messages share the key {out.key!r}; each needs its own")
        seen.add(out.key)
        entry = journal.get(out.key) if journal is not None else None
        if entry is None:
            # No "queued" row per message: one commit less each; absent means queued.
            return _Job(out, pending=out.recipients)
        done = entry.state in ("accepted", "failed")
        resend = resend_unknown is True or (
            not isinstance(resend_unknown, bool) and out.key in resend_unknown
        )
        if done or (entry.state == "unknown" and not resend):
            error = None
            if entry.state == "unknown":
                error = DeliveryUnknownError(
                    f"{out.key}: an earlier run lost the connection after the end of DATA; "
                    "not resent (pass resend_unknown to send it again)"
                )
            return SendResult(
                key=out.key, message_id=entry.message_id, state="skipped" if done else "unknown",
                accepted=entry.accepted, refused=dict(entry.refused), error=error, attempts=0,
            )  # fmt: skip
        pending = tuple(r for r in out.recipients if r in set(entry.pending_recipients))
        final = {r: reply for r, reply in entry.refused.items() if r not in pending}
        return _Job(out, accepted=list(entry.accepted), refused=final, pending=pending)

    async def feed() -> None:
        try:
            async for item in _aiter(items):
                try:
                    out = prepare(item)
                except ConfigError as exc:
                    key = item[0] if isinstance(item, tuple) else ""
                    await results.put(SendResult(key=key, message_id="", state="failed", error=exc,
                                                 attempts=0))  # fmt: skip
                    continue
                job = settled(out)
                if isinstance(job, SendResult):
                    await results.put(job)
                elif not job.pending:
                    await results.put(campaign._result(job, "accepted", None))
                else:
                    await jobs.put(job)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises
            await results.put(exc)
        finally:
            for _ in range(concurrency):
                await jobs.put(None)

    async def work() -> None:
        try:
            job = await jobs.get()
            while job is not None:
                taken: list[_Job | None] = []
                await results.put(await campaign.deliver(job, functools.partial(_peek, jobs, taken)))
                job = taken[0] if taken else await jobs.get()
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which re-raises
            await results.put(exc)
        finally:
            await results.put(None)

    tasks = [asyncio.create_task(feed())] + [asyncio.create_task(work()) for _ in range(concurrency)]
    running = concurrency
    try:
        while running:
            item = await results.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for session in campaign.held:
            session.wire.abort()
        await pool.aclose()
