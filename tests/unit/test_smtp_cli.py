"""Usage errors of `mailkit send` / `mailkit bulk` (no network)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from mailkit.cli import cli


def test_send_needs_exactly_one_body() -> None:
    result = CliRunner().invoke(
        cli, ["send", "--address", "a@example.com", "--to", "b@example.com", "--subject", "s"]
    )
    assert result.exit_code == 2 and "--text" in result.output


def _bulk_dry_run(tmp_path: Path) -> Result:
    """`mailkit bulk --dry-run` over r.csv and t.txt in tmp_path."""
    args = ["bulk", "--address", "a@example.com", "--recipients", str(tmp_path / "r.csv"),
            "--template", str(tmp_path / "t.txt"), "--journal", str(tmp_path / "j.db"),
            "--dry-run"]  # fmt: skip
    return CliRunner().invoke(cli, args)


def test_bulk_needs_an_email_column(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("mail,name\nx@example.com,X\n")
    (tmp_path / "t.txt").write_text("Subject: s\n\nbody\n")
    result = _bulk_dry_run(tmp_path)
    assert result.exit_code == 2 and "email" in result.output


def test_bulk_dry_run_renders_without_a_server(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("email,first_name\nbob@example.com,Bob\n")
    (tmp_path / "t.txt").write_text("Subject: Hi {{ first_name }}\n\nDear {{ first_name }}\n")
    result = _bulk_dry_run(tmp_path)
    assert result.exit_code == 0, result.output
    assert "Subject: Hi Bob" in result.output and "Dear Bob" in result.output
    assert not (tmp_path / "j.db").exists()
