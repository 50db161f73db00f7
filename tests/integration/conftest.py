"""Fixtures on top of the session's mail stack (``mailstack``, in tests/conftest.py)."""

from __future__ import annotations

import ssl

import pytest

from tests.integration.mailstack import MailStack


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
