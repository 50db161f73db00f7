"""Suite-wide set-up: markers by directory, the test environment for example.test addresses, and
the local mail stack for every suite that talks to real servers (integration and faults).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.mailstack import MailStack, MailStackError

_TESTS = Path(__file__).resolve().parent
# Every test under these directories gets the marker, so `-m "not integration"` and friends work.
_MARKERS = {"integration": pytest.mark.integration, "faults": pytest.mark.faults}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(item.path).resolve()
        if _TESTS in path.parents:
            marker = _MARKERS.get(path.relative_to(_TESTS).parts[0])
            if marker is not None:
                item.add_marker(marker)


@pytest.fixture(scope="session", autouse=True)
def _mailkit_test_environment() -> Iterator[None]:
    """Addresses in special-use test domains (example.test) are accepted, as the stack uses them."""
    previous = os.environ.get("MAILKIT_TEST_ENVIRONMENT")
    os.environ["MAILKIT_TEST_ENVIRONMENT"] = "1"
    yield
    if previous is None:
        os.environ.pop("MAILKIT_TEST_ENVIRONMENT", None)
    else:
        os.environ["MAILKIT_TEST_ENVIRONMENT"] = previous


@pytest.fixture(scope="session")
def mailstack() -> MailStack:
    """The running stack (Dovecot + Postfix on loopback), started if needed (a no-op when it runs).

    Settings come from MAILSTACK_ROOT / MAILSTACK_ADDR / MAILSTACK_*_PORT when set. It is left
    running afterwards (``scripts/mailstack down`` stops it). A stack that cannot start fails the
    tests that need it rather than skipping them: a skip would hide a broken CI set-up.
    """
    if not sys.platform.startswith("linux"):
        pytest.skip("the local mail stack needs Linux (Debian packages, run as root)")
    try:
        return MailStack.start()
    except MailStackError as exc:
        pytest.fail(str(exc), pytrace=False)
