"""The download engine's ordering rule against an in-memory maildrop (no sockets).

The fake client answers like RFC 1939 (DELE only marks; QUIT commits) and writes every step into a
shared journal with the sink and the state, so the tests can check the order: saved -> recorded
-> DELE -> QUIT, for every message.
"""

from __future__ import annotations

import asyncio
import errno
import types
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from mailkit.errors import ConfigError, ConnectionLost, StateError, TransientError
from mailkit.pop3._protocol import BodyChunk, Command, Response
from mailkit.pop3._state import UIDLState
from mailkit.pop3.client import _QUEUE_HIGH, _Receiver
from mailkit.pop3.download import Progress, download
from mailkit.pop3.sinks import CallbackSink, MaildirSink, MessageInfo, Sink, SinkStream, as_sink
from mailkit.store.maildir import Maildir


class FakeClient:
    """Just the client surface ``download`` uses, over a dict maildrop."""

    def __init__(
        self,
        drop: dict[str, bytes],
        journal: list[tuple[str, str]],
        *,
        pipelining: bool = True,
        cut_after: int | None = None,
        uidl: bool = True,
    ) -> None:
        self.drop = drop
        self.order = list(drop)  # message n is order[n - 1]
        self.journal = journal
        self.pipelining = pipelining
        self.cut_after = cut_after
        self.uidl = uidl
        self.marked: set[str] = set()
        self.queue: deque[Response] = deque()
        self.answered = 0
        self.max_in_flight = 0
        self.chunk = 7
        self.writes: list[list[str]] = []
        self.unread: deque[Response | BodyChunk] = deque()

    def _answer(self, c: Command) -> Response:
        if c.verb == "UIDL":
            if not self.uidl:
                return Response(c, False, "no UIDL here")
            body = b"".join(b"%d %s\r\n" % (i + 1, u.encode()) for i, u in enumerate(self.order))
            return Response(c, True, "", body)
        if c.verb == "LIST":
            body = b"".join(b"%d %d\r\n" % (i + 1, len(self.drop[u])) for i, u in enumerate(self.order))
            return Response(c, True, "", body)
        if c.verb == "QUIT":  # pipelined behind the last DELEs
            self.commit()
            return Response(c, True, "bye")
        uid = self.order[int(c.args[0]) - 1]
        if c.verb == "RETR":
            self.journal.append(("RETR", uid))
            return Response(c, True, "", self.drop[uid])
        assert c.verb == "DELE"
        self.journal.append(("DELE", uid))
        self.marked.add(uid)
        return Response(c, True, "marked")

    async def execute_many(self, commands: Sequence[Command], *, check: bool = True) -> list[Response]:
        return [self._answer(c) for c in commands]

    def send(self, commands: Sequence[Command]) -> None:
        self.writes.append([c.verb for c in commands])
        self.queue.extend(self._answer(c) for c in commands)
        self.max_in_flight = max(self.max_in_flight, len(self.queue))
        if not self.pipelining:
            assert len(self.queue) == 1, "sent a command while another was in flight"

    async def response(self) -> Response:
        if self.cut_after is not None and self.answered >= self.cut_after:
            raise ConnectionLost("cut")
        self.answered += 1
        return self.queue.popleft()

    async def events(self) -> list[Response | BodyChunk]:
        """One event per call (the real client may return several): a streamed RETR arrives as
        chunks of ``chunk`` bytes, then its Response without a body; a cut can fall between."""
        if self.cut_after is not None and self.answered >= self.cut_after:
            raise ConnectionLost("cut")
        self.answered += 1
        if not self.unread:
            response = self.queue.popleft()
            command = response.command
            if command is None or not command.stream or not response.ok:
                return [response]
            body = response.body or b""
            self.unread.extend(
                BodyChunk(command, body[i : i + self.chunk]) for i in range(0, len(body), self.chunk)
            )
            self.unread.append(Response(command, True, response.text, None))
        return [self.unread.popleft()]

    async def quit(self) -> None:
        self.commit()

    def commit(self) -> None:
        self.journal.append(("QUIT", ""))
        for uid in self.marked:
            del self.drop[uid]
        self.marked.clear()

    async def close(self) -> None:
        pass


