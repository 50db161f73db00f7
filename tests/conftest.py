"""Suite-wide set-up: markers by directory, and the test environment for example.test addresses."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

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
