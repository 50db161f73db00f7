"""`mailkit pop3 fetch --maildir DIR [--keep] [--state FILE.db]`: download (and delete) into a Maildir.

Rule: the command only wires options to ``Account.pop3.download_and_delete``; the no-loss order
lives there. Progress goes to stderr, the summary to stdout; errors per message give exit 1.
"""

from __future__ import annotations

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from ..pop3 import DownloadReport
from ..pop3 import Progress as DownloadProgress
from ._options import AccountOptions, account_options

__all__ = ["COMMANDS", "pop3_group"]


@click.group("pop3")
def pop3_group() -> None:
    """Download mail over POP3."""


@pop3_group.command("fetch")
@click.option(
    "--maildir",
    required=True,
    type=click.Path(file_okay=False),
    help="Maildir to deliver into (created if missing).",
)
@click.option("--keep", is_flag=True, help="Leave messages on the server (each is fetched once).")
@click.option(
    "--delete-after-days",
    type=click.FloatRange(min=0),
    help="With --keep: delete messages saved this many days ago or more.",
)
@click.option(
    "--state",
    type=click.Path(dir_okay=False),
    help="SQLite file remembering fetched messages [default: DIR/.mailkit-pop3.db].",
)
@click.option("--max-messages", type=click.IntRange(min=0), help="Fetch at most this many.")
@click.option("--max-size", type=click.IntRange(min=0), help="Leave messages larger than this many bytes.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@account_options
def fetch(
    opts: AccountOptions,
    maildir: str,
    keep: bool,
    delete_after_days: float | None,
    state: str | None,
    max_messages: int | None,
    max_size: int | None,
    quiet: bool,
) -> None:
    """Download every message into a Maildir, deleting it from the server once saved."""
    if delete_after_days is not None and not keep:
        raise click.UsageError("--delete-after-days goes with --keep")
    console = Console(stderr=True)
    bar = Progress(
        TextColumn("[bold]pop3[/bold]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} msgs"),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet or not console.is_terminal,
        transient=True,
    )
    task = bar.add_task("fetch", total=None)

    def on_progress(p: DownloadProgress) -> None:
        bar.update(task, total=p.total, completed=p.done)

    with opts.account() as account, bar:
        report = account.pop3.download_and_delete(
            maildir,
            keep=keep,
            delete_after_days=delete_after_days,
            state=state,
            max_messages=max_messages,
            max_size=max_size,
            progress=on_progress,
        )
    _print_summary(report)
    if report.errors:
        click.get_current_context().exit(1)


def _print_summary(report: DownloadReport) -> None:
    click.echo(report.summary())
    too_large = [s for s in report.skipped if s.reason == "too large"]
    if too_large:
        click.echo(f"left on the server as too large: {', '.join(s.uidl or '?' for s in too_large)}")
    for error in report.errors:
        click.echo(f"not deleted: {error}", err=True)


COMMANDS: list[click.Command] = [pop3_group]
