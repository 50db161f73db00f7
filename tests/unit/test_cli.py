"""The mailkit command: version, help, common options, exit codes."""

import subprocess
import sys

from click.testing import CliRunner

import mailkit
from mailkit.cli import cli
from mailkit.cli._options import AccountOptions


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert mailkit.__version__ in result.output


def test_help_lists_commands():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "Usage: mailkit" in result.output


def test_unknown_command_is_usage_error():
    result = CliRunner().invoke(cli, ["frobnicate"])
    assert result.exit_code == 2


def test_console_script_module_runs():
    out = subprocess.run(
        [sys.executable, "-m", "mailkit", "--version"], capture_output=True, text=True, check=True
    )
    assert mailkit.__version__ in out.stdout


def test_account_options_read_password_file_and_override_env(tmp_path, monkeypatch):
    pw = tmp_path / "pw"
    pw.write_text("file-secret\n")
    monkeypatch.setenv("MAILKIT_ADDRESS", "env@example.com")
    monkeypatch.setenv("MAILKIT_SMTP", "smtps://env.example.com")
    opts = AccountOptions(address="cli@example.com", password_file=str(pw), smtp="smtps://cli.example.com")
    kwargs = opts.account_kwargs()
    assert kwargs["address"] == "cli@example.com"
    assert kwargs["password"] == "file-secret"
    assert kwargs["smtp"] == "smtps://cli.example.com"
