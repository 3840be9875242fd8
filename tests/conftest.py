"""Shared fixtures: the project paths and namespaced lab hosts (molecule/labhost.py)."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]


def load_file(name: str, path: Path):
    """A Python file of the project that is not in a package (a script, a module of the
    collection), imported as module NAME."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


labhost = load_file("labhost", PROJECT / "molecule" / "labhost.py")


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
