"""SMTP throughput, side by side in one run, into Postfix's ``smtp-sink`` (pure protocol cost).

    python bench/bench_smtp.py [--messages 3000] [--repeat 3] [--stack]

Cases (same 2.3 KB message bytes everywhere):
  smtp-source -d -s 1 / -s 8       the C baseline (one reused connection / eight)
  smtplib loop / aiosmtplib loop   one reused connection, the plain Python libraries
  mailkit send_many                concurrency 1, 4 and 8, with and without a journal
  PIPELINING on / off              mailkit, 1 connection, into a sink that advertises PIPELINING and
                                   into a second one started with ``smtp-sink -p`` (not advertised:
                                   mailkit falls back to lock-step MAIL, RCPT, DATA)
  personalized bulk                MailTemplate rendered per recipient + send_many, against a loop
                                   of EmailMessage + smtplib send_message
  25 MB attachment                 peak memory (tracemalloc and max RSS) of compose + send
  --stack                          a new implicit-TLS session to the mail stack's submissions port:
                                   mailkit (TCP_QUICKACK) vs aiosmtplib's own connect

Ratios are to ``smtp-source -d -s 1`` measured in the same run. Medians of --repeat runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiosmtplib

from mailkit.account import AsyncAccount
from mailkit.message import AddressPolicy, Outgoing, compose, prepare
from mailkit.smtp.journal import SQLiteJournal
from mailkit.smtp.template import MailTemplate

warnings.simplefilter("ignore")
HOST = "127.0.0.1"
SENDER = "alice@example.com"
RCPT = "bob@example.com"
BODY = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\n" * 26)[:2000]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_sink(port: int, *extra: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["smtp-sink", "-u", "nobody", *extra, f"{HOST}:{port}", "1024"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("smtp-sink did not start")


def raw_message(i: int) -> bytes:
    msg = compose(sender=SENDER, to=RCPT, subject=f"Benchmark message {i}", text=BODY,
                  message_id=f"<bench{i}@example.com>")
    return prepare(msg, sender=SENDER).data


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def smtp_source(port: int, n: int, sessions: int) -> float:
    cmd = ["smtp-source", "-d", "-s", str(sessions), "-m", str(n), "-l", "2300", "-f", SENDER, "-t", RCPT,
           f"{HOST}:{port}"]
    return timed(lambda: subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL))


def smtplib_loop(port: int, data: list[bytes]) -> float:
    def run() -> None:
        with smtplib.SMTP(HOST, port) as smtp:
            for d in data:
                smtp.sendmail(SENDER, [RCPT], d)
    return timed(run)


def aiosmtplib_loop(port: int, data: list[bytes]) -> float:
    async def run() -> None:
        smtp = aiosmtplib.SMTP(hostname=HOST, port=port, start_tls=False, use_tls=False,
                               local_hostname="bench.example.com")
        await smtp.connect()
        for d in data:
            await smtp.sendmail(SENDER, [RCPT], d)
        await smtp.quit()
    return timed(lambda: asyncio.run(run()))


def account(port: int) -> AsyncAccount:
    return AsyncAccount(SENDER, smtp=f"smtp+insecure://{HOST}:{port}", allow_insecure=True)


def mailkit_bulk(port: int, outs: list[Outgoing], concurrency: int, journal: str | None) -> float:
    """send_many with ``per_connection`` unbounded, so each worker keeps one connection."""
    async def run() -> None:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_JOURNAL_DIR")) as tmp:
            async with account(port) as acct:
                kwargs = {}
                if journal:
                    kwargs["journal"] = SQLiteJournal(os.path.join(tmp, "j.db"), synchronous=journal)
                async for result in acct.send_many(outs, concurrency=concurrency, per_connection=10**9,
                                                   **kwargs):
                    if result.state != "accepted":
                        raise RuntimeError(result)
    return timed(lambda: asyncio.run(run()))


def personalized_mailkit(port: int, rows: list[dict[str, str]], concurrency: int) -> float:
    template = MailTemplate.parse("Subject: Hello {{ first_name }}, your report\n"
                                  "Reply-To: support@example.com"
                                  "\n\nDear {{ first_name }},\n\n" + BODY)
    policy = AddressPolicy()

    async def run() -> None:
        async with account(port) as acct:
            items = (template.render(row, sender=SENDER, policy=policy) for row in rows)
            async for result in acct.send_many(items, concurrency=concurrency, per_connection=10**9):
                if result.state != "accepted":
                    raise RuntimeError(result)
    return timed(lambda: asyncio.run(run()))


def personalized_smtplib(port: int, rows: list[dict[str, str]]) -> float:
    def run() -> None:
        with smtplib.SMTP(HOST, port) as smtp:
            for row in rows:
                msg = EmailMessage()
                msg["From"] = SENDER
                msg["To"] = row["email"]
                msg["Reply-To"] = "support@example.com"
                msg["Subject"] = f"Hello {row['first_name']}, your report"
                msg.set_content(f"Dear {row['first_name']},\n\n" + BODY)
                smtp.send_message(msg)
    return timed(run)


def memory_25mb(port: int) -> str:
    """Run in a child process so max RSS belongs to this case alone."""
    code = f"""
