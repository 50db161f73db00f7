"""A fault-injecting TCP proxy on loopback: latency, stalls, cuts, resets, tiny fragments, dead links
(``freeze``), wire capture.

Rule: every fault is fixed by a ``FaultPlan`` chosen when the connection is accepted (from a seeded
random generator when plans are random), so a failing run replays exactly. The proxy runs its own
event loop in a daemon thread, so sync and async tests use it the same way::

    with FaultProxy(("127.0.0.1", 10143), FaultPlan.cut(after=200)) as proxy:
        ... connect mailkit to 127.0.0.1:proxy.port ...
        assert b"LOGIN" not in proxy.connections[0].up
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "DOWN",
    "UP",
    "Blackhole",
    "FaultPlan",
    "FaultProxy",
    "ProxiedConnection",
    "open_socket_count",
    "queued",
    "reset_socket",
]

Direction = Literal["up", "down"]
UP: Direction = "up"  # client -> server (what mailkit sends)
DOWN: Direction = "down"  # server -> client (what mailkit receives)
Action = Literal["none", "stall", "cut", "reset"]


@dataclass(frozen=True)
class FaultPlan:
    """What the proxy does to one connection.

    ``latency`` seconds are waited before each forwarded chunk; ``fragment`` slices every chunk into
    pieces of that many bytes (sent ``fragment_delay`` apart, with TCP_NODELAY, so the peer reads
    them separately). ``action`` fires once ``after`` bytes have been forwarded in ``direction``:
    ``stall`` stops forwarding that direction (the socket stays open), ``cut`` closes both sides
    cleanly (FIN), ``reset`` aborts both sides with RST (SO_LINGER 0).
    """

    latency: float = 0.0
    fragment: int | None = None
    fragment_delay: float = 0.001
    action: Action = "none"
    direction: Direction = DOWN
    after: int = 0

    def __post_init__(self) -> None:
        if self.action not in ("none", "stall", "cut", "reset"):
            raise ValueError(f"unknown action {self.action!r}")
        if self.direction not in (UP, DOWN):
            raise ValueError(f"unknown direction {self.direction!r}")
        if self.after < 0 or self.latency < 0:
            raise ValueError("after and latency must not be negative")
        if self.fragment is not None and self.fragment < 1:
            raise ValueError("fragment must be at least 1 byte")

    @classmethod
    def stall(cls, after: int = 0, direction: Direction = DOWN, **kw: float | int | None) -> FaultPlan:
        return cls(action="stall", after=after, direction=direction, **kw)  # type: ignore[arg-type]

    @classmethod
    def cut(cls, after: int = 0, direction: Direction = DOWN, **kw: float | int | None) -> FaultPlan:
        return cls(action="cut", after=after, direction=direction, **kw)  # type: ignore[arg-type]

    @classmethod
    def reset(cls, after: int = 0, direction: Direction = DOWN, **kw: float | int | None) -> FaultPlan:
        return cls(action="reset", after=after, direction=direction, **kw)  # type: ignore[arg-type]

    @classmethod
    def random(
        cls,
        rng: random.Random,
        max_bytes: int,
        *,
        actions: Sequence[Action] = ("cut", "reset"),
        directions: Sequence[Direction] = (UP, DOWN),
    ) -> FaultPlan:
        """A cut or reset at a random byte offset below ``max_bytes`` (for seeded no-loss runs)."""
        return cls(
            action=rng.choice(list(actions)),
            direction=rng.choice(list(directions)),
            after=rng.randrange(max_bytes),
        )


@dataclass
class ProxiedConnection:
    """One client connection through the proxy, with everything each side sent."""

    index: int
    plan: FaultPlan
    up: bytearray = field(default_factory=bytearray)  # every byte the client sent
    down: bytearray = field(default_factory=bytearray)  # every byte the server sent
    forwarded: dict[str, int] = field(default_factory=lambda: {UP: 0, DOWN: 0})
    fired: bool = False  # the plan's action happened
    closed: threading.Event = field(default_factory=threading.Event)
    opened_at: float = field(default_factory=time.monotonic)  # when the proxy accepted it
    # A frozen connection is a dead path: both sockets stay open, nothing more is forwarded either
    # way (bytes are still captured in up/down and counted here), and no FIN or RST crosses.
    frozen: bool = False
    dropped: dict[str, int] = field(default_factory=lambda: {UP: 0, DOWN: 0})

    def sent_by_client(self) -> bytes:
        return bytes(self.up)

    def sent_by_server(self) -> bytes:
        return bytes(self.down)


def queued(plans: Sequence[FaultPlan]) -> Callable[[int, random.Random], FaultPlan]:
    """A plan source for ``set_plan``: the next connections get ``plans`` in order, later ones none.

    Unlike a plain sequence (indexed by the proxy's connection count), this starts afresh at each
    call, so one proxy can serve many seeded runs.
    """
    pending = list(plans)
    return lambda _index, _rng: pending.pop(0) if pending else FaultPlan()


def reset_socket(writer: asyncio.StreamWriter) -> None:
    """Abort with an RST instead of a FIN: SO_LINGER on, zero seconds, then close."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def open_socket_count() -> int:
    """Sockets this process holds open (Linux /proc): a leak check compares two readings."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
    return count


class Blackhole:
    """A loopback port where TCP connects hang (no SYN-ACK), like a firewalled host.

    A listener with a backlog of 0 that never accepts: once one connection fills its queue the
    kernel silently drops further SYNs (tcp_abort_on_overflow=0, the Linux default).
    """

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._filler = socket.socket()
        self.host = "127.0.0.1"
        self.port = 0

    def __enter__(self) -> Blackhole:
        self._listener.bind((self.host, 0))
        self._listener.listen(0)
        self.port = self._listener.getsockname()[1]
        self._filler.settimeout(2)
        self._filler.connect((self.host, self.port))
        probe = socket.socket()
        probe.settimeout(0.3)
        try:
            probe.connect((self.host, self.port))
            raise RuntimeError("blackhole accepted a connection: tcp_abort_on_overflow or backlog differ")
        except TimeoutError:
            pass
        finally:
            probe.close()
        return self

    def __exit__(self, *exc: object) -> None:
        self._filler.close()
        self._listener.close()


async def _all(tasks: list[asyncio.Task[None]]) -> None:
    await asyncio.gather(*tasks)


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class FaultProxy:
    """A TCP proxy on 127.0.0.1:<free port> in front of ``target``, injecting faults per connection.

    ``plan`` is one FaultPlan for every connection, a sequence (connection *i* gets item *i*; later
    connections pass cleanly), or a function ``(index, rng) -> FaultPlan`` drawing from a generator
    seeded with ``seed``. ``set_plan`` changes it for later connections.
    """

    def __init__(
        self,
        target: tuple[str, int],
        plan: FaultPlan | Sequence[FaultPlan] | Callable[[int, random.Random], FaultPlan] | None = None,
        *,
        seed: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        self.target = target
        self.host = host
        self.port = 0
        self.seed = seed
        self.rng = random.Random(seed)
        self.connections: list[ProxiedConnection] = []
        self._plan = plan
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping: asyncio.Event | None = None
        self._lock = threading.Lock()
        self._freeze_new = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"fault-proxy-{self.target[1]}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    async def _listen(self) -> None:
        self._stopping = asyncio.Event()
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        assert self._server is not None and self._stopping is not None
        self._stopping.set()
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    def close(self) -> None:
        """Stop listening and abort every connection still open; idempotent."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> FaultProxy:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    # -- plans and inspection ----------------------------------------------------------------

    def set_plan(
        self, plan: FaultPlan | Sequence[FaultPlan] | Callable[[int, random.Random], FaultPlan] | None
    ) -> None:
        with self._lock:
            self._plan = plan

    def _plan_for(self, index: int) -> FaultPlan:
        with self._lock:
            plan = self._plan
        if plan is None:
            return FaultPlan()
        if isinstance(plan, FaultPlan):
            return plan
        if callable(plan):
            return plan(index, self.rng)
        return plan[index] if index < len(plan) else FaultPlan()

    def freeze(self, *, new_connections: bool = False) -> None:
        """Make every open connection a dead link, as a NAT that forgot the flow or a pulled cable.

        Nothing is forwarded any more in either direction and nothing is closed: no FIN, no RST
        reaches either peer, whatever they send (or close) from now on. With ``new_connections``,
        connections accepted later are dead from their first byte too, until ``thaw()``.
        """
        with self._lock:
            self._freeze_new = new_connections
            for conn in self.connections:
                conn.frozen = True

    def reset_all(self) -> None:
        """Abort every open connection now, both sides (from any thread): a reset, not a dead link."""
        if self._loop is None:
            return

        def abort() -> None:
            for writer in list(self._writers):
                reset_socket(writer)

        self._loop.call_soon_threadsafe(abort)

    def thaw(self) -> None:
        """New connections pass again; the ones already frozen stay dead (their bytes are gone)."""
        with self._lock:
            self._freeze_new = False

    @property
    def connection_count(self) -> int:
        return len(self.connections)

    @property
    def open_connections(self) -> int:
        return sum(not c.closed.is_set() for c in self.connections)

    def wait_all_closed(self, timeout: float = 5.0) -> bool:
        """True once every proxied connection has ended on both sides (a leak check)."""
        return all(conn.closed.wait(timeout) for conn in list(self.connections))

    async def await_all_closed(self, timeout: float = 5.0) -> bool:
        """``wait_all_closed`` for async tests: the caller's loop keeps running (and closing) meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(None, self.wait_all_closed, timeout)

    def client_bytes(self) -> bytes:
        """Everything every client sent, in connection order."""
        return b"".join(bytes(c.up) for c in self.connections)

    # -- forwarding --------------------------------------------------------------------------

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        with self._lock:
            conn = ProxiedConnection(len(self.connections), FaultPlan(), frozen=self._freeze_new)
            self.connections.append(conn)
        conn.plan = self._plan_for(conn.index)
        self._writers.add(client_w)
        server_w: asyncio.StreamWriter | None = None
        try:
            try:
                server_r, writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 10)
            except (TimeoutError, OSError):
                reset_socket(client_w)
                return
            server_w = writer
            self._writers.add(server_w)
            for w in (client_w, server_w):
                _nodelay(w)
            ends: dict[str, asyncio.StreamWriter] = {UP: server_w, DOWN: client_w}
            done = asyncio.Event()
            eof: dict[str, asyncio.Event] = {UP: asyncio.Event(), DOWN: asyncio.Event()}
            pumps = [
                asyncio.create_task(self._pump(conn, client_r, server_w, UP, ends, done, eof)),
                asyncio.create_task(self._pump(conn, server_r, client_w, DOWN, ends, done, eof)),
            ]
            assert self._stopping is not None
            stop = asyncio.create_task(self._stopping.wait())
            # Both directions ended, a fault closed the connection, or the proxy is stopping.
            finished = asyncio.create_task(done.wait())
            both = asyncio.create_task(_all(pumps))
            await asyncio.wait([both, finished, stop], return_when=asyncio.FIRST_COMPLETED)
            for t in (*pumps, both, stop, finished):
                t.cancel()
            await asyncio.gather(*pumps, both, stop, finished, return_exceptions=True)
        finally:
            for end in (client_w, server_w):
                if end is not None:
                    end.transport.abort()
                    self._writers.discard(end)
            conn.closed.set()
            self._tasks.discard(task)

    async def _pump(
        self,
        conn: ProxiedConnection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: Direction,
        ends: dict[str, asyncio.StreamWriter],
        done: asyncio.Event,
        eof: dict[str, asyncio.Event],
    ) -> None:
        plan = conn.plan
        armed = plan.action != "none" and plan.direction == direction
        record = conn.up if direction == UP else conn.down
        try:
            if armed and plan.after == 0:
                await self._fire(conn, ends, done, eof, {direction: reader})
                return
            while True:
                chunk = await reader.read(65536)
                if conn.frozen:
                    # A dead path: the bytes vanish, and so does the end of the stream.
                    record += chunk
                    conn.dropped[direction] += len(chunk)
                    if not chunk:
                        return
                    continue
                if not chunk:
                    eof[direction].set()
                    with contextlib.suppress(OSError, RuntimeError):
                        if writer.can_write_eof():
                            writer.write_eof()
                    return
                record += chunk
                if armed:
                    room = plan.after - conn.forwarded[direction]
                    chunk = chunk[:room]
                if plan.latency:
                    await asyncio.sleep(plan.latency)
                await self._write(writer, chunk, plan)
                conn.forwarded[direction] += len(chunk)
                if armed and conn.forwarded[direction] >= plan.after:
                    await self._fire(conn, ends, done, eof, {direction: reader})
                    return
        except (OSError, RuntimeError):
            if not conn.frozen:  # over a dead path the other side would never learn of it
                done.set()  # one side vanished: end the whole connection

    async def _write(self, writer: asyncio.StreamWriter, chunk: bytes, plan: FaultPlan) -> None:
        if not chunk:
            return
        if plan.fragment is None:
            writer.write(chunk)
            await writer.drain()
            return
        for start in range(0, len(chunk), plan.fragment):
            writer.write(chunk[start : start + plan.fragment])
            await writer.drain()
            if plan.fragment_delay:
                await asyncio.sleep(plan.fragment_delay)

    async def _fire(
        self,
        conn: ProxiedConnection,
        ends: dict[str, asyncio.StreamWriter],
        done: asyncio.Event,
        eof: dict[str, asyncio.Event],
        readers: dict[str, asyncio.StreamReader],
    ) -> None:
        conn.fired = True
        action = conn.plan.action
        if action == "stall":
            # Forward nothing more this way (what arrives is still captured, so that the end of
            # the sender is seen); the other direction keeps flowing. Once either sender closes
            # (e.g. the client gave up on a timeout) nothing more can happen: end it all.
            direction = conn.plan.direction
            source = readers[direction]
            record = conn.up if direction == UP else conn.down
            other = DOWN if direction == UP else UP
            other_ended = asyncio.ensure_future(eof[other].wait())
            try:
                while not other_ended.done():
                    read = asyncio.ensure_future(source.read(65536))
                    await asyncio.wait([read, other_ended], return_when=asyncio.FIRST_COMPLETED)
                    if not read.done():
                        read.cancel()
                        break
                    chunk = read.result()
                    if not chunk:
                        break
                    record += chunk
            finally:
                other_ended.cancel()
            done.set()
            return
        if action == "cut":
            for w in ends.values():
                with contextlib.suppress(OSError, RuntimeError):
                    await asyncio.wait_for(w.drain(), 2)
                w.close()
        else:
            for w in ends.values():
                reset_socket(w)
        done.set()
