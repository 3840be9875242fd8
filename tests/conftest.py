"""Shared fixtures: the project paths and namespaced lab hosts (molecule/labhost.py)."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

from tests.background import Background

PROJECT = Path(__file__).resolve().parents[1]
INTEGRATION = PROJECT / "tests" / "integration"


def load_file(name: str, path: Path):
    """A Python file of the project that is not in a package (a script, a module of the
    collection), imported as module NAME."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


labhost = load_file("labhost", PROJECT / "molecule" / "labhost.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The integration tests last (in their own order), so that the background jobs they
    need (deploys, molecule scenarios) run beside the faster tests before them; the HA lab's
    tests first among them, so that the lab goes before its idle daemons slow the others."""
    items.sort(
        key=lambda item: (INTEGRATION in item.path.parents, "ha_lab" not in item.fixturenames)
    )


@pytest.fixture(scope="session", autouse=True)
def background(request, tmp_path_factory):
    """The session's background jobs (tests/background.py), started at once."""
    jobs = Background(tmp_path_factory)
    jobs.start(request.session.items)
    yield jobs
    jobs.close()


@pytest.fixture(scope="session")
def project() -> Path:
    return PROJECT


def poll(check, what: str, deadline_s: float = 300, interval_s: float = 0.5):
    """The first true value of check(), polled until a deadline; the test fails after it."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval_s)  # poll interval, not a wait for an outcome
    pytest.fail(f"{what} not within {deadline_s}s")
