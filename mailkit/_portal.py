"""Runs the async core for the blocking API on one background event loop per Account.

Rule: the sync face never re-implements protocol logic; it submits coroutines here. One loop per
Account keeps its connections alive between calls (unlike ``asyncio.run`` per call).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterator
from typing import Any, TypeVar

from .errors import MailkitError

T = TypeVar("T")

__all__ = ["Portal"]


class Portal:
    """A private event loop in a daemon thread, started on first use."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise MailkitError("this account is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="mailkit-portal", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the portal loop and wait for it; Ctrl-C cancels it cleanly."""
        if self._on_portal_thread():
            coro.close()
            raise RuntimeError("a sync mailkit call was made from inside its own event loop")
        try:
            loop = self._ensure_loop()
        except BaseException:
            coro.close()
            raise
        started, finished = threading.Event(), threading.Event()

        async def run() -> T:
            started.set()
            try:
                return await coro
            finally:
                finished.set()

        future = asyncio.run_coroutine_threadsafe(run(), loop)
        try:
            return future.result()
        except (concurrent.futures.CancelledError, asyncio.CancelledError):
            if self._closed:  # close() cancelled what was still running
                raise MailkitError("this account was closed while the call was running") from None
            raise
        except BaseException:
            # KeyboardInterrupt or similar in this thread: stop the coroutine too, and wait for it
            # to unwind so that no half-finished protocol exchange is left running. (The future
            # itself is cancelled at once, before the coroutine has unwound: its end is what counts.
            # One cancelled before it started has nothing to unwind.)
            future.cancel()
            if started.is_set():
                finished.wait(timeout=_UNWIND)
            raise

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        """Drive an async iterator from the calling thread, one item at a time."""
        try:
            while True:
                try:
                    yield self.call(_anext(agen))
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None and not self._closed:
                self.call(aclose())

    def _on_portal_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def close(self, final: Awaitable[object] | None = None) -> None:
        """Optionally run ``final`` (e.g. closing connections), then stop the loop and thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._closed = True
            self._loop = self._thread = None
        if loop is None or thread is None:
            if final is not None:
                asyncio.run(_await(final))  # nothing ran on a loop yet: this only marks it closed
            return
        try:
            if final is not None:
                asyncio.run_coroutine_threadsafe(_await(final), loop).result()
        finally:
            # Calls still running (from other threads) are cancelled and unwind before the loop
            # stops; stopping under them would leave their callers waiting forever.
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_cancel_the_rest(), loop).result(timeout=_UNWIND + 5)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            if not thread.is_alive():
                loop.close()


_UNWIND = 5.0  # seconds cancelled calls get to unwind (close sockets, leave IDLE) on close()


async def _cancel_the_rest() -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=_UNWIND)


async def _anext(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable
