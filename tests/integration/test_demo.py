"""The README's demo (examples/demo.py) does its whole job against the real stack."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_sends_reads_back_and_downloads(clean_mailstack):
    stack = clean_mailstack
    env = {
        **os.environ,
        "MAILKIT_ADDRESS": "alice@example.test",
        "MAILKIT_PASSWORD": stack.users["alice@example.test"],
        "MAILKIT_TEST_ENVIRONMENT": "1",
        "MAILKIT_CA_FILE": str(stack.ca_file),
        "MAILKIT_SMTP": stack.url("submissions"),
        "MAILKIT_IMAP": stack.url("imaps"),
        "MAILKIT_POP3": stack.url("pop3s"),
    }
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / "demo.py")],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "attachments ['report.csv']" in out.stdout
    assert "5 accepted of 5" in out.stdout
    assert "5 skipped by the journal, 0 resent" in out.stdout
    assert "6 downloaded" in out.stdout and "0 errors" in out.stdout
    assert "byte for byte: True" in out.stdout
    assert "left on the server: 0" in out.stdout
    assert stack.message_count("alice@example.test") == 0
    assert "alicepw" not in out.stdout + out.stderr
