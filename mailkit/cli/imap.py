"""`mailkit imap` commands: ls, search, sync (Maildir mirror with a progress bar), watch (JSON lines)."""

from __future__ import annotations

import json
import sys

import click

from ._options import AccountOptions, account_options

__all__ = ["COMMANDS"]


@click.group("imap")
def imap_group() -> None:
    """IMAP: list folders, search, mirror into a Maildir, watch for changes."""


@imap_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@account_options
def ls(opts: AccountOptions, as_json: bool) -> None:
    """List folders with their special use (Sent, Trash, Junk, ...)."""
    with opts.account() as acct, acct.imap() as imap:
        folders = imap.folders()
    if as_json:
        doc = [
            {
                "name": f.name,
                "delimiter": f.delimiter,
                "flags": list(f.flags),
                "special_use": f.special_use.value if f.special_use else None,
            }
            for f in folders
        ]
        click.echo(json.dumps(doc, ensure_ascii=False))
        return
    for f in folders:
        role = f" ({f.special_use.value})" if f.special_use else ""
        click.echo(f"{f.name}{role}")


@imap_group.command("search")
@click.option("--mailbox", default="INBOX", show_default=True, help="Mailbox to search.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per message.")
@click.argument("query", nargs=-1, required=True)
@account_options
def search(opts: AccountOptions, mailbox: str, as_json: bool, query: tuple[str, ...]) -> None:
    """Search MAILBOX: QUERY in IMAP syntax (e.g. 'UNSEEN FROM bob') or plain words (TEXT search)."""
    from ..imap.query import parse_query

    q = parse_query(" ".join(query))
    with opts.account() as acct, acct.imap() as imap:
        imap.examine(mailbox)
        uids = imap.search(q)
        for msg in imap.fetch(uids, envelope=True):
            env = msg.envelope
            subject = env.subject if env else None
            sender = str(env.from_[0]) if env and env.from_ else ""
            if as_json:
                click.echo(
                    json.dumps(
                        {
                            "uid": msg.uid,
                            "flags": list(msg.flags or ()),
                            "size": msg.size,
                            "from": sender,
                            "subject": subject,
                            "date": env.date if env else None,
                        },
                        ensure_ascii=False,
                    )
                )
            else:
                click.echo(f"{msg.uid}\t{sender}\t{subject or ''}")


@imap_group.command("sync")
@click.option("--mailbox", default="INBOX", show_default=True)
@click.option("--maildir", required=True, type=click.Path(file_okay=False), help="Maildir to mirror into.")
@click.option(
    "--state", "state_file", required=True, type=click.Path(dir_okay=False), help="SQLite sync state."
)
@click.option("--no-fsync", is_flag=True, help="Faster, but a crash may lose mirrored messages.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@account_options
def sync(
    opts: AccountOptions, mailbox: str, maildir: str, state_file: str, no_fsync: bool, quiet: bool
) -> None:
    """Mirror MAILBOX into a Maildir incrementally (new, flag changes, vanished)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    counts = {"new": 0, "flags": 0, "vanished": 0, "reset": 0}
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeRemainingColumn(), disable=quiet or not sys.stderr.isatty(), transient=True,
        console=None,
    )  # fmt: skip
    with opts.account() as acct, acct.imap() as imap, progress:
        task = progress.add_task(f"{mailbox}", total=None)

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        for change in imap.sync(
            mailbox, state=state_file, into=maildir, fsync=not no_fsync, on_progress=on_progress
        ):
            counts[change.kind.value] += 1
    click.echo(
        f"{mailbox}: {counts['new']} new, {counts['flags']} flag changes, "
        f"{counts['vanished']} vanished"
        + (" (UIDVALIDITY changed: re-baselined)" if counts["reset"] else ""),
        err=True,
    )


@imap_group.command("watch")
@click.option("--mailbox", default="INBOX", show_default=True)
@account_options
def watch(opts: AccountOptions, mailbox: str) -> None:
    """Print one JSON line per change to MAILBOX as it happens (IDLE); Ctrl-C stops."""
    with opts.account() as acct, acct.imap() as imap:
        for change in imap.watch(mailbox):
            click.echo(json.dumps(change.to_json(), ensure_ascii=False))
            sys.stdout.flush()


COMMANDS: list[click.Command] = [imap_group]
