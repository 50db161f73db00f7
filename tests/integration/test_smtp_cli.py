"""`mailkit send` and `mailkit bulk` against the real stack."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.integration.mailstack import MailStack
from tests.integration.test_smtp_send import fetch_all


def _run(stack: MailStack, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MAILKIT_TEST_ENVIRONMENT="1", MAILKIT_PASSWORD="alicepw",
               MAILKIT_ADDRESS="alice@example.test", MAILKIT_CA_FILE=str(stack.ca_file),
               MAILKIT_SMTP=stack.url("submission"))
    return subprocess.run([sys.executable, "-m", "mailkit", *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_cli_send_with_attachment_and_bcc(clean_mailstack: MailStack, tmp_path: Path) -> None:
    body = tmp_path / "body.txt"
    body.write_text("Bonjour à tous\n", encoding="utf-8")
    attachment = tmp_path / "rapport.csv"
    attachment.write_bytes(b"a,b\n1,2\n")
    proc = _run(clean_mailstack, "send", "--to", "bob@example.test", "--bcc", "carol@example.test",
                "--subject", "Rapport été", "--text-file", str(body), "--attach", str(attachment))
    assert proc.returncode == 0, proc.stderr
    assert "queued as" in proc.stdout
    (msg,) = fetch_all(clean_mailstack, "bob@example.test", 1)
    assert msg["Subject"] == "Rapport été" and msg["Bcc"] is None
    assert next(msg.iter_attachments()).get_payload(decode=True) == b"a,b\n1,2\n"
    fetch_all(clean_mailstack, "carol@example.test", 1)


def test_cli_send_refused_recipient_exits_1(clean_mailstack: MailStack) -> None:
    proc = _run(clean_mailstack, "send", "--to", "nobody@example.test", "--subject", "x", "--text", "t")
    assert proc.returncode == 1
    assert "RecipientsRefusedError" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_bulk_then_rerun_skips_everything(clean_mailstack: MailStack, tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("email,first_name\nbob@example.test,Bób\ncarol@example.test,Carol\n",
                                    encoding="utf-8")
    (tmp_path / "t.txt").write_text("Subject: Hi {{ first_name }}\nReply-To: alice@example.test\n\n"
                                    "Dear {{ first_name }},\nnews.\n", encoding="utf-8")
    (tmp_path / "t.html").write_text("<p>Dear {{ first_name }}</p>", encoding="utf-8")
    args = ("bulk", "--recipients", str(tmp_path / "r.csv"), "--template", str(tmp_path / "t.txt"),
            "--html-template", str(tmp_path / "t.html"), "--journal", str(tmp_path / "j.db"))
    dry = _run(clean_mailstack, *args, "--dry-run")
    assert dry.returncode == 0 and "Subject: =?utf-8?" in dry.stdout and "2 messages rendered" in dry.stderr
    first = _run(clean_mailstack, *args)
    assert first.returncode == 0, first.stderr
    assert "2 accepted" in first.stdout
    second = _run(clean_mailstack, *args)
    assert "0 accepted, 2 skipped" in second.stdout
    (msg,) = fetch_all(clean_mailstack, "bob@example.test", 1)
    assert msg["Subject"] == "Hi Bób"
    assert "Dear Bób" in msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
