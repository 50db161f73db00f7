"""POP3 download-and-delete: mailkit against poplib and getmail6, side by side in one run.

    python bench/bench_pop3.py [--repeat 3] [--messages 1000] [--big-mb 25]

Needs the local mail stack (scripts/mailstack; MAILSTACK_* / *_PORT variables pick the instance)
and, for the durable comparison, Debian's ``getmail6``. Every case runs in its own subprocess so
that its peak RSS is its own; the mailbox is refilled before each run and checked empty after.
Cases, all over the same Dovecot:

- ``poplib``: a plain loop, RETR each then DELE, QUIT (what a user would write with the stdlib);
- ``raw``: a socket sending every RETR and DELE in one write and reading into one reused buffer,
  parsing nothing: the floor the server (and TLS) set;
- ``mailkit``: ``download_and_delete`` into a callback (nothing durable, like the poplib loop);
- ``mailkit-maildir``: ``download_and_delete`` into a Maildir (fsync file + directory, UIDL state);
- ``getmail6``: getmail into a Maildir (it fsyncs each file), ``delete = true``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

USER = "perf@example.test"


def _stack():  # type: ignore[no-untyped-def]
    from tests.integration.mailstack import MailStack

    return MailStack.start()


def small_messages(count: int) -> list[bytes]:
    line = b"Line %03d of a few kilobytes of ordinary text in a message body.\r\n"
    body = b"".join(line % i for i in range(45))
    return [
        b"From: sender@example.test\r\nTo: perf@example.test\r\nSubject: bench %d\r\n"
        b"Message-ID: <bench-%d@example.test>\r\n\r\n" % (i, i) + body
        for i in range(count)
    ]


def big_message(mb: int) -> bytes:
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n"
    head = b"From: sender@example.test\r\nSubject: big\r\nMIME-Version: 1.0\r\n\r\n"
    return head + line * (mb * 1024 * 1024 // len(line))


# -- the cases, each run in a child process ------------------------------------------------------


def case_poplib(host: str, port: int, ca: str, tls: bool, marks: dict[str, float]) -> None:
    import poplib

    poplib._MAXLINE = 1 << 20  # the 25 MB message has 78-byte lines, but be fair to long lines
    ctx = ssl.create_default_context(cafile=ca) if tls else None
    marks["start"] = time.perf_counter()
    if ctx is not None:
        pop: poplib.POP3 = poplib.POP3_SSL(host, port, context=ctx, timeout=30)
    else:
        pop = poplib.POP3(host, port, timeout=30)
    pop.user(USER)
    pop.pass_("perfpw")
    marks["logged_in"] = time.perf_counter()
    count, _ = pop.stat()
    for n in range(1, count + 1):
        pop.retr(n)
        pop.dele(n)
    pop.quit()
    marks["end"] = time.perf_counter()


def case_raw(host: str, port: int, ca: str, tls: bool, marks: dict[str, float]) -> None:
    """The floor: a raw socket sending every RETR and DELE in one write, reading until the server
    closes after QUIT. No parsing, no saving: what the server and the network allow at best."""
    import socket

    marks["start"] = time.perf_counter()
    sock: socket.socket = socket.create_connection((host, port), timeout=30)
    if tls:
        sock = ssl.create_default_context(cafile=ca).wrap_socket(sock, server_hostname=host)
    reader = sock.makefile("rb")
    reader.readline()
    sock.sendall(f"USER {USER}\r\nPASS perfpw\r\nSTAT\r\n".encode())
    reader.readline(), reader.readline()
    count = int(reader.readline().split()[1])
    marks["logged_in"] = time.perf_counter()
    sock.sendall(b"".join(b"RETR %d\r\nDELE %d\r\n" % (n, n) for n in range(1, count + 1)) + b"QUIT\r\n")
    # Straight from the socket into one reused buffer (the server sent nothing past STAT's reply,
    # so the file object holds nothing more): no copy, no allocation per read.
    buffer = bytearray(1 << 20)
    with contextlib.suppress(ssl.SSLEOFError):  # a server may close without close_notify
        while sock.recv_into(buffer):
            pass
    marks["end"] = time.perf_counter()
    sock.close()


def case_mailkit(
    host: str, port: int, ca: str, tls: bool, maildir: str | None, marks: dict[str, float]
) -> None:
    """``download_and_delete`` as the public API runs it (connect + the download engine), split
    at the login so the transfer phase can be compared on its own."""
    import asyncio

    import mailkit
    from mailkit.pop3 import AsyncPOP3, as_sink
    from mailkit.pop3._state import UIDLState
    from mailkit.pop3.download import download

    url = f"pop3s://{host}:{port}" if tls else f"pop3+insecure://{host}:{port}"

    def count(raw: bytes, info: object) -> None:
        pass

    async def run() -> None:
        async with mailkit.AsyncAccount(
            USER, password="perfpw", pop3=url, ca_file=ca, allow_insecure=not tls, test_environment=True
        ) as account:
            account.settings.ssl_context()  # built once per process, like poplib's context above
            sink = as_sink(maildir if maildir else count)
            state_path = sink.default_state()
            state = UIDLState(":memory:" if state_path is None else state_path, "bench")
            marks["start"] = time.perf_counter()
            client = await AsyncPOP3(account).connect()
            marks["logged_in"] = time.perf_counter()
            report = await download(client, sink, state)
            marks["end"] = time.perf_counter()
            state.close()
            if report.errors:
                raise SystemExit(f"errors: {report.errors[:3]}")

    asyncio.run(run())


def case_getmail(host: str, port: int, ca: str, tls: bool, maildir: str) -> None:
    for sub in ("tmp", "new", "cur"):  # getmail wants an existing Maildir
        (Path(maildir) / sub).mkdir(parents=True, exist_ok=True)
    rc = Path(maildir).parent / "getmailrc"
    rc.write_text(
        f"""[retriever]