class JournalSink(Sink):
    def __init__(self, journal: list[tuple[str, str]], fail: set[str] | None = None) -> None:
        self.journal = journal
        self.fail = fail or set()
        self.saved: dict[str, bytes] = {}

    async def save(self, raw: bytes, info: MessageInfo) -> str:
        assert info.uidl is not None
        if info.uidl in self.fail:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.journal.append(("SAVE", info.uidl))
        self.saved[info.uidl] = raw
        return f"mem:{info.uidl}"


class StreamingJournalSink(JournalSink):
    """Takes messages piece by piece too; journals OPEN/COMMIT/ABORT and refuses on write when asked."""

    def __init__(self, journal: list[tuple[str, str]], fail: set[str] | None = None) -> None:
        super().__init__(journal, fail)
        self.partial: dict[str, bytes] = {}

    async def open_stream(self, info: MessageInfo) -> SinkStream:
        assert info.uidl is not None
        self.journal.append(("OPEN", info.uidl))
        return JournalStream(self, info.uidl)


class JournalStream(SinkStream):
    def __init__(self, sink: StreamingJournalSink, uidl: str) -> None:
        self.sink, self.uidl = sink, uidl
        sink.partial[uidl] = b""

    async def write(self, data: bytes) -> None:
        if self.uidl in self.sink.fail:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.sink.partial[self.uidl] += data

    async def commit(self) -> str:
        self.sink.journal.append(("SAVE", self.uidl))
        self.sink.saved[self.uidl] = self.sink.partial.pop(self.uidl)
        return f"stream:{self.uidl}"

    async def abort(self) -> None:
        self.sink.journal.append(("ABORT", self.uidl))
        self.sink.partial.pop(self.uidl, None)


_OPENED: list[UIDLState] = []


@pytest.fixture(autouse=True)
def _close_states() -> Iterator[None]:
    """Every JournalState is closed after its test (Python 3.13 warns about unclosed connections)."""
    yield
    while _OPENED:
        _OPENED.pop().close()


class JournalState(UIDLState):
    def __init__(self, journal: list[tuple[str, str]]) -> None:
        super().__init__(":memory:", "tester")
        self.journal = journal
        _OPENED.append(self)

    def record(self, items, now=None):  # type: ignore[no-untyped-def]
        items = list(items)
        self.journal.extend(("RECORD", uid) for uid, _ in items)
        super().record(items, now)


def maildrop(n: int) -> dict[str, bytes]:
    return {f"uid{i:03d}": b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i) for i in range(n)}


def assert_order(journal: list[tuple[str, str]], uid: str) -> None:
    steps = [step for step, u in journal if (u == uid and step != "OPEN") or step == "QUIT"]
    assert steps[:4] == ["RETR", "SAVE", "RECORD", "DELE"], (uid, steps)
    assert "QUIT" in steps[4:]


@pytest.mark.parametrize("pipelining", [True, False])
async def test_every_message_is_saved_and_recorded_before_its_dele(pipelining: bool) -> None:
    journal: list[tuple[str, str]] = []
    drop = maildrop(150)
    original = dict(drop)
    client = FakeClient(drop, journal, pipelining=pipelining)
    sink = JournalSink(journal)
    state = JournalState(journal)
    report = await download(client, sink, state, batch_messages=16)  # type: ignore[arg-type]
    assert sink.saved == original and drop == {}
    assert len(report.downloaded) == 150 and len(report.deleted) == 150 and report.ok
    for uid in original:
        assert_order(journal, uid)
    assert (client.max_in_flight > 1) is pipelining


async def test_a_failing_sink_leaves_its_message_on_the_server() -> None:
    journal: list[tuple[str, str]] = []
    drop = maildrop(5)
    sink = JournalSink(journal, fail={"uid002"})
    report = await download(FakeClient(drop, journal), sink, JournalState(journal))  # type: ignore[arg-type]
    assert list(drop) == ["uid002"]
    assert [e.uidl for e in report.errors] == ["uid002"] and not report.ok
    assert isinstance(report.errors[0].error, OSError) and report.errors[0].error.errno == errno.ENOSPC
    assert ("DELE", "uid002") not in journal and ("RECORD", "uid002") not in journal


