"""Fixtures of the module tests. Helpers live in modhelpers.py."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess

import pytest


@pytest.fixture
def netns():
    """A network namespace of our own (cloudtest-<random>), deleted afterwards."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2")
    name = f"cloudtest-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
