"""`mailkit pop3` commands."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