async def test_a_cut_before_quit_deletes_nothing_and_the_rerun_does_not_refetch() -> None:
    journal: list[tuple[str, str]] = []
    drop = maildrop(40)
    original = dict(drop)
    sink = JournalSink(journal)
    state = JournalState(journal)
    with pytest.raises(ConnectionLost):
        # 30 of 40 RETRs answered: QUIT (which goes out after the last RETR is saved) never left.
        await download(FakeClient(drop, journal, cut_after=30), sink, state, batch_messages=8)  # type: ignore[arg-type]
    assert ("QUIT", "") not in journal
    assert drop == original  # no QUIT: the server kept everything
    first = dict(sink.saved)
    assert first
    journal.clear()
    report = await download(FakeClient(drop, journal), sink, state)  # type: ignore[arg-type]
    assert drop == {} and sink.saved == original
    refetched = {u for step, u in journal if step == "RETR"}
    assert refetched == set(original) - set(first)  # nothing saved earlier was fetched again
    assert {s.uidl for s in report.downloaded} == refetched
    assert len(report.deleted) == 40


async def test_keep_mode_fetches_each_message_once_and_deletes_after_days() -> None:
    journal: list[tuple[str, str]] = []
    drop = maildrop(10)
    sink = JournalSink(journal)
    state = JournalState(journal)
    t0 = 1_000_000.0
    r1 = await download(FakeClient(drop, journal), sink, state, keep=True, now=t0)  # type: ignore[arg-type]
    assert len(r1.downloaded) == 10 and r1.deleted == () and len(drop) == 10
    drop["uid999"] = b"Subject: late\r\n\r\nnew\r\n"
    r2 = await download(FakeClient(drop, journal), sink, state, keep=True, now=t0)  # type: ignore[arg-type]
    assert [s.uidl for s in r2.downloaded] == ["uid999"]
    assert {s.reason for s in r2.skipped} == {"already saved"} and len(r2.skipped) == 10
    # Records are stamped with the real clock: ten days on, all are old enough.
    later = max(state.saved().values()) + 10 * 86400
    r3 = await download(  # type: ignore[arg-type]
        FakeClient(drop, journal), sink, state, keep=True, delete_after_days=7, now=later
    )
    assert r3.downloaded == () and len(r3.deleted) == 11 and drop == {}


async def test_limits_leave_messages_and_report_them() -> None:
    journal: list[tuple[str, str]] = []
    drop = maildrop(6)
    drop["uidbig"] = b"x" * 5000
    sink = JournalSink(journal)
    report = await download(  # type: ignore[arg-type]
        FakeClient(drop, journal), sink, JournalState(journal), max_messages=4, max_size=1000
    )
    assert len(report.downloaded) == 4
    reasons = sorted(s.reason for s in report.skipped)
    assert reasons == ["max_messages", "max_messages", "too large"]
    assert set(drop) == {"uidbig", "uid004", "uid005"}


async def test_progress_is_reported_per_message() -> None:
    journal: list[tuple[str, str]] = []
    seen: list[tuple[int, int]] = []

    def progress(p: Progress) -> None:
        seen.append((p.done, p.total))

    await download(
        FakeClient(maildrop(5), journal), JournalSink(journal), JournalState(journal), progress=progress
    )  # type: ignore[arg-type]
    assert seen == [(i, 5) for i in range(1, 6)]


async def test_without_uidl_keep_is_refused_and_plain_download_works() -> None:
    journal: list[tuple[str, str]] = []
    from mailkit.errors import CommandError

    with pytest.raises(CommandError, match="UIDL"):
        await download(FakeClient(maildrop(2), journal, uidl=False), JournalSink(journal), None, keep=True)  # type: ignore[arg-type]
    drop = maildrop(3)
    saved: list[bytes] = []
    report = await download(
        FakeClient(drop, journal, uidl=False), CallbackSink(lambda raw, info: saved.append(raw)), None
    )  # type: ignore[arg-type]
    assert len(saved) == 3 and drop == {} and len(report.deleted) == 3


