"""The staggered race, with scripted attempts (sleeps, no sockets)."""

from __future__ import annotations

import asyncio
import time

from mailkit.discovery.race import race

Plan = dict[str, tuple[float, bool]]  # name -> (seconds it takes, succeeds)


def scripted(plan: Plan, started: list[tuple[str, float]]):  # type: ignore[no-untyped-def]
    origin = time.monotonic()

    async def attempt(name: str) -> tuple[str, bool]:
        started.append((name, round(time.monotonic() - origin, 2)))
        seconds, ok = plan[name]
        await asyncio.sleep(seconds)
        return name, ok

    return attempt


async def run(plan: Plan, *, stagger: float = 0.05, budget: float = 2.0):  # type: ignore[no-untyped-def]
    started: list[tuple[str, float]] = []
    result = await race(
        list(plan),
        scripted(plan, started),
        lambda r: r[1],
        stagger=stagger,
        deadline=time.monotonic() + budget,
    )
    return result, [name for name, _ in started]


async def test_first_success_wins_and_nothing_else_starts() -> None:
    result, started = await run({"465": (0.01, True), "587": (0.01, True), "2525": (0.01, True)})
    assert result.winner == 0 and started == ["465"]


async def test_failure_starts_the_next_at_once() -> None:
    t0 = time.monotonic()
    result, started = await run({"465": (0.0, False), "587": (0.0, False), "2525": (0.0, True)}, stagger=1.0)
    assert result.winner == 2 and started == ["465", "587", "2525"]
    assert time.monotonic() - t0 < 0.5  # no stagger waited: each failure started the next


async def test_better_candidate_is_awaited_before_a_worse_success_wins() -> None:
    result, started = await run({"465": (0.3, True), "587": (0.01, True)})
    assert started == ["465", "587"]  # 587 started after the stagger
    assert result.winner == 0  # but 465 is better and did succeed


async def test_slow_failure_costs_its_time_once() -> None:
    t0 = time.monotonic()
    plan = {"465": (0.3, False), "587": (0.01, True), "2525": (0.01, True), "25": (0.01, True)}
    result, started = await run(plan)
    elapsed = time.monotonic() - t0
    assert result.winner == 1
    assert started == ["465", "587"]  # nothing worse than a success is started
    assert 0.3 <= elapsed < 0.55  # paying the failure twice would be 0.6
    assert result.cancelled == []


async def test_worse_attempts_are_cancelled_when_the_winner_is_known() -> None:
    plan = {"465": (0.12, True), "587": (5.0, True), "2525": (5.0, True)}
    result, started = await run(plan)
    assert result.winner == 0 and started == ["465", "587", "2525"]
    assert result.cancelled == [1, 2]


async def test_deadline_takes_the_best_success_so_far() -> None:
    plan = {"465": (5.0, True), "587": (0.01, True)}
    t0 = time.monotonic()
    result, _ = await run(plan, budget=0.3)
    assert time.monotonic() - t0 < 0.6
    assert result.timed_out and result.winner == 1 and result.cancelled == [0]


async def test_all_fail_and_empty() -> None:
    result, _ = await run({"465": (0.0, False), "587": (0.0, False)})
    assert result.winner is None and set(result.results) == {0, 1}
    result, started = await run({})
    assert result.winner is None and started == []
