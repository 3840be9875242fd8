"""Each role's molecule scenario: converge, idempotence, verify against live daemons."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
ROLES = ["common", "walrus", "sc", "cc", "nc", "clc"]


@pytest.mark.integration
@pytest.mark.parametrize("role", ROLES)
def test_role_scenario(role: str) -> None:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["NO_COLOR"] = "1"
    proc = subprocess.run(
        ["molecule", "test"], cwd=PROJECT / "collections/ansible_collections/cloudctl/cloud/roles" / role, env=env,
        capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        print(proc.stdout[-20000:])
        print(proc.stderr[-5000:], file=sys.stderr)
    assert proc.returncode == 0, f"molecule test failed for role {role}"