async def test_option_validation() -> None:
    journal: list[tuple[str, str]] = []
    with pytest.raises(ConfigError):
        await download(FakeClient({}, journal), JournalSink(journal), None, delete_after_days=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        await download(FakeClient({}, journal), JournalSink(journal), None, max_messages=-1)  # type: ignore[arg-type]


async def test_callback_sink_async_and_raising() -> None:
    got: list[MessageInfo] = []

    async def keep(raw: bytes, info: MessageInfo) -> str:
        got.append(info)
        return "somewhere"

    info = MessageInfo(1, "u", 3)
    assert await CallbackSink(keep).save(b"abc", info) == "somewhere"
    assert await CallbackSink(lambda raw, i: None, in_thread=True).save(b"abc", info) == "callback:u"

    def refuse(raw: bytes, i: MessageInfo) -> None:
        raise RuntimeError("no thanks")

    [result] = await CallbackSink(refuse).save_many([(b"abc", info)])
    assert isinstance(result, RuntimeError)


def test_as_sink(tmp_path: Path) -> None:
    assert isinstance(as_sink(tmp_path / "md"), MaildirSink)
    assert isinstance(as_sink(str(tmp_path)), MaildirSink)
    assert isinstance(as_sink(Maildir(tmp_path)), MaildirSink)
    assert isinstance(as_sink(lambda raw, info: None), CallbackSink)
    with pytest.raises(ConfigError):
        as_sink(42)  # type: ignore[arg-type]
    assert MaildirSink(tmp_path).default_state() == tmp_path / ".mailkit-pop3.db"


async def test_maildir_sink_reports_a_full_disk_per_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = MaildirSink(tmp_path / "md")
    real_write = __import__("os").write
    calls = {"n": 0}

    def write(fd: int, data: object) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)  # type: ignore[arg-type]

    monkeypatch.setattr("os.write", write)
    items = [
        (b"one\r\n", MessageInfo(1, "a", 5)),
        (b"two\r\n", MessageInfo(2, "b", 5)),
        (b"three\r\n", MessageInfo(3, "c", 7)),
    ]
    results = await sink.save_many(items)
    assert isinstance(results[1], OSError) and results[1].errno == errno.ENOSPC
    assert isinstance(results[0], str) and isinstance(results[2], str)
    assert sorted(p.read_bytes() for p in (tmp_path / "md" / "new").iterdir()) == [b"one\r\n", b"three\r\n"]
    assert list((tmp_path / "md" / "tmp").iterdir()) == []


def test_state_is_per_account_and_forgets_vanished_uidls(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    a = UIDLState(path, "a@host")
    a.record([("u1", "x"), ("u2", "y")], now=5.0)
    b = UIDLState(path, "b@host")
    b.record([("u1", "z")])
    assert a.saved() == {"u1": 5.0, "u2": 5.0}
    assert set(b.saved()) == {"u1"}
    assert a.forget_except(["u2"]) == 1
    a.close()
    again = UIDLState(path, "a@host")
    assert again.saved() == {"u2": 5.0}
    again.close()
    b.close()


def test_corrupt_state_is_a_state_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StateError):
        UIDLState(path, "a").open()


async def test_a_uidl_listed_twice_never_deletes_an_unsaved_message() -> None:
    journal: list[tuple[str, str]] = []
    state = JournalState(journal)
    state.record([("dup", "old copy")])
    client = FakeClient({"dup": b"Subject: a\r\n\r\na\r\n", "dup2": b"Subject: b\r\n\r\nb\r\n"}, journal)
    client.order = ["dup", "dup2"]
    real = client._answer

    def answer(c: Command) -> Response:
        if c.verb == "UIDL":  # a broken server giving both messages the same UIDL
            return Response(c, True, "", b"1 dup\r\n2 dup\r\n")
        return real(c)

    client._answer = answer  # type: ignore[method-assign]
    sink = JournalSink(journal)
    report = await download(client, sink, state)  # type: ignore[arg-type]
    assert len(report.downloaded) == 2  # both fetched, although "dup" was saved before
    assert [step for step, _ in journal if step == "RETR"] == ["RETR", "RETR"]


def mixed_drop() -> dict[str, bytes]:
    """Small messages around big ones (over the 100-byte threshold the tests stream above)."""
    drop = maildrop(6)
    drop["big1"] = b"Subject: big\r\n\r\n" + b"b" * 300 + b"\r\n"
    drop["big2"] = b"Subject: big 2\r\n\r\n" + b"c" * 500 + b"\r\n"
    drop["uid100"] = b"Subject: last\r\n\r\nx\r\n"
    return drop


@pytest.mark.parametrize("pipelining", [True, False])
async def test_big_messages_stream_in_the_same_no_loss_order(pipelining: bool) -> None:
    journal: list[tuple[str, str]] = []
    drop = mixed_drop()
    original = dict(drop)
    sink = StreamingJournalSink(journal)
    client = FakeClient(drop, journal, pipelining=pipelining)
    report = await download(client, sink, JournalState(journal), stream_above=100)  # type: ignore[arg-type]
    assert sink.saved == original and drop == {} and report.ok
    for uid in original:
        assert_order(journal, uid)
    assert [u for step, u in journal if step == "OPEN"] == ["big1", "big2"]  # only those streamed
    assert {s.uidl: s.size for s in report.downloaded}["big2"] == len(original["big2"])
    assert {s.uidl: s.location for s in report.downloaded}["big1"] == "stream:big1"


