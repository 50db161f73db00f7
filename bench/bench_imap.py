"""IMAP benchmark: mailkit vs imapclient vs raw imaplib vs mbsync, side by side in one run.

Run against the local stack (scripts/mailstack up; honours MAILSTACK_* / *_PORT):

    python bench/bench_imap.py [--messages 10000] [--runs 3] [--big] [--huge] [--hundred-k]

Cases, each on the same mailbox in the same run, median of ``--runs`` (tools take turns run by run;
every tool, mbsync included, connects with implicit TLS):
  bodies     UID FETCH BODY.PEEK[] of every message (batches of 1,000 UIDs for all three)
  listing    ENVELOPE FLAGS RFC822.SIZE of every message
  big        50 x 1 MB bodies (--big)
  mirror     full mirror into a Maildir with fsync: mailkit sync vs mbsync (isync)
  unchanged  an incremental sync when nothing changed: wall time and commands sent
  huge       peak memory while mirroring one 100 MB message (--huge), in a child process
Ratios are printed against imapclient (speed-up) and raw imaplib (overhead). The bodies and listing
cases also time a raw client that pipelines every command and parses nothing (the server's floor),
and print each client's own CPU time (this process, all threads): on 2 shared cores the server and
the client compete, so a client's CPU shows up in its wall time.
"""

from __future__ import annotations

import argparse
import imaplib
import json
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from imapclient import IMAPClient  # noqa: E402

import mailkit  # noqa: E402
from mailkit.imap import SyncState  # noqa: E402
from tests.integration.mailstack import MailStack  # noqa: E402

USER, PASSWORD = "perf@example.test", "perfpw"


def message(i: int, size: int = 2300) -> bytes:
    head = (
        f"From: Sender {i} <sender{i}@example.test>\r\nTo: {USER}\r\n"
        f"Subject: benchmark message {i}\r\nMessage-ID: <{i}@bench.example.test>\r\n"
        "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog 0123456789.\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def ensure_mailbox(ms: MailStack, name: str, count: int, size: int = 2300) -> None:
    try:
        have = ms.message_count(USER, name)
    except Exception:  # noqa: BLE001 - not created yet
        have = -1
    if have == count:
        return
    if have > 0:
        ms.doveadm("mailbox", "delete", "-u", USER, "-r", "-s", name)
    ms.deliver_many(USER, (message(i, size) for i in range(count)), mailbox=name)


def median(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ctx(ms: MailStack) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ms.ca_file))


def imaplib_conn(ms: MailStack, mailbox: str) -> imaplib.IMAP4_SSL:
    conn = imaplib.IMAP4_SSL(ms.host, ms.imaps_port, ssl_context=ctx(ms))
    conn.login(USER, PASSWORD)
    conn.select(f'"{mailbox}"', readonly=True)
    return conn


def imapclient_conn(ms: MailStack, mailbox: str) -> IMAPClient:
    client = IMAPClient(ms.host, ms.imaps_port, ssl_context=ctx(ms), timeout=60)
    client.login(USER, PASSWORD)
    client.select_folder(mailbox, readonly=True)
    return client


def account(ms: MailStack) -> mailkit.Account:
    return mailkit.Account(
        USER, password=PASSWORD, imap=ms.url("imaps"), ca_file=str(ms.ca_file), test_environment=True
    )


def uid_ranges(uids: list[int], per: int) -> list[list[int]]:
    return [uids[i : i + per] for i in range(0, len(uids), per)]


def bench_fetch(ms: MailStack, mailbox: str, runs: int, *, what: str) -> dict[str, float]:
    """All three tools on implicit TLS (IMAPS) to the same server, each on its own open connection.

    One untimed pass first warms Dovecot's caches for everyone; then the tools take turns, run by
    run, so load from elsewhere on the machine falls on all of them alike.
    """
    raw_items = {"bodies": "(BODY.PEEK[])", "listing": "(UID ENVELOPE FLAGS RFC822.SIZE)"}[what]
    client_items = {"bodies": [b"BODY.PEEK[]"], "listing": [b"ENVELOPE", b"FLAGS", b"RFC822.SIZE"]}[what]

    conn = imaplib_conn(ms, mailbox)
    _typ, data = conn.uid("SEARCH", "ALL")
    uids = [int(x) for x in data[0].split()]
    chunks = uid_ranges(uids, 1000)

    def run_imaplib() -> None:
        for chunk in chunks:
            conn.uid("FETCH", f"{chunk[0]}:{chunk[-1]}", raw_items)

    floor = imaplib_conn(ms, mailbox)

    def run_pipelined() -> None:
        """The server's floor: every command sent at once, the replies received and not parsed."""
        sock = floor.sock
        sock.sendall(b"".join(b"P%d UID FETCH %d:%d %s\r\n" % (i, c[0], c[-1], raw_items.encode())
                              for i, c in enumerate(chunks)))  # fmt: skip
        last, tail, buf = b"\r\nP%d OK" % (len(chunks) - 1), b"", bytearray(1 << 20)
        while last not in tail:
            got = sock.recv_into(buf)
            if not got:
                raise EOFError("server closed")
            tail = (tail + bytes(buf[max(0, got - 64) : got]))[-64:]

    client = imapclient_conn(ms, mailbox)

    def run_imapclient() -> None:
        for chunk in chunks:
            client.fetch(chunk, client_items)

    names = ["raw pipelined (server floor)", "imaplib (raw, unparsed)", "imapclient", "mailkit"]
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    with account(ms) as acct, acct.imap() as imap:
        imap.examine(mailbox)
        kwargs = {"body": True} if what == "bodies" else {"envelope": True}

        def run_mailkit() -> None:
            count = sum(1 for _ in imap.fetch(uids, **kwargs))
            assert count == len(uids), count

        run_imaplib()  # warm-up, untimed
        tools = dict(zip(names, [run_pipelined, run_imaplib, run_imapclient, run_mailkit], strict=True))
        for _ in range(runs):
            for name, fn in tools.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                fn()
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    conn.logout()
    floor.logout()
    client.logout()
    out = {name: statistics.median(values) for name, values in times.items()}
    # this process's CPU (all its threads) per run: what each client costs beside the server's work
    out.update({f"client CPU: {name}": statistics.median(values) for name, values in cpu.items()})
    return out


