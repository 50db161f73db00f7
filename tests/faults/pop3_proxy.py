"""A loopback proxy that cuts a plaintext POP3 session at an exact command boundary or byte.

Rule: it runs in the test's own event loop, knows lines but no POP3 beyond that, and cuts at most
once per connection. ``cut_after_line=k`` forwards the client's bytes up to and including its k-th
line (k=0: before the greeting is forwarded), then closes both sides; ``cut_down_at=n`` forwards n
bytes of the server's stream to the client, then closes both sides.
(tests/faults/proxy.py cuts at byte offsets only; counting command lines needs this one.)
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

__all__ = ["CutPlan", "CuttingProxy"]


@dataclass(frozen=True)
class CutPlan:
    cut_after_line: int | None = None
    cut_down_at: int | None = None


class CuttingProxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.plan = CutPlan()
        self.port = 0
        self.fired = False
        self.lines = 0
        self.cut_line = b""  # the client's last line forwarded before a cut_after_line cut
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def arm(self, plan: CutPlan) -> None:
        """The plan for the next connection."""
        self.plan = plan
        self.fired = False
        self.lines = 0
        self.cut_line = b""

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except BaseException:  # cancelled by __aexit__ while connecting
            client_w.close()
            self._tasks.discard(task)
            raise
        cut = asyncio.Event()
        plan = self.plan
        if plan.cut_after_line == 0:
            self.fired = True
            cut.set()

        async def up() -> None:
            while not cut.is_set():
                chunk = await client_r.read(65536)
                if not chunk:
                    break
                if plan.cut_after_line is not None:
                    end = 0
                    while True:
                        nl = chunk.find(b"\n", end)
                        if nl < 0:
                            break
                        start, end = end, nl + 1
                        self.lines += 1
                        if self.lines >= plan.cut_after_line:
                            self.fired = True
                            self.cut_line = chunk[start:end]
                            server_w.write(chunk[:end])
                            with contextlib.suppress(OSError):
                                await server_w.drain()
                            cut.set()
                            return
                server_w.write(chunk)
                await server_w.drain()
            cut.set()

        async def down() -> None:
            sent = 0
            while not cut.is_set():
                chunk = await server_r.read(65536)
                if not chunk:
                    break
                if plan.cut_down_at is not None and sent + len(chunk) >= plan.cut_down_at:
                    self.fired = True
                    client_w.write(chunk[: plan.cut_down_at - sent])
                    with contextlib.suppress(OSError):
                        await client_w.drain()
                    cut.set()
                    return
                sent += len(chunk)
                client_w.write(chunk)
                await client_w.drain()
            cut.set()

        pumps = [asyncio.create_task(up()), asyncio.create_task(down())]
        try:
            await cut.wait()
        finally:
            for p in pumps:
                p.cancel()
            try:
                await asyncio.gather(*pumps, return_exceptions=True)
            finally:  # also when __aexit__ cancels this task while it waits for its pumps
                for w in (client_w, server_w):
                    w.close()
                self._tasks.discard(task)