async def test_a_sink_failing_in_the_middle_of_a_stream_keeps_that_message_only() -> None:
    journal: list[tuple[str, str]] = []
    drop = mixed_drop()
    sink = StreamingJournalSink(journal, fail={"big1"})
    report = await download(FakeClient(drop, journal), sink, JournalState(journal), stream_above=100)  # type: ignore[arg-type]
    assert list(drop) == ["big1"] and [e.uidl for e in report.errors] == ["big1"]
    assert isinstance(report.errors[0].error, OSError)
    assert ("ABORT", "big1") in journal and ("SAVE", "big1") not in journal
    assert ("RECORD", "big1") not in journal and ("DELE", "big1") not in journal
    assert "big2" in sink.saved and sink.partial == {}


async def test_a_cut_at_every_point_of_a_streamed_session_aborts_and_the_rerun_completes() -> None:
    original = mixed_drop()
    for cut in range(0, 200):
        journal: list[tuple[str, str]] = []
        drop = dict(original)
        sink = StreamingJournalSink(journal)
        state = JournalState(journal)
        client = FakeClient(drop, journal, cut_after=cut)
        try:
            await download(client, sink, state, stream_above=100)  # type: ignore[arg-type]
        except ConnectionLost:
            if ("QUIT", "") not in journal:
                assert drop == original  # no QUIT: nothing deleted
            # QUIT pipelined behind the last DELEs may reach the server before the cut: then
            # only what was saved and recorded is gone.
            gone = set(original) - set(drop)
            assert gone <= set(sink.saved) and all(("RECORD", u) in journal for u in gone)
            assert sink.partial == {}  # a stream cut in the middle was aborted
            opened = [u for step, u in journal if step == "OPEN"]
            finished = [u for step, u in journal if step in ("SAVE", "ABORT") and u in opened]
            assert sorted(opened) == sorted(finished)
            await download(FakeClient(drop, journal), sink, state, stream_above=100)  # type: ignore[arg-type]
            assert drop == {} and sink.saved == original
        else:
            assert cut > 20 and drop == {} and sink.saved == original
            return
    pytest.fail("no run completed")


async def test_sinks_that_cannot_stream_get_big_messages_whole() -> None:
    journal: list[tuple[str, str]] = []
    drop = mixed_drop()
    original = dict(drop)
    sink = JournalSink(journal)
    assert not sink.streams and StreamingJournalSink(journal).streams and MaildirSink("x").streams
    report = await download(FakeClient(drop, journal), sink, JournalState(journal), stream_above=100)  # type: ignore[arg-type]
    assert sink.saved == original and report.ok and ("OPEN", "big1") not in journal


async def test_quit_goes_out_with_the_last_deles_when_pipelining_and_its_error_is_raised() -> None:
    journal: list[tuple[str, str]] = []
    drop = maildrop(20)
    client = FakeClient(drop, journal)
    report = await download(client, JournalSink(journal), JournalState(journal), batch_messages=8)  # type: ignore[arg-type]
    assert drop == {} and len(report.deleted) == 20
    last = client.writes[-1]
    assert last[-1] == "QUIT" and set(last[:-1]) == {"DELE"} and len(last) > 1
    assert journal.index(("QUIT", "")) > max(i for i, (step, _) in enumerate(journal) if step == "RECORD")

    class RefusingQuit(FakeClient):
        def _answer(self, c: Command) -> Response:
            if c.verb == "QUIT":
                return Response(c, False, "[SYS/TEMP] could not expunge")
            return super()._answer(c)

    with pytest.raises(TransientError) as info:
        await download(RefusingQuit(maildrop(3), []), JournalSink([]), JournalState([]))  # type: ignore[arg-type]
    assert info.value.reply is not None and "expunge" in info.value.reply.text