def bench_mirror(ms: MailStack, mailbox: str, runs: int, work: Path) -> dict[str, float]:
    out: dict[str, float] = {}

    def run_mailkit() -> None:
        target = work / "mk-maildir"
        state = work / "mk-state.db"
        shutil.rmtree(target, ignore_errors=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{state}{suffix}").unlink(missing_ok=True)
        with account(ms) as acct, acct.imap() as imap:
            n = sum(1 for _ in imap.sync(mailbox, state=state, into=target))
        assert n == ms.message_count(USER, mailbox), n

    out["mailkit sync (fsync)"] = median(run_mailkit, runs)
    print(f"  mailkit sync (fsync): {out['mailkit sync (fsync)']:.3f} s", flush=True)

    if shutil.which("mbsync") is None:
        print("  (mbsync not installed: apt-get install isync)")
        return out
    config = work / "mbsyncrc"
    local = work / "mbsync-maildir"
    config.write_text(
        textwrap.dedent(
            f"""\
            FSync yes

            IMAPAccount perf
            Host localhost
            Port {ms.imaps_port}
            User {USER}
            Pass {PASSWORD}
            SSLType IMAPS
            CertificateFile {ms.ca_file}

            IMAPStore remote
            Account perf

            MaildirStore local
            Path {local}/
            Inbox {local}/INBOX

            Channel bench
            Far :remote:{mailbox}
            Near :local:bench
            Create Near
            Sync Pull
            SyncState *
            """
        )
    )

    def run_mbsync() -> None:
        shutil.rmtree(local, ignore_errors=True)
        local.mkdir()
        subprocess.run(["mbsync", "-q", "-c", str(config), "bench"], check=True)

    out["mbsync (fsync)"] = median(run_mbsync, runs)
    return out


class CommandCounter:
    """Counts IMAP commands sent (every send that ends a line), across imaplib and our wire path."""

    def __init__(self) -> None:
        self.count = 0
        self._orig = imaplib.IMAP4.send

    def __enter__(self) -> CommandCounter:
        counter = self

        def send(conn: imaplib.IMAP4, data: Any) -> None:
            if data.endswith(b"\r\n"):
                counter.count += 1
            counter._orig(conn, data)

        imaplib.IMAP4.send = send  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        imaplib.IMAP4.send = self._orig  # type: ignore[method-assign]


def bench_unchanged(ms: MailStack, mailbox: str, runs: int, work: Path) -> dict[str, float]:
    state = work / f"unchanged-{mailbox}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{state}{suffix}").unlink(missing_ok=True)
    out: dict[str, float] = {}
    with account(ms) as acct, acct.imap() as imap:
        for _ in imap.sync(mailbox, state=state):  # baseline: flags and UIDs only
            pass
        st = SyncState(state)

        def run() -> None:
            changes = list(imap.sync(mailbox, state=st))
            assert changes == [], changes

        run()
        with CommandCounter() as counter:
            run()
        out["commands per unchanged sync"] = float(counter.count)
        out["unchanged sync (ms)"] = median(run, max(runs, 5)) * 1000

        # The same check from a new session (a poller that connects each time): nothing is
        # selected yet, so one STATUS answers it (the connect and login are not timed).
        fresh: list[float] = []
        for _ in range(max(runs, 5)):
            with acct.imap() as other:
                start = time.perf_counter()
                changes = list(other.sync(mailbox, state=st))
                fresh.append(time.perf_counter() - start)
                assert changes == [], changes
        out["unchanged sync, new session (ms)"] = statistics.median(fresh) * 1000
        st.close()
    return out


