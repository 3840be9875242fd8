"""Fixtures of the unit tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cloudctl.config import Settings

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose inventory is this machine (host `box`, connection local), for tests
    that run real one-task plays."""
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        "all:\n  hosts:\n    box:\n      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n"
    )
    return Settings(project_dir=PROJECT, inventory=inventory, home=tmp_path / "home")
