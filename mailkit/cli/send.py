"""`mailkit send` (one message) and `mailkit bulk` (a personalized campaign with a journal).

Rule: `bulk` always keeps a journal, so an interrupted campaign can be run again with the same
command and sends nothing twice; messages whose fate is unknown are listed, and resent only
with --resend-unknown.
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import click

from ..errors import ConfigError
from ._options import AccountOptions, account_options

__all__ = ["COMMANDS", "bulk", "send"]


def _read_text(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} {path!r}: {exc}") from None


@click.command()
@click.option("--to", "to", multiple=True, required=True, metavar="ADDR", help="Recipient (repeatable).")
@click.option("--cc", multiple=True, metavar="ADDR", help="Copy recipient (repeatable).")
@click.option("--bcc", multiple=True, metavar="ADDR", help="Blind copy recipient (repeatable).")
@click.option("--reply-to", metavar="ADDR", help="Reply-To address.")
@click.option("--subject", required=True, help="Subject line.")
@click.option("--text", help="Plain-text body.")
@click.option("--text-file", type=click.Path(dir_okay=False), help="File with the plain-text body.")
@click.option("--html-file", type=click.Path(dir_okay=False), help="File with an HTML alternative.")
@click.option("--attach", multiple=True, type=click.Path(dir_okay=False), help="Attach a file (repeatable).")
@account_options
def send(
    opts: AccountOptions,
    to: tuple[str, ...],
    cc: tuple[str, ...],
    bcc: tuple[str, ...],
    reply_to: str | None,
    subject: str,
    text: str | None,
    text_file: str | None,
    html_file: str | None,
    attach: tuple[str, ...],
) -> None:
    """Send one message."""
    if (text is None) == (text_file is None):
        raise click.UsageError("give exactly one of --text and --text-file")
    body = text if text is not None else _read_text(text_file or "", "text file")
    html = _read_text(html_file, "HTML file") if html_file else None
    with opts.account() as acct:
        result = acct.send(
            to=list(to), cc=list(cc) or None, bcc=list(bcc) or None, reply_to=reply_to, subject=subject,
            text=body, html=html, attachments=list(attach),
        )  # fmt: skip
    click.echo(f"sent {result.message_id} to {', '.join(result.accepted)}"
               + (f" (queued as {result.queue_id})" if result.queue_id else ""))  # fmt: skip
    for rcpt, reply in result.refused.items():
        click.echo(f"refused {rcpt}: {reply}", err=True)
    if result.refused:
        sys.exit(1)


def _read_rows(path: str) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or "email" not in reader.fieldnames:
                raise ConfigError(f"{path}: the CSV needs a header row with an 'email' column")
            return [dict(row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"cannot read recipients {path!r}: {exc}") from None


@click.command()
@click.option("--recipients", required=True, type=click.Path(dir_okay=False),
              help="CSV with an 'email' column.")  # fmt: skip
@click.option("--template", "template_file", required=True, type=click.Path(dir_okay=False),
              help="Headers, blank line, plain-text body (Jinja2).")  # fmt: skip
@click.option("--html-template", type=click.Path(dir_okay=False), help="HTML alternative (Jinja2).")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--rate-per-minute", type=click.FloatRange(min=0, min_open=True),
              help="Overall send rate limit.")  # fmt: skip
@click.option("--per-connection", type=click.IntRange(1), default=100, show_default=True,
              help="Messages per connection before it is recycled.")  # fmt: skip
@click.option("--journal", required=True, type=click.Path(dir_okay=False), help="Campaign journal (SQLite).")
@click.option("--resend-unknown", is_flag=True, help="Also resend messages whose delivery is unknown.")
@click.option("--dry-run", is_flag=True, help="Render every message, print the first, send nothing.")
@account_options
def bulk(
    opts: AccountOptions,
    recipients: str,
    template_file: str,
    html_template: str | None,
    concurrency: int,
    rate_per_minute: float | None,
    per_connection: int,
    journal: str,
    resend_unknown: bool,
    dry_run: bool,
) -> None:
    """Send a personalized message to every row of a CSV file."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..message import AddressPolicy, Outgoing
    from ..smtp.template import MailTemplate

    template = MailTemplate.parse(
        _read_text(template_file, "template"),
        _read_text(html_template, "HTML template") if html_template else None,
    )
    rows = _read_rows(recipients)
    kwargs = opts.account_kwargs()
    sender = kwargs["address"]
    policy = AddressPolicy(test_environment=bool(kwargs.get("test_environment")))
    if dry_run:
        messages = [template.render(row, sender=sender, policy=policy) for row in rows]
        if messages:
            click.echo(messages[0].data.decode("utf-8", "replace"))
        click.echo(f"dry run: {len(messages)} messages rendered, none sent", err=True)
        return

    def items() -> Iterator[Outgoing]:
        for row in rows:
            yield template.render(row, sender=sender, policy=policy)

    counts: Counter[str] = Counter()
    unknown: list[str] = []
    failed: list[str] = []
    console = Console(stderr=True)
    columns = (
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
        TextColumn("accepted {task.fields[accepted]} failed {task.fields[failed]}"),
    )  # fmt: skip
    with opts.account() as acct, Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("sending", total=len(rows), rate="", accepted=0, failed=0)
        for result in acct.send_many(
            items(), concurrency=concurrency, rate_per_minute=rate_per_minute,
            per_connection=per_connection, journal=journal, resend_unknown=resend_unknown,
        ):  # fmt: skip
            counts[result.state] += 1
            if result.state == "unknown":
                unknown.append(result.key)
            elif result.state in ("failed", "deferred"):
                failed.append(f"{result.key}: {result.error}")
            speed = progress.tasks[0].speed
            progress.update(
                task, advance=1, rate=f"{speed:.1f}/s" if speed else "",
                accepted=counts["accepted"] + counts["skipped"], failed=counts["failed"] + counts["deferred"],
            )  # fmt: skip
    summary = ", ".join(f"{counts[s]} {s}" for s in ("accepted", "skipped", "failed", "deferred", "unknown"))
    click.echo(f"done: {summary} (journal {journal})")
    for line in failed[:20]:
        click.echo(f"not sent: {line}", err=True)
    if unknown:
        click.echo(
            f"{len(unknown)} message(s) may or may not have been delivered (connection lost after the "
            "end of DATA); check, then run again with --resend-unknown to send them anyway:", err=True
        )
        for key in unknown:
            click.echo(f"  unknown: {key}", err=True)
    if failed or unknown:
        sys.exit(1)


COMMANDS: list[click.Command] = [send, bulk]
