"""The public surface: what `import mailkit` offers, sorted and present, and typed."""

from pathlib import Path

import mailkit


def test_all_is_sorted_and_every_name_exists():
    assert mailkit.__all__ == sorted(mailkit.__all__)
    missing = [name for name in mailkit.__all__ if not hasattr(mailkit, name)]
    assert missing == []


def test_interface_names_are_exported():
    for name in ("Account", "AsyncAccount", "Profile", "discover", "discover_async", "Endpoint",
                 "MailkitError", "SendResult", "Timeouts", "Security"):
        assert name in mailkit.__all__, name


def test_package_is_marked_typed():
    assert (Path(mailkit.__file__).parent / "py.typed").is_file()


def test_import_leaves_discovery_and_smtp_dependencies_unloaded_until_used():
    import subprocess
    import sys

    code = (
        "import sys, mailkit\n"
        "print('dns' in sys.modules, 'aiosmtplib' in sys.modules)\n"
        "mailkit.discover, mailkit.SendResult\n"
        "print('dns' in sys.modules, 'aiosmtplib' in sys.modules)\n"
        "print(all(getattr(mailkit, n) is not None for n in mailkit.__all__))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "True", "True", "True"]


def test_cli_start_leaves_discovery_unloaded_until_discover_runs():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from mailkit.cli import cli\n"
        "CliRunner().invoke(cli, ['pop3', 'fetch', '--help'], catch_exceptions=False)\n"
        "print('dns' in sys.modules, 'mailkit.discovery' in sys.modules)\n"
        "CliRunner().invoke(cli, ['discover', '--help'], catch_exceptions=False)\n"
        "print('dns' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # Only running the discover command (not its --help) loads discovery.
    assert out.split() == ["False", "False", "False"]
