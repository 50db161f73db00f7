"""``-v``: the CLI's protocol trace goes to stderr (stdout stays the command's output), shows the
IMAP dialogue and never a credential."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults.scripted import assert_no_secret
from tests.integration.mailstack import REPO_ROOT, MailStack

ALICE = "alice@example.test"


def _imap_ls(ms: MailStack, tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[bytes]:
    pw = tmp_path / "pw"
    pw.write_text(ms.users[ALICE] + "\n")
    env = {**os.environ, "MAILKIT_TEST_ENVIRONMENT": "1", "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200"}
    args = [sys.executable, "-m", "mailkit", "imap", "ls", *flags, "--address", ALICE,
            "--password-file", str(pw), "--imap", ms.url("imap"), "--ca-file", str(ms.ca_file)]  # fmt: skip
    return subprocess.run(args, env=env, capture_output=True, timeout=60, check=False)


@pytest.mark.parametrize("flag", ["-v", "-vv"])
def test_verbose_traces_the_imap_dialogue_without_the_password(
    mailstack: MailStack, tmp_path: Path, flag: str
) -> None:
    result = _imap_ls(mailstack, tmp_path, flag)
    assert result.returncode == 0, result.stderr.decode()
    trace = result.stderr
    for sent in (b"STARTTLS", b"AUTHENTICATE", b"LIST"):
        assert b"> b'" in trace and sent in trace, f"{sent!r} missing from the trace"
    assert b"< b'* LIST" in trace  # responses too, not only commands
    assert (b"matched b'" in trace) == (flag == "-vv")  # imaplib's parser notes only at -vv
    assert_no_secret(trace, ALICE, mailstack.users[ALICE], "the -v trace")
    assert b"> b'" not in result.stdout  # the command's output stays clean
    assert b"INBOX" in result.stdout


def test_without_verbose_nothing_is_traced(mailstack: MailStack, tmp_path: Path) -> None:
    result = _imap_ls(mailstack, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert b"> b'" not in result.stderr and b"AUTHENTICATE" not in result.stderr
