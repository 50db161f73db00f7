"""The account options every command takes, and turning them into an Account.

Rule: the password never comes from an argument (it would show in ``ps``): it comes from
``--password-file`` or the MAILKIT_PASSWORD / MAILKIT_PASSWORD_FILE environment variables.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from .._log import IMAPCLIENT_LOGGERS
from ..account import Account, read_password_file, settings_from_env
from ..config import Timeouts

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["AccountOptions", "account_options"]


@dataclass
class AccountOptions:
    address: str | None = None
    password_file: str | None = None
    smtp: str | None = None
    imap: str | None = None
    pop3: str | None = None
    ca_file: str | None = None
    allow_insecure: bool = False
    timeout: float | None = None
    verbose: int = 0
    resolve: tuple[str, ...] = field(default_factory=tuple)
    nameserver: str | None = None

    def account_kwargs(self, address: str | None = None) -> dict[str, Any]:
        """Keyword arguments for Account: environment first, command-line options over it."""
        overrides: dict[str, Any] = {
            "address": address or self.address,
            "smtp": self.smtp,
            "imap": self.imap,
            "pop3": self.pop3,
            "ca_file": self.ca_file,
            "allow_insecure": True if self.allow_insecure else None,
            "timeouts": Timeouts.uniform(self.timeout) if self.timeout else None,
        }
        if self.password_file:
            overrides["password"] = read_password_file(self.password_file)
        return settings_from_env(os.environ, **overrides)

    def account(self, address: str | None = None) -> Account:
        kwargs = self.account_kwargs(address)
        return Account(kwargs.pop("address"), **kwargs)


def _setup_logging(verbose: int) -> None:
    if not verbose:
        return
    from rich.console import Console
    from rich.logging import RichHandler

    # stderr: stdout carries the commands' output (JSON lines for watch and discover).
    handler = RichHandler(show_path=False, console=Console(stderr=True), markup=False)
    if verbose == 1:
        handler.addFilter(_protocol_lines_only)
    # IMAP commands are sent by imapclient, which logs them itself (its loggers carry mailkit's
    # credential filter).
    for name in ("mailkit", *IMAPCLIENT_LOGGERS):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)


def _protocol_lines_only(record: logging.LogRecord) -> bool:
    """imaplib's log without its parser's notes: the lines sent (``>``) and received (``<``)."""
    return record.name != "imapclient.imaplib" or record.getMessage().startswith(("> ", "< "))


def account_options(command: F) -> F:
    """Add the common account options; the command receives them as ``opts: AccountOptions``."""
    options = [
        click.option("--address", help="The account's email address [env: MAILKIT_ADDRESS]."),
        click.option(
            "--password-file",
            type=click.Path(dir_okay=False),
            help="File whose first line is the password [env: MAILKIT_PASSWORD_FILE].",
        ),
        click.option("--smtp", metavar="URL", help="SMTP endpoint, e.g. smtps://host:465."),
        click.option("--imap", metavar="URL", help="IMAP endpoint, e.g. imaps://host:993."),
        click.option("--pop3", metavar="URL", help="POP3 endpoint, e.g. pop3s://host:995."),
        click.option(
            "--ca-file", type=click.Path(dir_okay=False), help="Extra CA certificate(s) to trust."
        ),
        click.option(
            "--allow-insecure",
            is_flag=True,
            help="Permit plaintext and unverified TLS (never silently).",
        ),
        click.option(
            "--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds per step."
        ),
        click.option(
            "-v",
            "--verbose",
            count=True,
            help="Protocol trace on stderr (secrets redacted); -vv adds imaplib's parser notes.",
        ),
        click.option(
            "--resolve",
            multiple=True,
            metavar="HOST=ADDRESS",
            help="Use ADDRESS for HOST during discovery (repeatable).",
        ),
        click.option("--nameserver", metavar="ADDRESS[:PORT]", help="DNS server for discovery."),
    ]

    names = [
        "address", "password_file", "smtp", "imap", "pop3", "ca_file",
        "allow_insecure", "timeout", "verbose", "resolve", "nameserver",
    ]  # fmt: skip

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        opts = AccountOptions(**{name: kwargs.pop(name) for name in names})
        _setup_logging(opts.verbose)
        return command(*args, opts=opts, **kwargs)

    decorated: Any = wrapper
    for option in reversed(options):
        decorated = option(decorated)
    return decorated  # type: ignore[no-any-return]
