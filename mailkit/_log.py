"""Protocol transcripts at DEBUG level, with every credential replaced by '***' before it is logged.

Rule: a line goes through ``redact_command`` before it reaches a logger; lines the caller knows to be
secret (SASL continuations) are logged with ``secret=True`` and never shown at all. Loggers of
libraries that log protocol lines themselves (imapclient) get a ``CredentialFilter`` as well.
"""

from __future__ import annotations

import logging
import re

__all__ = [
    "IMAPCLIENT_LOGGERS",
    "CredentialFilter",
    "guard_logger",
    "log_received",
    "log_sent",
    "redact_command",
]

REDACTED = "***"
# imapclient logs the lines it sends: its own commands and, at debug level 5, imaplib's.
IMAPCLIENT_LOGGERS = ("imapclient.imapclient", "imapclient.imaplib")

# Each pattern keeps the group it matches and replaces what follows it.
_SECRET_ARGS = [
    # SMTP / POP3: "AUTH PLAIN <b64>", "AUTH XOAUTH2 <b64>"; IMAP: "a1 AUTHENTICATE PLAIN <b64>"
    re.compile(r"^((?:\S+ )?(?:AUTH|AUTHENTICATE) \S+ ).+$", re.IGNORECASE | re.DOTALL),
    # POP3: "PASS secret", "APOP user digest"
    re.compile(r"^(PASS ).+$", re.IGNORECASE | re.DOTALL),
    re.compile(r"^(APOP \S+ ).+$", re.IGNORECASE | re.DOTALL),
    # IMAP: "a1 LOGIN user password" (user may be quoted or a literal)
    re.compile(r"^(\S+ LOGIN (?:\"(?:[^\"\\]|\\.)*\"|\S+) ).+$", re.IGNORECASE | re.DOTALL),
]


def redact_command(line: str | bytes) -> str:
    """Return the line as text with any credential it carries replaced by '***'."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    text = text.rstrip("\r\n")
    for pattern in _SECRET_ARGS:
        text, count = pattern.subn(lambda m: m.group(1) + REDACTED, text)
        if count:
            break
    return text


def log_sent(logger: logging.Logger, line: str | bytes, *, secret: bool = False) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("C: %s", REDACTED if secret else redact_command(line))


def log_received(logger: logging.Logger, line: str | bytes) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
        logger.debug("S: %s", text.rstrip("\r\n"))


# In a line however the library formats it (imaplib logs "> b'a1 LOGIN user pass\\r\\n'"): what
# follows LOGIN, or an AUTHENTICATE's mechanism. Commands only in upper case, as imaplib and
# imapclient send them: server lines such as "LOGIN-REFERRALS", "AUTH=LOGIN IDLE" or "Logged in"
# stay readable.
_CREDENTIAL_COMMAND = re.compile(r"(?<!=)\b(LOGIN|AUTHENTICATE [A-Za-z0-9_-]+)\s+\S.*", re.DOTALL)


class CredentialFilter(logging.Filter):
    """Redacts login commands in records that mailkit does not write itself.

    imapclient already hides them in its own protocol log; this is a second guard, so that a
    change in the dependency's redaction cannot put a password into a user's logs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        redacted = _CREDENTIAL_COMMAND.sub(r"\1 " + REDACTED, text)
        if redacted != text:
            record.msg, record.args = redacted, None
        return True


def guard_logger(name: str) -> None:
    """Put a ``CredentialFilter`` on the logger ``name`` (once, however often called)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, CredentialFilter) for f in logger.filters):
        logger.addFilter(CredentialFilter())
