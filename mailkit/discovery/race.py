"""Staggered parallel attempts (happy-eyeballs style, RFC 8305) over an ordered candidate list.

Rule: the winner is the best-ranked candidate that succeeded once every better one has failed.
A candidate starts when the one before it fails, or after ``stagger`` seconds, whichever is first;
nothing worse than a success is started; the whole race ends by ``deadline``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["RaceResult", "race"]

C = TypeVar("C")
R = TypeVar("R")


@dataclass
class RaceResult(Generic[R]):
    results: dict[int, R] = field(default_factory=dict)  # index -> result, for finished attempts
    cancelled: list[int] = field(default_factory=list)  # started, stopped unfinished
    winner: int | None = None
    timed_out: bool = False  # the deadline ended the race


async def race(
    candidates: Sequence[C],
    attempt: Callable[[C], Awaitable[R]],
    succeeded: Callable[[R], bool],
    *,
    stagger: float,
    deadline: float,
) -> RaceResult[R]:
    """Run ``attempt`` over ``candidates`` (best first) and return who won. ``deadline`` is monotonic."""
    out: RaceResult[R] = RaceResult()
    tasks: dict[asyncio.Task[R], int] = {}
    started = 0
    next_start = time.monotonic()

    def start_next() -> None:
        nonlocal started, next_start
        tasks[asyncio.ensure_future(attempt(candidates[started]))] = started
        started += 1
        next_start = time.monotonic() + stagger

    def decided() -> bool:
        for index in range(len(candidates)):
            if index not in out.results:
                return False
            if succeeded(out.results[index]):
                out.winner = index
                return True
        return True  # every candidate failed

    try:
        while not decided():
            have_success = any(succeeded(r) for r in out.results.values())
            may_start = started < len(candidates) and not have_success
            now = time.monotonic()
            if may_start and (not tasks or now >= next_start):
                start_next()
                continue
            if now >= deadline:
                out.timed_out = True
                break
            wait = deadline - now
            if may_start:
                wait = min(wait, next_start - now)
            done, _ = await asyncio.wait(tasks, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                index = tasks.pop(task)
                out.results[index] = task.result()
                if not succeeded(out.results[index]):
                    next_start = time.monotonic()  # a failure starts the next one at once
    finally:
        for task, index in tasks.items():
            task.cancel()
            out.cancelled.append(index)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if out.winner is None and out.timed_out:
        # Out of time: take the best that did succeed, even if a better one never answered.
        for index in sorted(out.results):
            if succeeded(out.results[index]):
                out.winner = index
                break
    out.cancelled.sort()
    return out
