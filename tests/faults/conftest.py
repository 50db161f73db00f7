"""Fixtures for the fault suite: test certificates, and leak checks for sockets and threads.

Every test under tests/faults/ is marked ``faults``; hypothesis runs derandomized (seeded) here so
CI runs are repeatable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.faults.proxy import open_socket_count
from tests.faults.scripted import Certs

settings.register_profile(
    "faults",
    derandomize=True,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA the tests trust plus good, wrong-host, expired, unknown-CA and self-signed certificates."""
    return Certs(tmp_path_factory.mktemp("fault-certs"))


class LeakCheck:
    """Counts sockets and threads at the start; ``assert_clean()`` waits briefly for them to return."""

    def __init__(self) -> None:
        self.sockets = open_socket_count()
        self.threads = {t.ident for t in threading.enumerate()}

    def new_threads(self) -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.ident not in self.threads and t.is_alive()]

    def assert_clean(self, timeout: float = 3.0, *, ignore_threads: tuple[str, ...] = ()) -> None:
        deadline = time.monotonic() + timeout
        while True:
            sockets = open_socket_count()
            threads = [t for t in self.new_threads() if not t.name.startswith(ignore_threads)]
            if sockets <= self.sockets and not threads:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"leak: {sockets - self.sockets} socket(s) more than at the start; "
                    f"threads still running: {[t.name for t in threads]}"
                )
            time.sleep(0.05)


@pytest.fixture
def leak_check() -> LeakCheck:
    return LeakCheck()


@pytest.fixture
def fast_dir(tmp_path: Path) -> Iterator[Path]:
    """A scratch directory in RAM when /dev/shm exists: hundreds of seeded runs fsync Maildirs."""
    import shutil
    import tempfile

    if not Path("/dev/shm").is_dir():
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="mailkit-faults-", dir="/dev/shm"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