type = {"SimplePOP3SSLRetriever" if tls else "SimplePOP3Retriever"}
server = {host}
port = {port}
username = {USER}
password = perfpw
# also getmail's wait for its delivery child: a lost SIGCHLD then costs 10 s, not 180
timeout = 10
{"ca_certs = " + ca if tls else ""}

[destination]
type = Maildir
path = {maildir}/

[options]
delete = true
read_all = true
delivered_to = false
received = false
verbose = 0
message_log_syslog = false
"""
    )
    command = ["getmail", "--getmaildir", str(rc.parent), "--rcfile", str(rc)]
    if os.geteuid() == 0:
        # getmail refuses to deliver as root: run it as nobody, as a user would run it as themselves.
        subprocess.run(["chown", "-R", "nobody", str(rc.parent)], check=True)
        command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
    subprocess.run(command, check=True)


def child(args: argparse.Namespace) -> None:
    marks: dict[str, float] = {}
    if args.case == "poplib":
        case_poplib(args.host, args.port, args.ca, args.tls, marks)
    elif args.case == "raw":
        case_raw(args.host, args.port, args.ca, args.tls, marks)
    elif args.case == "mailkit":
        case_mailkit(args.host, args.port, args.ca, args.tls, None, marks)
    elif args.case == "mailkit-maildir":
        case_mailkit(args.host, args.port, args.ca, args.tls, args.maildir, marks)
    elif args.case == "getmail6":
        marks["start"] = time.perf_counter()
        case_getmail(args.host, args.port, args.ca, args.tls, args.maildir)
        marks["end"] = time.perf_counter()
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec from the (big) parent.
    status = Path("/proc/self/status").read_text()
    hwm = int(status.split("VmHWM:")[1].split()[0])
    rss = max(hwm, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    transfer = marks["end"] - marks["logged_in"] if "logged_in" in marks else None
    print(json.dumps({"seconds": marks["end"] - marks["start"], "transfer": transfer, "maxrss_kb": rss}))


# -- the parent: fill, run, check ---------------------------------------------------------------


FAILURES: dict[str, list[str]] = {}


class CaseFailed(Exception):
    """A tool failed every attempt of a run; its row is left out, the others still run."""


def run_once(stack, case: str, messages: list[bytes], tls: bool) -> dict[str, float] | None:  # type: ignore[no-untyped-def]
    """One filled mailbox, one run of ``case``; None if the tool failed (recorded in FAILURES)."""
    port = stack.pop3s_port if tls else stack.pop3_port
    # Only the INBOX: the benchmark user's other folders hold bench_imap's mailboxes.
    stack.doveadm("expunge", "-u", USER, "mailbox", "INBOX", "all")
    stack.deliver(USER, messages[0])  # creates the mailbox with the right owner
    if len(messages) > 1:
        stack.deliver_many(USER, messages[1:])
    work = Path(tempfile.mkdtemp(prefix="bench-pop3-"))
    maildir = work / "Maildir"
    try:
        out = subprocess.run(
            [
                sys.executable, __file__, "--child", case, "--host", stack.host,
                "--port", str(port), "--ca", str(stack.ca_file), "--maildir", str(maildir),
                *(["--tls"] if tls else []),
            ],
            check=False, capture_output=True, text=True,
        )  # fmt: skip
        if out.returncode != 0:
            FAILURES.setdefault(case, []).append((out.stderr.strip().splitlines() or ["?"])[0])
            return None
        result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
        left = stack.message_count(USER)
        if left:
            raise SystemExit(f"{case}: {left} messages left on the server")
        if maildir.exists():
            got = len(os.listdir(maildir / "new"))
            if got != len(messages):
                raise SystemExit(f"{case}: {got} of {len(messages)} messages in the Maildir")
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_case(  # type: ignore[no-untyped-def]
    stack, cases: tuple[str, str], messages: list[bytes], tls: bool, repeat: int
) -> list[dict[str, float]]:
    """Each case ``repeat`` times, the two interleaved (a, b, a, b, ...) so that a slow spell of
    the machine falls on both alike; the medians, per case."""
    runs: dict[str, list[dict[str, float]]] = {case: [] for case in cases}
    for _ in range(repeat):
        for case in cases:
            for _attempt in range(3):  # getmail6 sometimes loses a SIGCHLD and gives up on a delivery
                result = run_once(stack, case, messages, tls)
                if result is not None:
                    break
            else:
                raise CaseFailed(f"{case} failed 3 times: {FAILURES[case][-3:]}")
            runs[case].append(result)
    out = []
    for case in cases:
        transfers = [r["transfer"] for r in runs[case] if r["transfer"] is not None]
        out.append({
            "seconds": statistics.median(r["seconds"] for r in runs[case]),
            "transfer": statistics.median(transfers) if transfers else float("nan"),
            "rss_mb": max(r["maxrss_kb"] for r in runs[case]) / 1024,
        })  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--big-mb", type=int, default=25)
    parser.add_argument("--child")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--ca")
    parser.add_argument("--maildir")
    parser.add_argument("--tls", action="store_true")
    args = parser.parse_args()
    if args.child:
        args.case = args.child
        child(args)
        return

    stack = _stack()
    small = small_messages(args.messages)
    big = [big_message(args.big_mb)]
    have_getmail = shutil.which("getmail") is not None
    rows: list[tuple[str, str, dict[str, float], dict[str, float], int]] = []
    plans = [
        (f"{args.messages} x {len(small[0]) // 1024} KB, plaintext", small, False, "poplib", "mailkit"),
        (f"{args.messages} x {len(small[0]) // 1024} KB, TLS", small, True, "poplib", "mailkit"),
        (f"1 x {args.big_mb} MB, plaintext", big, False, "poplib", "mailkit"),
        (f"1 x {args.big_mb} MB, TLS", big, True, "poplib", "mailkit"),
        (f"{args.messages} x {len(small[0]) // 1024} KB, plaintext", small, False, "raw", "mailkit"),
        (f"{args.messages} x {len(small[0]) // 1024} KB, TLS", small, True, "raw", "mailkit"),
        (f"1 x {args.big_mb} MB, plaintext", big, False, "raw", "mailkit"),
        (f"1 x {args.big_mb} MB, TLS", big, True, "raw", "mailkit"),
        (f"{args.messages} x {len(small[0]) // 1024} KB, TLS, into Maildir", small, True,
         "getmail6", "mailkit-maildir"),
        (f"1 x {args.big_mb} MB, TLS, into Maildir", big, True, "getmail6", "mailkit-maildir"),
    ]  # fmt: skip
    for title, messages, tls, baseline, ours in plans:
        if baseline == "getmail6" and not have_getmail:
            print(f"skipping {title}: getmail not installed (apt-get install getmail6)")
            continue
        try:
            base, mine = run_case(stack, (baseline, ours), messages, tls, args.repeat)
        except CaseFailed as exc:
            print(f"skipping {title}: {exc}", flush=True)
            continue
        rows.append((title, baseline, base, mine, len(messages)))
        print(f"... {title}: {baseline} {base['seconds']:.3f} s, {ours} {mine['seconds']:.3f} s", flush=True)

    print()
    print(f"POP3 download-and-delete, median of {args.repeat} runs (baseline and mailkit interleaved)")
    header = (
        f"{'case':<34} {'baseline':<8} {'session s':>15} {'ratio':>6} "
        f"{'transfer s':>15} {'ratio':>6} {'msgs/s':>7} {'peak RSS MB':>12}"
    )
    print(header)
    print(f"{'':<34} {'':<8} {'base / mailkit':>15} {'':>6} {'base / mailkit':>15}")
    print("-" * len(header))
    for title, baseline, base, mine, n in rows:
        ratio = base["seconds"] / mine["seconds"]
        transfer_ratio = base["transfer"] / mine["transfer"]
        transfer = (
            f"{base['transfer']:.3f} / {mine['transfer']:.3f}"
            if base["transfer"] == base["transfer"]
            else f"{'-':>7} / {mine['transfer']:.3f}"
        )
        tr = f"{transfer_ratio:>5.1f}x" if transfer_ratio == transfer_ratio else f"{'-':>6}"
        print(
            f"{title:<34} {baseline:<8} {base['seconds']:>6.3f} / {mine['seconds']:.3f} {ratio:>5.1f}x "
            f"{transfer:>15} {tr} {n / mine['transfer']:>7.0f} {base['rss_mb']:>5.0f} / {mine['rss_mb']:.0f}"
        )
    print(
        "session = connect, TLS, login, transfer, QUIT; transfer = after login until QUIT is answered\n"
        "(listings, RETRs, saves, DELEs, QUIT). ratio = baseline / mailkit (higher is better).\n"
        "raw = a socket sending all RETRs and DELEs in one write, parsing nothing, saving nothing:\n"
        "the floor set by the server (a ratio near 1.0x means mailkit is as fast as the server allows).\n"
        "getmail6 runs as a separate program: its session includes its start-up; no transfer split."
    )
    for case, errors in FAILURES.items():
        print(f"{case}: {len(errors)} failed run(s), rerun: {errors[0]}")


if __name__ == "__main__":
    main()
