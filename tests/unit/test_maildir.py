"""The Maildir writer: byte-exact delivery, unique names, the durable order, no debris on failure."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailkit.errors import ConfigError
from mailkit.store.maildir import Maildir


def test_add_creates_the_maildir_and_stores_bytes_exactly(tmp_path: Path) -> None:
    md = Maildir(tmp_path / "Mail")
    raw = b"From: a@example.test\r\n\r\n\x00\xff binary-ish \r\n.\r\n"
    name = md.add(raw)
    assert {p.name for p in (tmp_path / "Mail").iterdir()} == {"tmp", "new", "cur"}
    assert md.read(name) == raw
    assert name.endswith(f",S={len(raw)}") and ":" not in name and "/" not in name
    assert list((tmp_path / "Mail" / "tmp").iterdir()) == []


def test_names_are_unique_across_threads(tmp_path: Path) -> None:
    md = Maildir(tmp_path)
    names: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(50):
            name = md.add(b"x")
            with lock:
                names.append(name)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(names)) == 200 == len(md.names())


def test_flags_go_to_cur_with_the_info_suffix(tmp_path: Path) -> None:
    md = Maildir(tmp_path)
    name = md.add(b"x", flags="SF", subdir="cur")
    assert name.endswith(":2,FS") and (tmp_path / "cur" / name).exists()
    with pytest.raises(ConfigError):
        md.add(b"x", flags="S")  # new/ holds no flags
    with pytest.raises(ConfigError):
        md.add(b"x", flags="Z", subdir="cur")
    with pytest.raises(ConfigError):
        md.add(b"x", subdir="tmp")


def test_add_chunks_streams_and_counts(tmp_path: Path) -> None:
    md = Maildir(tmp_path)
    chunks = [b"a" * 1000, b"b" * 5, b"c" * 70_000]
    name = md.add_chunks(iter(chunks))
    assert md.read(name) == b"".join(chunks) and name.endswith(",S=71005")
    name2 = md.add_chunks(iter(chunks), size=71005)
    assert md.read(name2) == b"".join(chunks)
    with pytest.raises(OSError, match="announced"):
        md.add_chunks(iter(chunks), size=10)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_failing_stream_leaves_nothing_behind(tmp_path: Path) -> None:
    md = Maildir(tmp_path)

    def broken() -> Iterator[bytes]:
        yield b"first part"
        raise OSError(errno.ECONNRESET, "network went away")

    with pytest.raises(OSError):
        md.add_chunks(broken(), size=100)
    assert md.names() == [] and list((tmp_path / "tmp").iterdir()) == []


def test_durable_order_fsync_file_then_rename_then_fsync_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    md = Maildir(tmp_path)
    md.create()
    calls: list[tuple[str, str]] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        calls.append(("fsync-dir", target) if os.path.isdir(target) else ("fsync-file", target))
        real_fsync(fd)

    def rename(src: object, dst: object) -> None:
        calls.append(("rename", str(src)))
        real_rename(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    md.add(b"one")
    assert [c for c, _ in calls] == ["fsync-file", "rename", "fsync-dir"]
    calls.clear()
    results = md.add_many([b"a", b"b", b"c"])
    assert all(isinstance(r, str) for r in results)
    # Each file is fsynced before its rename; one directory fsync ends the batch.
    kinds = [c for c, _ in calls]
    assert kinds.count("fsync-file") == 3 and kinds.count("rename") == 3 and kinds[-1] == "fsync-dir"
    assert kinds.count("fsync-dir") == 1
    for i, (kind, path) in enumerate(calls):
        if kind == "rename":
            assert ("fsync-file", path) in calls[:i], f"{path} renamed before its fsync"


def test_a_failed_fsync_keeps_that_message_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    md = Maildir(tmp_path)
    md.create()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        if not os.path.isdir(target) and os.path.getsize(target) == 3:
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    results = md.add_many([b"ok", b"bad", b"fine"])
    assert isinstance(results[1], OSError) and results[1].errno == errno.EIO
    assert sorted(md.read(n) for n in md.names()) == [b"fine", b"ok"]
    assert list((tmp_path / "tmp").iterdir()) == []


def test_fsync_false_skips_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    md = Maildir(tmp_path, fsync=False)
    md.create()
    monkeypatch.setattr(os, "fsync", lambda fd: pytest.fail("fsync called"))
    assert md.read(md.add(b"fast")) == b"fast"


def test_add_many_reports_each_failure_and_keeps_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    md = Maildir(tmp_path)
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        if bytes(data) == b"bad":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    results = md.add_many([b"good", b"bad", b"also good"])
    assert isinstance(results[1], OSError) and results[1].errno == errno.ENOSPC
    assert sorted(md.read(n) for n in md.names()) == [b"also good", b"good"]
    assert list((tmp_path / "tmp").iterdir()) == []


def test_open_writer_streams_into_tmp_then_commits_with_the_size_in_the_name(tmp_path: Path) -> None:
    md = Maildir(tmp_path / "md")
    writer = md.open_writer()
    for part in (b"Subject: s\r\n", b"\r\n", b"x" * 10_000):
        writer.write(part)
        assert md.names() == []  # invisible to readers until committed
        assert [p.stat().st_size for p in (md.path / "tmp").iterdir()] == [writer.size]
    name = writer.commit()
    assert name.endswith(",S=10014") and md.names() == [name]
    assert md.read(name) == b"Subject: s\r\n\r\n" + b"x" * 10_000
    assert list((md.path / "tmp").iterdir()) == []
    with pytest.raises(OSError):
        writer.write(b"late")  # committed: closed for good
    flagged = md.open_writer(flags="S", subdir="cur")
    flagged.write(b"seen")
    assert flagged.commit().endswith(",S=4:2,S")


def test_open_writer_abort_and_a_failed_write_leave_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    md = Maildir(tmp_path / "md")
    writer = md.open_writer()
    writer.write(b"partial")
    writer.abort()
    writer.abort()  # idempotent
    assert list((md.path / "tmp").iterdir()) == [] and md.names() == []
    with pytest.raises(OSError):
        writer.commit()

    failing = md.open_writer()

    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError) as info:
        failing.write(b"data")
    assert info.value.errno == errno.ENOSPC
    assert list((md.path / "tmp").iterdir()) == [] and md.names() == []


def test_open_writer_commit_is_durable_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    md = Maildir(tmp_path / "md")
    md.create()
    steps: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        steps.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def rename(src: object, dst: object) -> None:
        steps.append("rename")
        real_rename(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    writer = md.open_writer()
    writer.write(b"body")
    writer.commit()
    assert steps == ["fsync-file", "rename", "fsync-dir"]
