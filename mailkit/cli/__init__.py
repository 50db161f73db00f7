"""The ``mailkit`` command. Exit status: 0 success, 1 mail error, 2 bad usage."""

from __future__ import annotations

import sys
from typing import Any

import click

from .._version import __version__
from ..errors import ConfigError, MailkitError

__all__ = ["cli", "main"]


class _Group(click.Group):
    """Turns mailkit errors into one line on stderr and the documented exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            click.echo(f"mailkit: {exc}", err=True)
            ctx.exit(2)
        except MailkitError as exc:
            click.echo(f"mailkit: {exc.__class__.__name__}: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("mailkit: interrupted", err=True)
            ctx.exit(130)


@click.group(name="mailkit", cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="mailkit")
def cli() -> None:
    """Send, download and sync email: SMTP, POP3 and IMAP, secure by default."""


def _register() -> None:
    from . import discover, imap, pop3, send

    for module in (discover, send, pop3, imap):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="mailkit")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