_HUGE_CHILD = textwrap.dedent(
    """
    import resource, sys, json
    sys.path.insert(0, sys.argv[1])
    import mailkit

    def rss(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024
        return 0

    host, port, ca, mailbox, maildir, state = sys.argv[2:8]
    acct = mailkit.Account("perf@example.test", password="perfpw", imap=f"imaps://{host}:{port}",
                           ca_file=ca, test_environment=True)
    with acct, acct.imap() as imap:
        imap.examine(mailbox)
        base = rss("VmRSS:")
        n = sum(1 for _ in imap.sync(mailbox, state=state, into=maildir))
        peak = rss("VmHWM:")
    print(json.dumps({"messages": n, "baseline": base, "peak": peak}))
    """
)


def bench_huge(ms: MailStack, work: Path) -> dict[str, float]:
    mailbox = "BenchHuge"
    try:
        have = ms.message_count(USER, mailbox)
    except Exception:  # noqa: BLE001
        have = 0
    if have != 1:
        ms.deliver_many(USER, [message(0, 100 << 20)], mailbox=mailbox)
    maildir, state = work / "huge-maildir", work / "huge.db"
    shutil.rmtree(maildir, ignore_errors=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{state}{suffix}").unlink(missing_ok=True)
    script = work / "huge_child.py"
    script.write_text(_HUGE_CHILD)
    proc = subprocess.run(
        [sys.executable, str(script), str(REPO), ms.host, str(ms.imaps_port), str(ms.ca_file),
         mailbox, str(maildir), str(state)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    files = list((maildir / "new").iterdir()) + list((maildir / "cur").iterdir())
    assert len(files) == 1 and files[0].stat().st_size >= 99 << 20
    return {"peak above baseline (MB)": (result["peak"] - result["baseline"]) / (1 << 20)}


def show(title: str, results: dict[str, float], unit: str = "s") -> None:
    print(f"\n== {title}")
    base_client = results.get("imapclient")
    base_raw = results.get("imaplib (raw, unparsed)")
    for name, value in results.items():
        extra = ""
        if name == "mailkit" and base_client:
            extra += f"  {base_client / value:5.1f}x faster than imapclient"
        if name == "mailkit" and base_raw:
            extra += f"  {value / base_raw:4.1f}x raw imaplib's time"
        print(f"  {name:32s} {value:9.3f} {unit}{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--big", action="store_true", help="also 50 x 1 MB bodies")
    parser.add_argument("--huge", action="store_true", help="also peak memory for a 100 MB message")
    parser.add_argument("--hundred-k", action="store_true", help="also the unchanged check at 100k")
    parser.add_argument("--skip-mirror", action="store_true")
    parser.add_argument(
        "--only", choices=["bodies", "listing", "mirror", "unchanged", "huge"], help="run just one case"
    )
    args = parser.parse_args()

    ms = MailStack.start()
    mailbox = f"Bench{args.messages}"
    t = time.perf_counter()
    ensure_mailbox(ms, mailbox, args.messages)
    print(
        f"mailbox {mailbox}: {args.messages} messages of ~2.3 KB (ready in {time.perf_counter() - t:.1f} s)"
    )
    print("every tool connects with implicit TLS (IMAPS, verified) to the same Dovecot")
    work = Path(tempfile.mkdtemp(prefix="mailkit-bench-imap-"))
    try:
        if args.only:
            if args.only in ("bodies", "listing"):
                title = {"bodies": "full bodies (BODY.PEEK[])", "listing": "envelope/flags/size listing"}
                show(title[args.only], bench_fetch(ms, mailbox, args.runs, what=args.only))
            elif args.only == "mirror":
                show("full mirror into a Maildir", bench_mirror(ms, mailbox, args.runs, work))
            elif args.only == "unchanged":
                show("unchanged incremental sync", bench_unchanged(ms, mailbox, args.runs, work), "")
            else:
                show("mirroring one 100 MB message", bench_huge(ms, work), unit="")
            return
        show("full bodies (BODY.PEEK[])", bench_fetch(ms, mailbox, args.runs, what="bodies"))
        show("envelope/flags/size listing", bench_fetch(ms, mailbox, args.runs, what="listing"))
        if args.big:
            ensure_mailbox(ms, "Bench1MB", 50, 1 << 20)
            show("50 x 1 MB bodies", bench_fetch(ms, "Bench1MB", args.runs, what="bodies"))
        if not args.skip_mirror:
            mirror = bench_mirror(ms, mailbox, args.runs, work)
            show("full mirror into a Maildir", mirror)
            if len(mirror) == 2:
                mk, mb = mirror["mailkit sync (fsync)"], mirror["mbsync (fsync)"]
                print(f"  mailkit / mbsync time: {mk / mb:.2f}")
        show("unchanged incremental sync", bench_unchanged(ms, mailbox, args.runs, work), unit="")
        if args.hundred_k:
            ensure_mailbox(ms, "Bench100000", 100_000, 600)
            show("unchanged incremental sync, 100k", bench_unchanged(ms, "Bench100000", args.runs, work), "")
        if args.huge:
            show("mirroring one 100 MB message", bench_huge(ms, work), unit="")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
