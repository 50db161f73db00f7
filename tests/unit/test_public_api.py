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