import asyncio, os, resource, tracemalloc, warnings
warnings.simplefilter("ignore")
from mailkit.account import AsyncAccount
blob = os.urandom(25 * 1024 * 1024)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
async def main():
    async with AsyncAccount("{SENDER}", smtp="smtp+insecure://{HOST}:{port}", allow_insecure=True) as acct:
        await acct.send(to="{RCPT}", subject="big", text="see attachment", attachments=[("big.bin", blob)])
asyncio.run(main())
peak = tracemalloc.get_traced_memory()[1]
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{{peak / 2**20:.0f}} MB traced peak, {{(rss - base) / 1024:.0f}} MB max-RSS growth "
      f"(attachment 25 MB, 34 MB base64)")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    return out.stdout.strip()


def tls_sessions(n: int) -> str:
    """New implicit-TLS sessions to the stack's submissions port (greeting + EHLO + AUTH + QUIT)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.integration.mailstack import MailStack

    stack = MailStack.start()
    import ssl

    ctx = ssl.create_default_context(cafile=str(stack.ca_file))

    async def mk() -> float:
        acct = AsyncAccount("perf@example.test", password="perfpw", smtp=stack.url("submissions"),
                            ca_file=stack.ca_file, test_environment=True)
        from mailkit.smtp.client import smtp_for
        client = smtp_for(acct)
        start = time.perf_counter()
        for _ in range(n):
            session = await client.open_session()
            await session.quit()
        took = time.perf_counter() - start
        await acct.aclose()
        return took / n

    async def plain() -> float:
        start = time.perf_counter()
        for _ in range(n):
            smtp = aiosmtplib.SMTP(hostname=stack.host, port=stack.submissions_port, use_tls=True,
                                   start_tls=False, tls_context=ctx, local_hostname="bench.example.com")
            await smtp.connect()
            await smtp.login("perf@example.test", "perfpw")
            await smtp.quit()
        return (time.perf_counter() - start) / n

    a = asyncio.run(mk())
    b = asyncio.run(plain())
    return f"mailkit {a * 1000:.1f} ms/session, aiosmtplib connect {b * 1000:.1f} ms/session"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stack", action="store_true", help="also time implicit-TLS sessions to the stack")
    args = parser.parse_args()
    n = args.messages
    port = free_port()
    sink = start_sink(port)
    lockstep_port = free_port()
    lockstep_sink = start_sink(lockstep_port, "-p")  # -p: do not announce PIPELINING
    try:
        data = [raw_message(i) for i in range(n)]
        outs = [prepare(d, sender=SENDER, key=f"k{i}") for i, d in enumerate(data)]
        rows = [{"email": f"user{i}@example.com", "first_name": f"Name{i}"} for i in range(n)]
        print(f"{n} messages of {len(data[0])} bytes into smtp-sink, median of {args.repeat}")
        cases: dict[str, Callable[[], float]] = {
            "smtp-source -d -s 1": lambda: smtp_source(port, n, 1),
            "smtp-source -d -s 8": lambda: smtp_source(port, n, 8),
            "smtplib loop, 1 connection": lambda: smtplib_loop(port, data),
            "aiosmtplib loop, 1 connection": lambda: aiosmtplib_loop(port, data),
            "mailkit send_many, concurrency 1": lambda: mailkit_bulk(port, outs, 1, None),
            "mailkit c=1, PIPELINING off (smtp-sink -p)": lambda: mailkit_bulk(lockstep_port, outs, 1, None),
            "mailkit send_many, concurrency 2": lambda: mailkit_bulk(port, outs, 2, None),
            "mailkit send_many, concurrency 4": lambda: mailkit_bulk(port, outs, 4, None),
            "mailkit send_many, concurrency 8": lambda: mailkit_bulk(port, outs, 8, None),
            "mailkit send_many, c=4, journal (FULL sync)": lambda: mailkit_bulk(port, outs, 4, "FULL"),
            "mailkit send_many, c=4, journal (NORMAL sync)": lambda: mailkit_bulk(port, outs, 4, "NORMAL"),
            "personalized: EmailMessage + smtplib loop": lambda: personalized_smtplib(port, rows),
            "personalized: mailkit template + send_many(4)": lambda: personalized_mailkit(port, rows, 4),
        }
        # Round-robin over the cases, so that a change in machine load hits every case alike.
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.repeat):
            for name, fn in cases.items():
                times[name].append(fn())
        rates = {name: n / statistics.median(t) for name, t in times.items()}
        base = rates["smtp-source -d -s 1"]
        for name, rate in rates.items():
            print(f"  {name:<48} {rate:>9,.0f} msgs/s  {rate / base:5.2f}x smtp-source")
        ratio = rates["personalized: mailkit template + send_many(4)"] / rates[
            "personalized: EmailMessage + smtplib loop"]
        print(f"  personalized bulk vs EmailMessage + smtplib: {ratio:.1f}x")
        gain = rates["mailkit send_many, concurrency 1"] / rates["mailkit c=1, PIPELINING off (smtp-sink -p)"]
        print(f"  PIPELINING on vs off, mailkit 1 connection: {gain:.2f}x")
        print(f"  25 MB attachment: {memory_25mb(port)}")
    finally:
        for proc in (sink, lockstep_sink):
            proc.terminate()
            proc.wait()
    if args.stack:
        print(f"  implicit TLS session (connect, greeting, EHLO, AUTH, QUIT): {tls_sessions(20)}")
    print(f"  bench process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
