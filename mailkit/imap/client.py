"""``AsyncIMAP`` (the one implementation) and ``IMAP`` (its blocking face through the Portal).

Rule: every blocking imapclient call runs on the connection's own worker thread, bounded by the
socket timeout and by an outer watchdog that shuts the socket down; a call that was cancelled or
timed out leaves the connection closed, never half-way through a response. Sync state advances only
after the consumer has taken a change.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import logging
import os
import select
import ssl
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from imapclient.imapclient import _parse_untagged_response as parse_untagged_response

from ..config import Endpoint, OAuth2, Protocol
from ..errors import (
    CertificateError,
    ConfigError,
    ConnectionLost,
    MailkitError,
    ProtocolError,
    StateError,
    TimeoutError,
    TLSError,
)
from ._session import FetchSpec, Session, discard_messages
from ._types import Change, ChangeKind, Folder, FolderStatus, Mailbox, Message, SpecialUse
from .mirror import MaildirMirror
from .query import Q
from .state import SyncState
from .sync import Plan, batches, make_plan, stable_flags

if TYPE_CHECKING:
    from .._portal import Portal
    from ..account import AsyncAccount

__all__ = ["IMAP", "AsyncIMAP"]

log = logging.getLogger("mailkit.imap")
T = TypeVar("T")

UidValidityPolicy = Literal["rebaseline", "error"]
Commit = Callable[[], object]  # records one taken change in the sync state


class AsyncIMAP:
    """One IMAP connection: ``async with account.imap() as imap: ...``."""

    def __init__(self, account: AsyncAccount, mailbox: str | None = None) -> None:
        self._account = account
        self._mailbox = mailbox
        self._session: Session | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._closed = False
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open" if self._session else "new")
        return f"<AsyncIMAP {self._account.address} {state}>"

    # --- lifecycle --------------------------------------------------------------------------
    async def __aenter__(self) -> AsyncIMAP:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def connect(self) -> None:
        if self._closed:
            raise MailkitError("this IMAP session is closed")
        if self._session is not None and not self._session.broken:
            return
        await self._account.connect_with(Protocol.IMAP, self._connect_to)
        if self._mailbox is not None:
            await self._call(self.session.select, self._mailbox)

    async def _connect_to(self, endpoint: Endpoint) -> None:
        settings = self._account.settings
        creds = settings.credentials
        token = await creds.token() if isinstance(creds, OAuth2) else None
        ssl_context = settings.ssl_context()
        session = Session(
            endpoint,
            creds,
            settings.login_user(endpoint),
            ssl_context,
            connect_timeout=settings.timeouts.connect,
            command_timeout=settings.timeouts.command,
            token=token,
        )
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, "mailkit-imap")
            self._account.on_close(self.aclose)
        self._session = session
        await self._call(
            session.connect, timeout=_sum(settings.timeouts.connect, *[settings.timeouts.command] * 6, 3)
        )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        session, executor = self._session, self._executor
        if session is not None:
            with contextlib.suppress(Exception):  # closing; errors here change nothing
                await asyncio.wait_for(self._call(session.logout, timeout=None), 5)
            session.shutdown()
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    @property
    def session(self) -> Session:
        if self._closed:
            raise MailkitError("this IMAP session is closed")
        if self._session is None:
            raise MailkitError("not connected: use 'async with account.imap() as imap'")
        return self._session

    async def _call(
        self, fn: Callable[..., T], *args: Any, timeout: float | str | None = "default", **kw: Any
    ) -> T:
        """Run ``fn`` on the worker thread; on timeout or cancellation, close the connection."""
        if self._executor is None:
            raise MailkitError("not connected")
        limit = self._account.settings.timeouts.data if timeout == "default" else timeout
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, functools.partial(fn, *args, **kw))
        try:
            return await asyncio.wait_for(asyncio.shield(future), limit)  # type: ignore[arg-type]
        except builtins_timeout:
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            if self._session is not None:
                self._session.shutdown()
            raise TimeoutError(f"IMAP {getattr(fn, '__name__', 'call')}: no answer in {limit} s") from None
        except asyncio.CancelledError:
            # Nobody will await the worker's outcome now: retrieve it so asyncio does not log it.
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            if self._session is not None and not future.done():
                self._session.shutdown()  # unblocks the thread; the connection is gone
            raise

    async def _ensure(self) -> Session:
        session = self.session
        if session.broken:
            raise ConnectionLost("the IMAP connection was lost; open a new session")
        return session

    # --- capabilities and folders -----------------------------------------------------------
    @property
    def capabilities(self) -> frozenset[str]:
        return self.session.capabilities

    async def folders(self, pattern: str = "*") -> list[Folder]:
        s = await self._ensure()
        return await self._call(s.folders, pattern)

    async def find_folder(self, role: SpecialUse | str) -> Folder | None:
        """The folder with a special use (Sent, Trash, Junk, Drafts, Archive), whatever its name."""
        s = await self._ensure()
        return await self._call(s.find_folder, role)

    async def create_folder(self, name: str) -> None:
        s = await self._ensure()
        await self._call(s.create_folder, name)

    async def rename_folder(self, old: str, new: str) -> None:
        s = await self._ensure()
        await self._call(s.rename_folder, old, new)

    async def delete_folder(self, name: str) -> None:
        s = await self._ensure()
        await self._call(s.delete_folder, name)

    async def subscribe(self, name: str) -> None:
        s = await self._ensure()
        await self._call(s.subscribe, name, True)

    async def unsubscribe(self, name: str) -> None:
        s = await self._ensure()
        await self._call(s.subscribe, name, False)

    async def subscribed(self) -> list[Folder]:
        s = await self._ensure()
        return await self._call(s.subscribed)

    async def status(self, name: str) -> FolderStatus:
        s = await self._ensure()
        return await self._call(s.status, name)

    # --- selection and search ---------------------------------------------------------------
    async def select(self, name: str) -> Mailbox:
        s = await self._ensure()
        return await self._call(s.select, name, readonly=False)

    async def examine(self, name: str) -> Mailbox:
        s = await self._ensure()
        return await self._call(s.select, name, readonly=True)

    async def _in(self, mailbox: str | None) -> Session:
        s = await self._ensure()
        if mailbox is not None and (s.selected is None or s.selected.name != mailbox):
            await self._call(s.select, mailbox)
        if s.selected is None:
            raise ConfigError("no mailbox selected: pass mailbox= or call select() first")
        return s

    async def search(self, query: Q | str | None = None, *, mailbox: str | None = None) -> list[int]:
        """UIDs matching ``query`` (``Q`` builder, or raw IMAP criteria text; default all)."""
        s = await self._in(mailbox)
        return await self._call(s.search, query)

    # --- fetch ------------------------------------------------------------------------------
    async def fetch(self, uids: Iterable[int], **options: Any) -> AsyncGenerator[Message, None]:
        """Messages in UID order, fetched in batches of at most ``batch_size`` messages and
        ``batch_bytes`` bytes; bodies over ``stream_over`` bytes are streamed to a file
        (``Message.body_path``, in ``spool_dir`` or the temp dir) instead of held in memory.

        Options: ``mailbox``, ``flags``, ``size``, ``envelope``, ``headers``, ``bodystructure``,
        ``body``, ``part`` (e.g. ``"1.2"``), ``internal_date``, ``batch_size``, ``batch_bytes``,
        ``stream_over``, ``spool_dir`` (see ``fetch_batches``).
        """
        async with contextlib.aclosing(self.fetch_batches(uids, **options)) as stream:
            async for batch in stream:
                for message in batch:
                    yield message

    async def fetch_batches(
        self,
        uids: Iterable[int],
        *,
        mailbox: str | None = None,
        flags: bool = True,
        size: bool = True,
        envelope: bool = False,
        headers: bool = False,
        bodystructure: bool = False,
        body: bool = False,
        part: str | None = None,
        internal_date: bool = False,
        batch_size: int = 500,
        batch_bytes: int = 16 << 20,
        stream_over: int = 8 << 20,
        spool_dir: str | os.PathLike[str] | None = None,
    ) -> AsyncGenerator[list[Message], None]:
        """``fetch`` one batch at a time (what the blocking face iterates, one hop per batch)."""
        spec = FetchSpec(
            flags=flags, size=size, envelope=envelope, headers=headers,
            bodystructure=bodystructure, body=body, part=part, internal_date=internal_date,
        )  # fmt: skip
        if batch_size < 1 or batch_bytes < 1:
            raise ConfigError("batch_size and batch_bytes must be positive")
        s = await self._in(mailbox)
        uid_list = sorted(set(uids))
        spool = None if spool_dir is None else os.fspath(spool_dir)
        if not spec.wants_data:
            step = batch_size * 4
            groups = [uid_list[i : i + step] for i in range(0, len(uid_list), step)]
            async with contextlib.aclosing(self._fetch_groups(s, groups, spec)) as fetching:
                async for messages in fetching:
                    yield messages
            return
        groups = await self._call(_fetch_plan, s, uid_list, batch_size, batch_bytes)
        # closed here, not whenever the collector finds it: stopping early drops the batches in flight now
        fetching = self._fetch_groups(s, groups, spec, spool_dir=spool, stream_over=stream_over)
        async with contextlib.aclosing(fetching):
            async for messages in fetching:
                yield messages

    async def _fetch_groups(
        self, s: Session, groups: list[list[int]], spec: FetchSpec, **options: Any
    ) -> AsyncGenerator[list[Message], None]:
        """Each group's messages, keeping the connection busy while the consumer works.

        The next group is read on the worker thread while this one is handed out, and the one
        after it is already requested (``then=``): neither the server nor the worker waits for
        the consumer. Memory: two groups held, one more in the socket buffers at most (read into
        memory too when another command needs the connection meanwhile).
        """

        def start(i: int) -> asyncio.Future[list[Message]] | None:
            if i >= len(groups):
                return None
            then = groups[i + 1] if i + 1 < len(groups) else None
            return asyncio.ensure_future(self._call(s.fetch, groups[i], spec, then=then, **options))

        pending = start(0)
        try:
            for i in range(len(groups)):
                assert pending is not None
                messages = await pending
                pending = start(i + 1)
                yield messages
        finally:
            if pending is not None:
                # stopped early: let the group being read finish, so the connection stays in
                # step, and drop it (with any bodies streamed to files) and the one requested
                try:
                    with contextlib.suppress(Exception):
                        discard_messages(await pending)
                except BaseException:
                    pending.cancel()
                    raise
                if not s.broken:
                    with contextlib.suppress(Exception):
                        await self._call(s.drop_ahead)

    async def fetch_one(self, uid: int, *, mailbox: str | None = None, **what: Any) -> Message:
        async for message in self.fetch([uid], mailbox=mailbox, **what):
            return message
        raise ConfigError(f"no message with UID {uid} in the mailbox")

    # --- changing messages ------------------------------------------------------------------
    async def add_flags(
        self, uids: Iterable[int], flags: Iterable[str] | str, *, mailbox: str | None = None
    ) -> None:
        s = await self._in(mailbox)
        await self._call(s.store_flags, list(uids), flags, "add")

    async def remove_flags(
        self, uids: Iterable[int], flags: Iterable[str] | str, *, mailbox: str | None = None
    ) -> None:
        s = await self._in(mailbox)
        await self._call(s.store_flags, list(uids), flags, "remove")

    async def set_flags(
        self, uids: Iterable[int], flags: Iterable[str] | str, *, mailbox: str | None = None
    ) -> None:
        s = await self._in(mailbox)
        await self._call(s.store_flags, list(uids), flags, "set")

    async def copy(self, uids: Iterable[int], destination: str, *, mailbox: str | None = None) -> None:
        s = await self._in(mailbox)
        await self._call(s.copy, list(uids), destination)

    async def move(self, uids: Iterable[int], destination: str, *, mailbox: str | None = None) -> None:
        """MOVE, or COPY + UID EXPUNGE of exactly these UIDs (UIDPLUS); never a plain EXPUNGE."""
        s = await self._in(mailbox)
        await self._call(s.move, list(uids), destination)

    async def delete(self, uids: Iterable[int], *, mailbox: str | None = None) -> None:
        """Mark \\Deleted and UID EXPUNGE exactly these UIDs (needs UIDPLUS)."""
        s = await self._in(mailbox)
        await self._call(s.expunge_uids, list(uids))

    async def append(
        self,
        mailbox: str,
        raw: bytes,
        *,
        flags: Iterable[str] = (),
        date: datetime | None = None,
    ) -> int | None:
        """Store a message; returns its UID when the server has UIDPLUS, else None."""
        if not isinstance(raw, (bytes, bytearray)):
            raise ConfigError("append() takes the message as bytes")
        s = await self._ensure()
        return await self._call(s.append, mailbox, bytes(raw), flags=list(flags), date=date)

    async def save_sent(self, raw: bytes, *, date: datetime | None = None) -> tuple[str, int | None]:
        """Append a sent message to the Sent folder (found by special use), marked \\Seen."""
        folder = await self.find_folder(SpecialUse.SENT)
        if folder is None:
            raise ConfigError("this account has no Sent folder (no \\Sent special use or usual name)")
        uid = await self.append(folder.name, raw, flags=["\\Seen"], date=date)
        return folder.name, uid

    # --- sync -------------------------------------------------------------------------------
    async def sync(self, mailbox: str, **options: Any) -> AsyncGenerator[Change, None]:
        """Changes since the last run: vanished, flag changes, then new messages (UID order).

        ``into=`` mirrors into a Maildir (each message durable before its change is handed
        out). ``bodies=True`` (without ``into``) puts the message bytes in ``Change.raw``.
        The state advances for a change once the consumer asks for the next one; the
        watermarks only after the last. A UIDVALIDITY change yields a ``reset`` change and
        re-baselines (``on_uidvalidity="error"`` raises StateError instead); local copies are
        never deleted by stale UIDs.

        Options: ``state`` (path or SyncState), ``into``, ``bodies``, ``on_uidvalidity``,
        ``batch_size``, ``batch_bytes``, ``stream_over``, ``fsync``, ``on_progress``.
        """
        async for batch in self.sync_batches(mailbox, **options):
            for change, commit in batch:
                yield change
                commit()

    async def sync_with(
        self,
        mailbox: str,
        handler: Callable[[Change], object | Awaitable[object]],
        **options: Any,
    ) -> int:
        """Run ``sync`` calling ``handler(change)`` for each change; return how many there were.

        A change is recorded in the state only after its handler returned (an exception from
        the handler stops the run with that change not recorded: it comes again next time).
        """
        count = 0
        async for batch in self.sync_batches(mailbox, **options):
            for change, commit in batch:
                result = handler(change)
                if inspect.isawaitable(result):
                    await result
                commit()
                count += 1
        return count

    async def sync_batches(
        self,
        mailbox: str,
        *,
        state: SyncState | str | os.PathLike[str] = "mailkit-sync.db",
        into: str | os.PathLike[str] | None = None,
        bodies: bool = False,
        on_uidvalidity: UidValidityPolicy = "rebaseline",
        batch_size: int = 500,
        batch_bytes: int = 16 << 20,
        stream_over: int = 8 << 20,
        fsync: bool = True,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> AsyncGenerator[list[tuple[Change, Commit]], None]:
        """``sync`` in batches of (change, commit): run each commit once its change is handled,
        all of a batch's before asking for the next batch (what ``sync`` and the blocking face do).
        """
        if on_uidvalidity not in ("rebaseline", "error"):
            raise ConfigError("on_uidvalidity must be 'rebaseline' or 'error'")
        own_state = not isinstance(state, SyncState)
        st = SyncState(state, account=self._account.address) if own_state else state  # type: ignore[arg-type]
        assert isinstance(st, SyncState)
        st.open()
        mirror = MaildirMirror(into, fsync=fsync) if into is not None else None
        try:
            if mirror is not None:
                mirror.create()
            s = await self._ensure()
            plan = await self._call(make_plan, s, st, mailbox)
            async for batch in self._deliver_batches(
                s, st, plan, mirror, bodies=bodies, policy=on_uidvalidity,
                batch_size=batch_size, batch_bytes=batch_bytes, stream_over=stream_over,
                on_progress=on_progress,
            ):  # fmt: skip
                yield batch
        finally:
            if own_state:
                st.close()

    async def _deliver(self, *args: Any, **kw: Any) -> AsyncGenerator[Change, None]:
        """``_deliver_batches`` flattened: each change's state write runs once it was taken."""
        async for batch in self._deliver_batches(*args, **kw):
            for change, commit in batch:
                yield change
                commit()

    async def _deliver_batches(
        self,
        s: Session,
        st: SyncState,
        plan: Plan,
        mirror: MaildirMirror | None,
        *,
        bodies: bool,
        policy: UidValidityPolicy,
        batch_size: int,
        batch_bytes: int,
        stream_over: int,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> AsyncGenerator[list[tuple[Change, Commit]], None]:
        """Changes in batches, each with the state write to run once the consumer has taken it.

        The consumer runs every commit of a batch before asking for the next batch; the
        watermarks are written after the last. Batches keep the blocking face to one thread hop
        per batch instead of per change, with the same per-change guarantee.
        """
        mb = plan.mailbox
        name, v = mb.name, mb.uidvalidity
        if plan.reset_from is not None:
            if policy == "error":
                raise StateError(
                    f"{name}: UIDVALIDITY changed from {plan.reset_from} to {v}; saved UIDs are void"
                )
            yield [(Change(ChangeKind.RESET, name, uidvalidity=v), functools.partial(st.reset, name, v))]
        elif st.mailbox(name) is None:
            st.reset(name, v)  # first run: record the UIDVALIDITY before anything is handed out

        if plan.vanished:
            if mirror is not None:
                hints = {uid: st.path_of(name, uid) for uid in plan.vanished}
                await self._call(_remove_all, mirror, v, hints)
            yield [
                (
                    Change(ChangeKind.VANISHED, name, uid=uid, uidvalidity=v),
                    functools.partial(st.forget, name, uid),
                )
                for uid in plan.vanished
            ]

        if plan.flags:
            paths: dict[int, str | None] = {}
            if mirror is not None:
                hints = {uid: st.path_of(name, uid) for uid, _ in plan.flags}
                paths = await self._call(_rename_all, mirror, v, plan.flags, hints)
            yield [
                (
                    Change(
                        ChangeKind.FLAGS,
                        name,
                        uid=uid,
                        flags=flags,
                        uidvalidity=v,
                        path=_abs(mirror, paths.get(uid)),
                    ),
                    functools.partial(st.put, name, uid, flags, paths.get(uid) or None),
                )
                for uid, flags in plan.flags
            ]

        total = len(plan.new)
        progress = _Progress(on_progress, total)
        if plan.new and (mirror is not None or bodies):
            spec = FetchSpec(flags=True, size=True, body=True)
            spool = mirror.tmp if mirror is not None else None
            groups = list(batches(plan.new, count=batch_size, size=batch_bytes))

            def start(i: int) -> asyncio.Future[list[tuple[Message, str | None]]] | None:
                if i >= len(groups):
                    return None
                uids = [r[0] for r in groups[i]]
                return asyncio.ensure_future(
                    self._call(_fetch_store, s, uids, spec, mirror, v, spool, stream_over)
                )

            # The next batch is fetched (and written, fsynced) while the consumer takes this
            # one's changes. Writing ahead is safe: the state only advances as changes are taken,
            # and a message written twice lands in the same file.
            pending = start(0)
            try:
                for i in range(len(groups)):
                    assert pending is not None
                    msgs = await pending
                    pending = start(i + 1)
                    out: list[tuple[Change, Commit]] = []
                    for msg, path in msgs:
                        flags = stable_flags(msg.flags or ())
                        change = Change(
                            ChangeKind.NEW, name, uid=msg.uid, flags=flags, size=msg.size,
                            uidvalidity=v, path=_abs(mirror, path),
                            raw=msg.body if mirror is None else None,
                        )  # fmt: skip
                        out.append((change, functools.partial(progress.put, st, name, msg.uid, flags, path)))
                    yield out
            finally:
                if pending is not None and not pending.done():
                    # stopped early: let the batch in flight finish so the connection stays usable
                    try:
                        with contextlib.suppress(Exception):
                            await pending
                    except BaseException:
                        pending.cancel()
                        raise
        else:
            for i in range(0, total, 1000):
                yield [
                    (
                        Change(ChangeKind.NEW, name, uid=uid, flags=flags, size=size, uidvalidity=v),
                        functools.partial(progress.put, st, name, uid, flags, None),
                    )
                    for uid, size, flags in plan.new[i : i + 1000]
                ]
        if plan.mode != "unchanged":  # nothing to advance; saves a count over every known UID
            st.set_mailbox(name, v, mb.uidnext, mb.highestmodseq)

    # --- watch (IDLE) -----------------------------------------------------------------------
    async def watch(
        self,
        mailbox: str = "INBOX",
        *,
        reissue_after: float = 25 * 60,
        heartbeat: float = 120.0,
        backoff: tuple[float, float] = (0.5, 60.0),
        bodies: bool = False,
    ) -> AsyncGenerator[Change, None]:
        """Changes to ``mailbox`` as they happen (IDLE), forever.

        IDLE is re-issued every ``reissue_after`` seconds (servers drop it after 30 min); when
        nothing arrives for ``heartbeat`` seconds the connection is checked (DONE and NOOP must be
        answered within the command timeout), so a link that died silently is found within
        ``heartbeat`` plus that timeout. A lost connection is replaced, with exponential backoff,
        and what happened meanwhile is caught up by comparing with the last seen state, so no
        change is lost or repeated across a reconnect. Closing this IMAP session (or its account),
        from any thread, ends the iteration: IDLE is left, the session logs out.
        """
        if not 0 < reissue_after <= 29 * 60:
            raise ConfigError("reissue_after must be within (0, 1740] seconds (RFC 2177)")
        st = SyncState(None).open()
        delay = backoff[0]
        first = True
        try:
            while not self._closed:
                try:
                    s = await self._ensure_reconnected()
                    plan = await self._call(make_plan, s, st, mailbox)
                    # The first round is the baseline: remember what is there without reporting it.
                    # Closed on the spot when the consumer stops, so no fetch is left in flight.
                    delivering = self._deliver(
                        s, st, plan, None, bodies=bodies and not first, policy="rebaseline",
                        batch_size=500, batch_bytes=16 << 20, stream_over=8 << 20,
                    )  # fmt: skip
                    async with contextlib.aclosing(delivering):
                        async for change in delivering:
                            if not first:
                                yield change
                    first = False
                    delay = backoff[0]
                    stop = threading.Event()
                    try:
                        halt = functools.partial(self._stop_watching, stop)
                        await self._call(_idle_until_event, s, halt, reissue_after, heartbeat, timeout=None)
                    finally:
                        stop.set()
                except (MailkitError, OSError) as exc:
                    if self._closed:
                        return  # closed under us: the errors of the cut connection mean nothing
                    if not isinstance(exc, _RECONNECT) or isinstance(exc, CertificateError):
                        raise  # not the network (e.g. refused credentials, another certificate)
                    # The network or the server went away (a handshake cut short is a TLSError):
                    # the mailbox is still there, so try again, less and less often.
                    log.info("IMAP watch: connection lost (%s); reconnecting in %.1f s", exc, delay)
                    if self._session is not None:
                        self._session.shutdown()
                    await self._pause(delay)
                    delay = min(delay * 2, backoff[1])
        finally:
            st.close()

    def _stop_watching(self, stop: threading.Event) -> bool:
        """Read by the IDLE thread once a second: stop idling when told to or when closed."""
        return stop.is_set() or self._closed

    async def _pause(self, seconds: float) -> None:
        """Sleep between reconnects, waking early when the session is closed."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while not self._closed and (left := end - loop.time()) > 0:
            await asyncio.sleep(min(left, 0.1))

    async def _ensure_reconnected(self) -> Session:
        if self._session is None or self._session.broken:
            self._session = None
            await self.connect()
        return self.session


class _Progress:
    """Records a new message in the state and reports progress (the commit of a NEW change)."""

    def __init__(self, callback: Callable[[int, int], None] | None, total: int) -> None:
        self.callback, self.total, self.done = callback, total, 0

    def put(self, st: SyncState, name: str, uid: int, flags: tuple[str, ...], path: str | None) -> None:
        st.put(name, uid, flags, path)
        self.done += 1
        if self.callback is not None:
            self.callback(self.done, self.total)


def _fetch_plan(s: Session, uids: list[int], count: int, size: int) -> list[list[int]]:
    """UID groups of at most ``count`` messages and ``size`` bytes, in UID order (worker thread).

    Only messages that could break the byte bound are sized: a group of ``count`` messages of
    at most ``size // count`` bytes fits, so one ``UID SEARCH UID ... LARGER size//count`` per
    5,000 UIDs finds the others, and only those are asked for their RFC822.SIZE. Most mail is
    small: far cheaper than a size per message (a tenth of the time for 10,000 small ones).
    """
    from . import _wire

    bound = size // count
    rows: list[tuple[int, int, tuple[str, ...]]] = []
    for i in range(0, len(uids), 5000):
        chunk = uids[i : i + 5000]
        big = set(s.search(Q.uid(chunk) & Q.larger(bound))) if bound > 0 else set(chunk)
        sizes: dict[int, int] = {}
        if big:
            listed = sorted(big.intersection(chunk))
            sets = [_wire.sequence_set(listed[j : j + 1000]) for j in range(0, len(listed), 1000)]
            sizes = {uid: n for uid, n, _flags in s.sizes(sets)}
        for uid in chunk:
            if uid not in big:
                rows.append((uid, bound, ()))
            elif uid in sizes:  # a big one the server no longer has is not asked for
                rows.append((uid, sizes[uid], ()))
    return [[r[0] for r in batch] for batch in batches(rows, count=count, size=size)]


def _sum(*values: float | None) -> float | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


builtins_timeout = (asyncio.TimeoutError, concurrent.futures.TimeoutError)


def _abs(mirror: MaildirMirror | None, rel: str | None) -> str | None:
    return None if mirror is None or not rel else str(mirror.root / rel)


def _remove_all(mirror: MaildirMirror, v: int, hints: dict[int, str | None]) -> None:
    for uid, hint in hints.items():
        mirror.remove(v, uid, hint)
    mirror.flush()


def _rename_all(
    mirror: MaildirMirror,
    v: int,
    changes: list[tuple[int, tuple[str, ...]]],
    hints: dict[int, str | None],
) -> dict[int, str | None]:
    out: dict[int, str | None] = {}
    for uid, flags in changes:
        out[uid] = mirror.set_flags(v, uid, flags, hints.get(uid)) or None
    mirror.flush()
    return out


def _fetch_store(
    s: Session,
    uids: list[int],
    spec: FetchSpec,
    mirror: MaildirMirror | None,
    v: int,
    spool: str | None,
    stream_over: int,
) -> list[tuple[Message, str | None]]:
    """Fetch one batch and (when mirroring) store it durably: files fsynced, then directories."""
    msgs = s.fetch(uids, spec, spool_dir=spool, stream_over=stream_over)
    if mirror is None:
        return [(msg, None) for msg in msgs]
    paths = mirror.add_many(v, [(m.uid, tuple(m.flags or ()), m.body, m.body_path) for m in msgs])
    mirror.flush()
    # the bytes are on disk now: do not keep them in memory while the changes are handed out
    return [
        (Message(uid=m.uid, flags=m.flags, size=m.size), path) for m, path in zip(msgs, paths, strict=True)
    ]


# What a lost or dying connection raises; a reconnect may help.
_RECONNECT = (ConnectionLost, ProtocolError, TimeoutError, OSError, TLSError)


def _idle_until_event(s: Session, stop: Callable[[], bool], reissue_after: float, heartbeat: float) -> None:
    """IDLE until the server reports something, it is time to re-issue, or ``stop()``; check liveness."""
    client = s.client
    deadline = time.monotonic() + reissue_after
    quiet_since = time.monotonic()
    with _idle_errors(s):
        # Updates the server sends before its "+ idling" are swallowed by imaplib into
        # untagged_responses: clear them first and look at them after, or a change made
        # between our last check and IDLE would wait for the next one.
        imap = client._imap
        untagged = imap.untagged_responses
        for key in _CHANGE_KEYS:
            untagged.pop(key, None)
        # imapclient.idle() refuses untagged data before "+ idling"; servers send pending
        # updates exactly there, so start IDLE here and accept them.
        client._idle_tag = imap._command("IDLE")
        while imap._get_response() is not None:
            if imap.tagged_commands.get(client._idle_tag):
                raise ProtocolError("the server ended IDLE before accepting it")
        early = _buffered_responses(client)
        if any(key in untagged for key in _CHANGE_KEYS) or any(_is_change(r) for r in early):
            client.idle_done()
            return
        try:
            while not stop():
                responses = client.idle_check(timeout=1.0)
                if s.broken or (not responses and _peer_closed(client.socket())):
                    # imapclient's idle_check swallows EOF and returns []; find out ourselves.
                    s.shutdown()
                    raise ConnectionLost("IMAP connection closed during IDLE")
                now = time.monotonic()
                if any(_is_change(r) for r in responses):
                    return
                if responses:
                    quiet_since = now
                if now >= deadline or now - quiet_since >= heartbeat:
                    break
        finally:
            if not s.broken:
                client.idle_done()
        if time.monotonic() - quiet_since >= heartbeat:
            client.noop()  # proves the connection is alive (times out if it is not)


def _buffered_responses(client: Any) -> list[Any]:
    """Untagged responses imaplib has already read from the socket but nobody has parsed.

    Servers send "+ idling" and the updates pending since the last command in one write (Dovecot
    does), so imaplib reads them together. imapclient's idle_check waits for the socket to become
    readable, which bytes already in imaplib's buffer never make it: they would wait there for the
    next packet from the server, a heartbeat later.
    """
    imap = client._imap
    sock = client.socket()
    timeout = sock.gettimeout()
    sock.setblocking(False)  # a peek at an empty buffer tries one read: it must not wait
    responses = []
    try:
        while b"\n" in _peek(imap.file):
            line = imap._get_line()
            if not line.startswith(b"* "):
                raise ProtocolError(f"IMAP: unexpected line during IDLE: {line[:100]!r}")
            responses.append(parse_untagged_response(line))
    finally:
        sock.settimeout(timeout)
    return responses


def _peek(file: Any) -> bytes:
    try:
        return bytes(file.peek(1))
    except (BlockingIOError, ssl.SSLWantReadError):
        return b""


def _peer_closed(sock: Any) -> bool:
    """True when the peer closed or reset the connection (FIN, RST or error) — without reading."""
    poller = select.poll()
    hangup = select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)
    try:
        poller.register(sock.fileno(), select.POLLIN | hangup)
    except (OSError, ValueError):
        return True  # the socket is already closed
    return any(events & hangup for _, events in poller.poll(0))


_CHANGE_KEYS = ("EXISTS", "EXPUNGE", "FETCH", "VANISHED")


def _is_change(response: Any) -> bool:
    if isinstance(response, tuple) and len(response) >= 2:
        name = response[1]
        return isinstance(name, bytes) and name.upper() in (b"EXISTS", b"EXPUNGE", b"FETCH", b"VANISHED")
    return False


@contextlib.contextmanager
def _idle_errors(s: Session) -> Iterator[None]:
    from ._session import _translated

    try:
        with _translated("IDLE"):
            yield
    except (ConnectionLost, ProtocolError, TimeoutError):
        s.shutdown()
        raise


class IMAP:
    """The blocking face of ``AsyncIMAP``: same methods, no ``await``."""

    def __init__(self, async_imap: AsyncIMAP, portal: Portal) -> None:
        self._async = async_imap
        self._portal = portal

    def __enter__(self) -> IMAP:
        self._portal.call(self._async.connect())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._portal.call(self._async.aclose())

    @property
    def async_imap(self) -> AsyncIMAP:
        return self._async

    @property
    def capabilities(self) -> frozenset[str]:
        return self._async.capabilities

    def folders(self, pattern: str = "*") -> list[Folder]:
        return self._portal.call(self._async.folders(pattern))

    def find_folder(self, role: SpecialUse | str) -> Folder | None:
        return self._portal.call(self._async.find_folder(role))

    def create_folder(self, name: str) -> None:
        self._portal.call(self._async.create_folder(name))

    def rename_folder(self, old: str, new: str) -> None:
        self._portal.call(self._async.rename_folder(old, new))

    def delete_folder(self, name: str) -> None:
        self._portal.call(self._async.delete_folder(name))

    def subscribe(self, name: str) -> None:
        self._portal.call(self._async.subscribe(name))

    def unsubscribe(self, name: str) -> None:
        self._portal.call(self._async.unsubscribe(name))

    def subscribed(self) -> list[Folder]:
        return self._portal.call(self._async.subscribed())

    def status(self, name: str) -> FolderStatus:
        return self._portal.call(self._async.status(name))

    def select(self, name: str) -> Mailbox:
        return self._portal.call(self._async.select(name))

    def examine(self, name: str) -> Mailbox:
        return self._portal.call(self._async.examine(name))

    def search(self, query: Q | str | None = None, *, mailbox: str | None = None) -> list[int]:
        return self._portal.call(self._async.search(query, mailbox=mailbox))

    def fetch(self, uids: Iterable[int], **options: Any) -> Iterator[Message]:
        for batch in self._portal.iterate(self._async.fetch_batches(uids, **options)):
            yield from batch

    def fetch_one(self, uid: int, **options: Any) -> Message:
        return self._portal.call(self._async.fetch_one(uid, **options))

    def add_flags(
        self, uids: Iterable[int], flags: Iterable[str] | str, *, mailbox: str | None = None
    ) -> None:
        self._portal.call(self._async.add_flags(uids, flags, mailbox=mailbox))

    def remove_flags(
        self, uids: Iterable[int], flags: Iterable[str] | str, *, mailbox: str | None = None
    ) -> None:
        self._portal.call(self._async.remove_flags(uids, flags, mailbox=mailbox))

    def set_flags(
        self, uids: Iterable[int], flags: Iterable[str] | str, *, mailbox: str | None = None
    ) -> None:
        self._portal.call(self._async.set_flags(uids, flags, mailbox=mailbox))

    def copy(self, uids: Iterable[int], destination: str, *, mailbox: str | None = None) -> None:
        self._portal.call(self._async.copy(uids, destination, mailbox=mailbox))

    def move(self, uids: Iterable[int], destination: str, *, mailbox: str | None = None) -> None:
        self._portal.call(self._async.move(uids, destination, mailbox=mailbox))

    def delete(self, uids: Iterable[int], *, mailbox: str | None = None) -> None:
        self._portal.call(self._async.delete(uids, mailbox=mailbox))

    def append(
        self, mailbox: str, raw: bytes, *, flags: Iterable[str] = (), date: datetime | None = None
    ) -> int | None:
        return self._portal.call(self._async.append(mailbox, raw, flags=flags, date=date))

    def save_sent(self, raw: bytes, *, date: datetime | None = None) -> tuple[str, int | None]:
        return self._portal.call(self._async.save_sent(raw, date=date))

    def sync(self, mailbox: str, **options: Any) -> Iterator[Change]:
        # One thread hop per batch; each change's state write still runs only once it was taken.
        for batch in self._portal.iterate(self._async.sync_batches(mailbox, **options)):
            for change, commit in batch:
                yield change
                commit()

    def sync_with(self, mailbox: str, handler: Callable[[Change], object], **options: Any) -> int:
        count = 0
        for change in self.sync(mailbox, **options):
            handler(change)  # the change is recorded when the loop moves on: after the handler
            count += 1
        return count

    def watch(self, mailbox: str = "INBOX", **options: Any) -> Iterator[Change]:
        """``AsyncIMAP.watch``, blocking. To stop: break out of the loop (the session stays usable),
        or close this IMAP session or its account from another thread (the loop then just ends)."""
        return self._portal.iterate(self._async.watch(mailbox, **options))
