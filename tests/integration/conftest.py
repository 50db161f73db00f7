"""Fixtures handing the local mail stack (scripts/mailstack) to integration tests.

The stack is started once per session (a fast no-op when it already runs) and left running
afterwards, so repeated test runs do not pay the start-up again; ``scripts/mailstack down`` stops it.
"""

from __future__ import annotations

import ssl
import sys

import pytest

from tests.integration.mailstack import MailStack, MailStackError


@pytest.fixture(scope="session")
def mailstack() -> MailStack:
    """The running stack (Dovecot + Postfix on loopback), started if needed.

    Settings come from MAILSTACK_ROOT / MAILSTACK_ADDR / MAILSTACK_*_PORT when set.
    """
    if not sys.platform.startswith("linux"):
        pytest.skip("the local mail stack needs Linux (Debian packages, run as root)")
    try:
        return MailStack.start()
    except MailStackError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def clean_mailstack(mailstack: MailStack) -> MailStack:
    """The stack with every user's mailboxes emptied and Postfix's queue dropped.

    The benchmark user perf@example.test (``BENCH_USERS``) keeps its own folders (the benchmarks'
    10k-message mailboxes survive test runs); its INBOX and other standard folders are emptied.
    """
    mailstack.reset_test_users()
    return mailstack


@pytest.fixture
def ssl_context(mailstack: MailStack) -> ssl.SSLContext:
    """A verifying client context that trusts only the stack's test CA."""
    return ssl.create_default_context(cafile=str(mailstack.ca_file))
