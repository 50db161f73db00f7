"""`mailkit discover ADDRESS [--json] [--explain]`: find and show the best endpoints for an address.

Rule: running this command is an explicit discovery: it ignores the cached profile and resets the
downgrade latch (see docs/discovery.md). ``--json`` prints exactly the Profile JSON document.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from ..account import settings_from_env
from ..config import Protocol, Timeouts
from ..errors import MailkitError
from ._options import AccountOptions, account_options

if TYPE_CHECKING:
    from ..discovery import Profile

__all__ = ["COMMANDS", "discover_command"]

_STYLE = {"ok": "green", "auth-failed": "yellow", "skipped": "dim", "timeout": "red", "refused": "red"}


def _summary(profile: Profile) -> Table:
    table = Table(title=f"mailkit discover {profile.address}", title_justify="left")
    for name in ("protocol", "endpoint", "source", "verified", "auth"):
        table.add_column(name)
    for protocol in Protocol:
        choice = profile.choice(protocol)
        if choice is None:
            error = profile.failure(protocol)
            table.add_row(protocol.value, "[red]none[/red]", "", "", str(error) if error else "")
            continue
        table.add_row(
            protocol.value,
            choice.endpoint.url,
            choice.source,
            "yes" if choice.verified else "no",
            " ".join(choice.auth_mechanisms),
        )
    return table


def _explain(profile: Profile) -> Table:
    table = Table(title="attempts (best candidates first)", title_justify="left")
    for name in ("protocol", "host", "port", "security", "source", "outcome", "seconds", "detail"):
        table.add_column(name, overflow="fold")
    for attempt in profile.attempts:
        style = _STYLE.get(attempt.outcome, "magenta")
        table.add_row(
            attempt.protocol.value,
            attempt.host,
            str(attempt.port),
            attempt.security.value,
            attempt.source,
            f"[{style}]{attempt.outcome}[/{style}]",
            f"{attempt.seconds:.3f}",
            attempt.detail,
        )
    return table


@click.command("discover")
@click.argument("target", metavar="ADDRESS", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the profile as one JSON document.")
@click.option("--explain", is_flag=True, help="Show every attempt: host, port, security, outcome, time.")
@account_options
def discover_command(target: str | None, as_json: bool, explain: bool, opts: AccountOptions) -> None:
    """Find the best working SMTP, IMAP and POP3 servers for ADDRESS (default: --address)."""
    # Imported here: dnspython and the probes cost ~0.1 s at start-up, and every other command
    # (send with a given URL, pop3 fetch, imap ...) would pay it without using it.
    from ..discovery import DiscoveryStats, discover

    kwargs = _discover_kwargs(target or opts.address, opts)
    stats = DiscoveryStats()
    error: MailkitError | None = None
    try:
        profile = discover(kwargs.pop("address"), kwargs.pop("password", None), stats=stats, **kwargs)
    except MailkitError as exc:
        found: Profile | None = getattr(exc, "profile", None)
        if found is None:
            raise
        profile, error = found, exc
    # Not a terminal (a pipe, a file): wide enough that rows stay readable and greppable.
    width = None if sys.stdout.isatty() else 200
    out = Console(file=sys.stdout, width=width)
    side = Console(file=sys.stderr, width=None if sys.stderr.isatty() else 200) if as_json else out
    if as_json:
        click.echo(profile.to_json())
    else:
        out.print(_summary(profile))
    if explain:
        side.print(_explain(profile))
        for source, notes in stats.sources.items():
            for note in notes:
                side.print(f"{source}: {note}", markup=False, highlight=False)
        side.print(
            f"{stats.connections} connection(s); lookups {stats.lookups_seconds:.3f}s, "
            f"probes {stats.probe_seconds:.3f}s",
            highlight=False,
        )
    if error is not None:
        raise error


def _discover_kwargs(address: str | None, opts: AccountOptions) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "address": address,
        "ca_file": opts.ca_file,
        "allow_insecure": True if opts.allow_insecure else None,
    }
    if opts.password_file:
        from ..account import read_password_file

        overrides["password"] = read_password_file(opts.password_file)
    env = settings_from_env(None, **overrides)
    endpoints = {name: env[name] for name in ("smtp", "imap", "pop3") if env.get(name)}
    for name, url in (("smtp", opts.smtp), ("imap", opts.imap), ("pop3", opts.pop3)):
        if url:
            endpoints[name] = url
    return {
        "address": env["address"],
        "password": env.get("password"),
        "ca_file": env.get("ca_file"),
        "allow_insecure": bool(env.get("allow_insecure")),
        "timeouts": Timeouts.uniform(opts.timeout) if opts.timeout else None,
        "resolve": list(opts.resolve),
        "nameserver": opts.nameserver,
        "test_environment": bool(env.get("test_environment")),
        "endpoints": endpoints or None,
        "refresh": True,  # an explicit run: the user asked to look again
    }


COMMANDS: list[click.Command] = [discover_command]
