"""Shared fixtures: the project paths and namespaced lab hosts (molecule/labhost.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]


def _load_labhost():
    spec = importlib.util.spec_from_file_location("labhost", PROJECT / "molecule" / "labhost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


labhost = _load_labhost()


@pytest.fixture(scope="session")
def project() -> Path:
    return PROJECT