@pytest.mark.parametrize("pipelining", [True, False])
async def test_a_run_forgets_uidls_the_server_no_longer_lists(pipelining: bool) -> None:
    journal: list[tuple[str, str]] = []
    state = JournalState(journal)
    state.record([("gone-for-good", "mem:x")])
    drop = maildrop(3)
    await download(FakeClient(drop, journal, pipelining=pipelining), JournalSink(journal), state)  # type: ignore[arg-type]
    assert drop == {}
    assert set(state.saved()) == {"uid000", "uid001", "uid002"}  # listed in this run: kept


# -- the client's receiver (what replaces the StreamReader once a session is set up) --------------


class _FakeTransport:
    def __init__(self) -> None:
        self.inner = _FakeInner()
        self.protocol: object = self.inner
        self.calls: list[str] = []

    def get_protocol(self) -> object:
        return self.protocol

    def set_protocol(self, protocol: object) -> None:
        self.protocol = protocol

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")


class _FakeInner:
    def __init__(self) -> None:
        self.calls: list[object] = []

    def eof_received(self) -> bool:
        self.calls.append("eof")
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append(("lost", exc))

    def pause_writing(self) -> None:
        self.calls.append("pause_writing")

    def resume_writing(self) -> None:
        self.calls.append("resume_writing")


def _receiver() -> tuple[_Receiver, _FakeTransport]:
    transport = _FakeTransport()
    stream = types.SimpleNamespace(writer=types.SimpleNamespace(transport=transport))
    receiver = _Receiver(stream)  # type: ignore[arg-type]
    receiver.install(asyncio.StreamReader())
    assert transport.protocol is receiver
    return receiver, transport


def _arrive(receiver: _Receiver, data: bytes) -> None:
    buffer = receiver.get_buffer(-1)
    buffer[: len(data)] = data
    receiver.buffer_updated(len(data))


async def test_receiver_pauses_the_transport_over_its_queue_limit_and_resumes_on_read() -> None:
    receiver, transport = _receiver()
    piece = bytes(range(256)) * 1024
    sent = []
    while "pause" not in transport.calls:
        sent.append(piece)
        _arrive(receiver, piece)
        assert len(sent) * len(piece) <= _QUEUE_HIGH + len(piece)
    # The buffer is reused: what was queued is a copy, intact, given back piece by piece; reading
    # resumes once half the queue has been taken.
    got = [await receiver.read()]
    assert transport.calls == ["pause"]
    while len(got) < len(sent):
        got.append(await receiver.read())
    assert got == sent
    assert transport.calls == ["pause", "resume"]


async def test_receiver_gives_data_before_the_error_and_forwards_the_rest() -> None:
    receiver, transport = _receiver()
    _arrive(receiver, b"+OK partial\r\n")
    error = ConnectionResetError("reset")
    receiver.connection_lost(error)
    receiver.pause_writing()
    assert await receiver.read() == b"+OK partial\r\n"
    with pytest.raises(ConnectionResetError):
        await receiver.read()
    assert transport.inner.calls == [("lost", error), "pause_writing"]


async def test_receiver_wakes_a_waiting_read_and_ends_with_eof() -> None:
    receiver, transport = _receiver()
    waiting = asyncio.ensure_future(receiver.read())
    await asyncio.sleep(0)
    assert not waiting.done()
    _arrive(receiver, b"abc")
    assert await waiting == b"abc"
    assert receiver.eof_received() is True
    assert await receiver.read() == b""
    assert transport.inner.calls == ["eof"]


async def test_bytes_already_buffered_when_the_receiver_takes_over_come_first() -> None:
    # The stream's reader may already hold the start of the next reply when the receiver takes
    # over after set-up: those bytes must reach the protocol core before anything received later.
    from mailkit.config import Endpoint
    from mailkit.pop3.client import POP3Client

    transport = _FakeTransport()
    reader = asyncio.StreamReader()
    reader.feed_data(b"+OK ea")
    client = POP3Client(Endpoint.parse("pop3+insecure://pop.example.test"), allow_insecure=True)
    client._stream = types.SimpleNamespace(reader=reader, writer=types.SimpleNamespace(transport=transport))  # type: ignore[assignment]
    await client._take_over_receiving()
    assert transport.protocol is client._receiver and not reader._buffer  # type: ignore[attr-defined]
    client._core.send(Command("NOOP"))
    assert client._receiver is not None
    _arrive(client._receiver, b"rly\r\n")
    client._core.receive_data(await client._receiver.read())
    event = client._core.next_event()
    assert isinstance(event, Response) and event.ok and event.reply.text == "early"
