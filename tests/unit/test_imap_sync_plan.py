"""The sync planner against a scripted session: which changes it finds, with and without CONDSTORE."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mailkit.imap import SyncState
from mailkit.imap._types import FolderStatus, Mailbox
from mailkit.imap.sync import make_plan

_OPENED: list[SyncState] = []


def _state() -> SyncState:
    """An in-memory state, closed after the test (Python 3.13 warns about unclosed connections)."""
    state = SyncState(None).open()
    _OPENED.append(state)
    return state


@pytest.fixture(autouse=True)
def _close_states() -> Iterator[None]:
    yield
    while _OPENED:
        _OPENED.pop().close()


class FakeSession:
    """A mailbox as {uid: flags} plus the capability set; records the commands it was asked."""

    def __init__(self, messages: dict[int, tuple[str, ...]], *, caps: set[str], modseq: int | None) -> None:
        self.messages = messages
        self.caps = caps
        self.modseq = modseq
        self.uidvalidity = 7
        self.changed_since: dict[int, int] = {}  # uid -> modseq of its last change
        self.vanished_since: dict[int, int] = {}
        self.calls: list[str] = []
        self.selected: Mailbox | None = None

    def has(self, cap: str) -> bool:
        return cap in self.caps

    def select(self, name: str, *, readonly: bool = False) -> Mailbox:
        self.calls.append("SELECT")
        self.selected = Mailbox(
            name, len(self.messages), self.uidvalidity, self._uidnext(), self.modseq, (), (), readonly
        )
        return self.selected

    def status(self, name: str, items: Any = None) -> FolderStatus:
        self.calls.append("STATUS")
        return FolderStatus(
            name, messages=len(self.messages), uidnext=self._uidnext(), uidvalidity=self.uidvalidity,
            highestmodseq=self.modseq if "CONDSTORE" in self.caps else None,
        )  # fmt: skip

    def _uidnext(self) -> int:
        return max([*self.messages, *self.vanished_since], default=0) + 1

    def _set(self, uid_set: bytes) -> list[int]:
        low, _, high = uid_set.partition(b":")
        if high == b"*":
            found = [u for u in sorted(self.messages) if u >= int(low)]
            return found or ([max(self.messages)] if self.messages else [])  # n:* quirk
        from mailkit.imap._wire import parse_sequence_set

        return [u for u in parse_sequence_set(uid_set) if u in self.messages]

    def sizes(self, uid_set: bytes) -> list[tuple[int, int, tuple[str, ...]]]:
        self.calls.append("SIZES")
        return [(u, 100, self.messages[u]) for u in self._set(uid_set)]

    def uid_fetch(
        self, uid_set: bytes, items: bytes, *, modifiers: bytes = b"",
        on_vanished: Callable[[list[int]], None] | None = None, **_: Any,
    ) -> list[dict[str, Any]]:  # fmt: skip
        self.calls.append("FETCH " + modifiers.decode())
        uids = self._set(uid_set)
        if modifiers.startswith(b"(CHANGEDSINCE"):
            since = int(modifiers.split()[1].rstrip(b")"))
            uids = [u for u in uids if self.changed_since.get(u, 0) > since]
            if on_vanished is not None and b"VANISHED" in modifiers:
                on_vanished([u for u, m in self.vanished_since.items() if m > since])
        return [{"UID": str(u), "FLAGS": list(self.messages[u])} for u in uids]

    def search(self, query: Any = None) -> list[int]:
        self.calls.append("SEARCH")
        return sorted(self.messages)


def _baseline(session: FakeSession, state: SyncState) -> None:
    plan = make_plan(session, state, "INBOX")  # type: ignore[arg-type]
    state.reset("INBOX", plan.mailbox.uidvalidity)
    for uid, _size, flags in plan.new:
        state.put("INBOX", uid, flags)
    state.set_mailbox("INBOX", plan.mailbox.uidvalidity, plan.mailbox.uidnext, plan.mailbox.highestmodseq)


def _mutate(session: FakeSession) -> None:
    session.modseq = (session.modseq or 0) + 3
    session.messages[2] = ("\\Seen",)
    session.changed_since[2] = session.modseq
    del session.messages[3]
    session.vanished_since[3] = session.modseq
    session.messages[5] = ()
    session.changed_since[5] = session.modseq


def test_full_comparison_without_condstore() -> None:
    session = FakeSession({1: (), 2: (), 3: ("\\Flagged",), 4: ()}, caps=set(), modseq=None)
    state = _state()
    _baseline(session, state)
    _mutate(session)
    plan = make_plan(session, state, "INBOX")  # type: ignore[arg-type]
    assert plan.mode == "full"
    assert plan.vanished == [3] and plan.flags == [(2, ("\\Seen",))] and [r[0] for r in plan.new] == [5]


def test_qresync_unchanged_is_one_round_trip_and_changes_are_exact() -> None:
    session = FakeSession({1: (), 2: (), 3: (), 4: ()}, caps={"CONDSTORE", "QRESYNC"}, modseq=10)
    state = _state()
    _baseline(session, state)
    session.calls.clear()
    plan = make_plan(session, state, "INBOX")  # type: ignore[arg-type]
    assert plan.empty and plan.mode == "unchanged" and session.calls == ["SELECT"]
    _mutate(session)
    plan = make_plan(session, state, "INBOX")  # type: ignore[arg-type]
    assert plan.mode == "condstore"
    assert plan.vanished == [3] and plan.flags == [(2, ("\\Seen",))] and [r[0] for r in plan.new] == [5]
    assert "SEARCH" not in session.calls  # VANISHED told us; no full listing


def test_condstore_without_qresync_finds_expunges_by_count() -> None:
    session = FakeSession({1: (), 2: (), 3: (), 4: ()}, caps={"CONDSTORE"}, modseq=10)
    state = _state()
    _baseline(session, state)
    _mutate(session)
    plan = make_plan(session, state, "INBOX")  # type: ignore[arg-type]
    assert plan.vanished == [3] and plan.flags == [(2, ("\\Seen",))] and [r[0] for r in plan.new] == [5]
    assert "SEARCH" in session.calls


def test_uidvalidity_change_plans_a_reset() -> None:
    session = FakeSession({1: (), 2: ()}, caps={"CONDSTORE", "QRESYNC"}, modseq=10)
    state = _state()
    _baseline(session, state)
    session.uidvalidity = 8
    session.messages = {1: ()}
    plan = make_plan(session, state, "INBOX")  # type: ignore[arg-type]
    assert plan.reset_from == 7 and [r[0] for r in plan.new] == [1] and plan.vanished == []


def test_n_star_quirk_does_not_invent_new_messages() -> None:
    session = FakeSession({1: (), 2: ()}, caps={"CONDSTORE", "QRESYNC"}, modseq=10)
    state = _state()
    _baseline(session, state)
    session.modseq = 11
    session.messages[2] = ("\\Seen",)
    session.changed_since[2] = 11
    plan = make_plan(session, state, "INBOX")  # type: ignore[arg-type]
    assert plan.new == [] and plan.flags == [(2, ("\\Seen",))]


def test_unchanged_without_a_selected_mailbox_is_one_status_and_no_select() -> None:
    # A new connection: STATUS answers from the index header; SELECT would open the mailbox.
    session = FakeSession({1: (), 2: (), 3: (), 4: ()}, caps={"CONDSTORE", "QRESYNC"}, modseq=10)
    state = _state()
    _baseline(session, state)
    session.selected = None
    session.calls.clear()
    plan = make_plan(session, state, "INBOX")  # type: ignore[arg-type]
    assert plan.empty and plan.mode == "unchanged" and session.calls == ["STATUS"]
    assert plan.mailbox.uidvalidity == 7 and plan.mailbox.highestmodseq == 10
    _mutate(session)
    session.calls.clear()
    plan = make_plan(session, state, "INBOX")  # type: ignore[arg-type]
    assert session.calls[:2] == ["STATUS", "SELECT"] and plan.mode == "condstore"
    assert plan.vanished == [3] and plan.flags == [(2, ("\\Seen",))] and [r[0] for r in plan.new] == [5]


def test_a_uidvalidity_change_seen_by_status_still_plans_a_reset() -> None:
    session = FakeSession({1: (), 2: ()}, caps={"CONDSTORE", "QRESYNC"}, modseq=10)
    state = _state()
    _baseline(session, state)
    session.selected = None
    session.uidvalidity = 8  # same counts, same modseq: only UIDVALIDITY tells
    plan = make_plan(session, state, "INBOX")  # type: ignore[arg-type]
    assert plan.reset_from == 7 and session.calls[-2:] == ["SELECT", "SIZES"]


def test_status_is_never_used_on_the_selected_mailbox_or_without_condstore() -> None:
    for caps, deselect in (({"CONDSTORE"}, False), (set(), True)):
        session = FakeSession({1: (), 2: ()}, caps=caps, modseq=10 if caps else None)
        state = _state()
        _baseline(session, state)
        if deselect:
            session.selected = None
        session.calls.clear()
        make_plan(session, state, "INBOX")  # type: ignore[arg-type]
        assert "STATUS" not in session.calls and session.calls[0] == "SELECT"
