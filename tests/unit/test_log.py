"""Protocol transcripts never carry credentials."""

import logging

import pytest

from mailkit._log import log_sent, redact_command


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", "AUTH PLAIN ***"),
        ("auth xoauth2 dXNlcj1hAWF1dGg9QmVhcmVyIHRvawEB", "auth xoauth2 ***"),
        ("a1 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==", "a1 AUTHENTICATE PLAIN ***"),
        ("PASS s3cret with spaces", "PASS ***"),
        ("APOP alice c4c9334bac560ecc979e58001b3e22fb", "APOP alice ***"),
        ('a2 LOGIN "alice@example.com" "pa ss\\"word"', 'a2 LOGIN "alice@example.com" ***'),
        ("a2 LOGIN alice secret", "a2 LOGIN alice ***"),
        ("USER alice", "USER alice"),
        ("a3 SELECT INBOX", "a3 SELECT INBOX"),
        ("MAIL FROM:<alice@example.com>", "MAIL FROM:<alice@example.com>"),
    ],
)
def test_redact_command(line, expected):
    assert redact_command(line) == expected
    assert redact_command(line.encode()) == expected


def test_secret_lines_are_never_logged(caplog):
    logger = logging.getLogger("mailkit.test")
    with caplog.at_level(logging.DEBUG, logger="mailkit.test"):
        log_sent(logger, b"c2VjcmV0LXNhc2wtcmVzcG9uc2U=", secret=True)
        log_sent(logger, b"PASS hunter2")
    assert "c2VjcmV0" not in caplog.text
    assert "hunter2" not in caplog.text
    assert caplog.text.count("***") == 2
