"""The sync engine against the real Dovecot: concurrent changes, UIDVALIDITY, crashes, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import mailkit
from mailkit.cli import cli
from mailkit.imap import ChangeKind, SyncState, maildir_flags
from tests.integration.mailstack import REPO_ROOT, MailStack

ALICE = "alice@example.test"
BOX = "Sync Box ü"


def account(ms: MailStack) -> mailkit.Account:
    return mailkit.Account(
        ALICE, password="alicepw", imap=ms.url("imaps"), ca_file=str(ms.ca_file), test_environment=True
    )


def raw(i: int) -> bytes:
    return b"Subject: msg %d\r\nFrom: bob@example.test\r\n\r\nbody %d\r\n" % (i, i)


def server_view(imap: mailkit.imap.IMAP, mailbox: str) -> dict[int, frozenset[str]]:
    imap.examine(mailbox)
    uids = imap.search()
    return {m.uid: frozenset(set(m.flags or ()) - {"\\Recent"}) for m in imap.fetch(uids)}


def maildir_view(root: Path, uidvalidity: int) -> dict[int, str]:
    out = {}
    for sub in ("new", "cur"):
        for name in os.listdir(root / sub):
            parts = name.split(".")
            if parts[1] == str(uidvalidity):
                out[int(parts[2])] = name.partition(":2,")[2]
    return out


def test_sync_with_concurrent_changes_converges(clean_mailstack: MailStack, tmp_path: Path) -> None:
    ms = clean_mailstack
    ms.deliver_many(ALICE, [raw(i) for i in range(30)], mailbox=BOX)
    state, md = tmp_path / "s.db", tmp_path / "md"
    with account(ms) as acct, acct.imap() as mine, acct.imap() as other:
        first = list(mine.sync(BOX, state=state, into=md))
        assert [c.kind for c in first] == [ChangeKind.NEW] * 30
        other.select(BOX)
        uids = other.search()
        assert list(mine.sync(BOX, state=state, into=md)) == []  # nothing changed yet
        # changes made by another connection before and *while* our sync iterates
        it = mine.sync(BOX, state=state, into=md)
        other.add_flags(uids[:5], ["\\Seen"])
        other.delete(uids[5:8])
        for i in range(30, 35):
            other.append(BOX, raw(i), flags=["\\Flagged"] if i % 2 else [])
        seen = []
        for n, change in enumerate(it):
            seen.append(change)
            if n == 2:  # mid-iteration: more changes land on the server
                other.set_flags(uids[10:12], ["\\Answered", "$Label"])
                other.delete([uids[20]])
                other.append(BOX, raw(99))
        kinds = {c.kind for c in seen}
        assert {ChangeKind.NEW, ChangeKind.FLAGS, ChangeKind.VANISHED} <= kinds
        # a second run picks up what landed during the first one; a third finds nothing
        list(mine.sync(BOX, state=state, into=md))
        assert list(mine.sync(BOX, state=state, into=md)) == []

        server = server_view(other, BOX)
        st = SyncState(state).open()
        local = {uid: frozenset(f) for uid, f in st.known(BOX).items()}
        uidvalidity = st.mailbox(BOX).uidvalidity  # type: ignore[union-attr]
        st.close()
        assert local == server
        files = maildir_view(md, uidvalidity)
        assert files == {uid: maildir_flags(f) for uid, f in server.items()}


def test_uidvalidity_change_rebaselines_and_keeps_local_copies(
    clean_mailstack: MailStack, tmp_path: Path
) -> None:
    ms = clean_mailstack
    ms.deliver_many(ALICE, [raw(i) for i in range(3)], mailbox=BOX)
    state, md = tmp_path / "s.db", tmp_path / "md"
    with account(ms) as acct, acct.imap() as imap:
        list(imap.sync(BOX, state=state, into=md))
        old_files = set(os.listdir(md / "new"))
        imap.delete_folder(BOX)
        imap.create_folder(BOX)
        imap.append(BOX, raw(100))
        with pytest.raises(mailkit.errors.StateError):
            list(imap.sync(BOX, state=state, into=md, on_uidvalidity="error"))
        changes = list(imap.sync(BOX, state=state, into=md))
        assert changes[0].kind is ChangeKind.RESET
        assert [c.kind for c in changes[1:]] == [ChangeKind.NEW]
        assert old_files <= set(os.listdir(md / "new"))  # never deleted by stale UIDs
        assert len(os.listdir(md / "new")) == 4
        assert list(imap.sync(BOX, state=state, into=md)) == []


_CRASHER = textwrap.dedent(
    """
    import os, sys
    import mailkit
    url, ca, state, md, log, crash_at = sys.argv[1:7]
    acct = mailkit.Account("alice@example.test", password="alicepw", imap=url, ca_file=ca,
                           test_environment=True)
    imap = acct.imap().__enter__()
    n = 0
    for change in imap.sync("Sync Box ü", state=state, into=md):
        with open(log, "a") as f:
            f.write(f"{change.kind.value} {change.uid}\\n")
            f.flush()
            os.fsync(f.fileno())
        n += 1
        if n == int(crash_at):
            os._exit(9)  # processed, state for this change not yet saved
    acct.close()
    """
)


def test_kill_between_processing_and_saving_loses_nothing(clean_mailstack: MailStack, tmp_path: Path) -> None:
    ms = clean_mailstack
    ms.deliver_many(ALICE, [raw(i) for i in range(40)], mailbox=BOX)
    state, md, log = tmp_path / "s.db", tmp_path / "md", tmp_path / "log"
    script = tmp_path / "crasher.py"
    script.write_text(_CRASHER)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    args = [sys.executable, str(script), ms.url("imaps"), str(ms.ca_file), str(state), str(md), str(log)]
    for crash_at in ("7", "19", "1000"):
        proc = subprocess.run([*args, crash_at], env=env, capture_output=True, timeout=120, check=False)
        assert proc.returncode == (0 if crash_at == "1000" else 9), proc.stderr.decode()
    handled = [line.split() for line in log.read_text().splitlines()]
    uids = [int(uid) for kind, uid in handled if kind == "new"]
    with account(ms) as acct, acct.imap() as imap:
        server = set(server_view(imap, BOX))
    assert set(uids) == server  # nothing skipped
    assert len(uids) - len(set(uids)) <= 2  # at most the change in flight, once per crash
    st = SyncState(state).open()
    assert set(st.known(BOX)) == server
    st.close()
    assert sum(len(os.listdir(md / d)) for d in ("new", "cur")) == 40  # no duplicate files


def test_cli_sync_and_search(clean_mailstack: MailStack, tmp_path: Path) -> None:
    ms = clean_mailstack
    ms.deliver_many(ALICE, [raw(i) for i in range(5)], mailbox=BOX)
    pw = tmp_path / "pw"
    pw.write_text("alicepw\n")
    common = ["--address", ALICE, "--password-file", str(pw), "--imap", ms.url("imaps"),
              "--ca-file", str(ms.ca_file)]  # fmt: skip
    runner = CliRunner()
    env = {"MAILKIT_TEST_ENVIRONMENT": "1"}
    result = runner.invoke(
        cli, ["imap", "sync", "--mailbox", BOX, "--maildir", str(tmp_path / "md"),
              "--state", str(tmp_path / "s.db"), *common], env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "5 new" in result.output
    assert len(os.listdir(tmp_path / "md" / "new")) == 5
    result = runner.invoke(cli, ["imap", "search", "--mailbox", BOX, *common, "SUBJECT", '"msg 3"'], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("msg 3")
    result = runner.invoke(cli, ["imap", "ls", "--json", *common], env=env)
    assert result.exit_code == 0 and '"\\\\Sent"' in result.output
    result = runner.invoke(cli, ["imap", "search", "--mailbox", "Nope", *common, "ALL"], env=env)
    assert result.exit_code == 1 and "Traceback" not in result.output


def test_sync_with_handler_records_only_what_returned(clean_mailstack: MailStack) -> None:
    ms = clean_mailstack
    ms.deliver_many(ALICE, [raw(i) for i in range(6)], mailbox=BOX)
    state = SyncState(None)
    handled: list[int] = []

    def handler(change: mailkit.imap.Change) -> None:
        if len(handled) == 3:
            raise RuntimeError("handler failed")
        handled.append(change.uid or 0)

    with account(ms) as acct, acct.imap() as imap:
        with pytest.raises(RuntimeError):
            imap.sync_with(BOX, handler, state=state)
        assert set(state.known(BOX)) == set(handled)  # the failed change was not recorded
        rest: list[int] = []
        assert imap.sync_with(BOX, lambda c: rest.append(c.uid or 0), state=state) == 3
        assert sorted(handled + rest) == sorted(server_view(imap, BOX))
