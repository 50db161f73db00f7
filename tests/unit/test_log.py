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


@pytest.mark.parametrize(
    ("args", "secret", "shown"),
    [
        (("> b'a1 LOGIN alice \"s3cret\"\\r\\n'",), "s3cret", "LOGIN ***"),
        (("> %s", "a1 LOGIN alice s3cret"), "s3cret", "a1 LOGIN ***"),
        (("> a2 AUTHENTICATE PLAIN AGFsaWNlAHMzY3JldA==",), "AGFsaWNl", "AUTHENTICATE PLAIN ***"),
        (("> b'a2 AUTHENTICATE xoauth2 dXNlcj1hbGljZQ=='",), "dXNlcj1h", "AUTHENTICATE xoauth2 ***"),
    ],
)
def test_imapclient_loggers_are_guarded_even_if_imapclient_stops_redacting(caplog, args, secret, shown):
    import mailkit.imap._session  # noqa: F401 - guards imapclient's loggers on import

    # Straight to the logger, past imapclient's own redacting adapter.
    with caplog.at_level(logging.DEBUG, logger="imapclient.imaplib"):
        logging.getLogger("imapclient.imaplib").debug(*args)
    assert secret not in caplog.text
    assert shown in caplog.text


@pytest.mark.parametrize(
    "line",
    [
        "< * CAPABILITY IMAP4rev1 LOGIN-REFERRALS AUTH=PLAIN",
        "< b'* CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=LOGIN AUTH=XOAUTH2 IDLE'",
        "< a1 OK Logged in",
        "> b'a2 AUTHENTICATE PLAIN\\r\\n'",
    ],
)
def test_credential_filter_leaves_lines_without_credentials_alone(caplog, line):
    from mailkit._log import guard_logger

    guard_logger("mailkit.test.guarded")
    guard_logger("mailkit.test.guarded")  # once, however often called
    logger = logging.getLogger("mailkit.test.guarded")
    assert len(logger.filters) == 1
    with caplog.at_level(logging.DEBUG, logger="mailkit.test.guarded"):
        logger.debug(line)
    assert caplog.records[-1].getMessage() == line
