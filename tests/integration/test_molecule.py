"""Each role's molecule scenario: converge, idempotence, verify against live daemons.

The scenarios are independent (each has its own lab host, mol-<role>), so the selected ones
run two at a time, longest first: a scenario spends much of its time waiting on SSH and
daemons, and the suite has a time budget (docs/benchmarks.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
ROLES_DIR = PROJECT / "collections/ansible_collections/cloudctl/cloud/roles"
# Longest first (measured), so that the last one to start is short.
ROLES = ["clc", "walrus", "nc", "keepalived", "etcd", "cc", "sc", "common"]
PARALLEL = 2


def run_scenario(role: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["NO_COLOR"] = "1"
    return subprocess.run(
        ["molecule", "test"], cwd=ROLES_DIR / role, env=env,
        capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="module")
def scenarios(request) -> dict[str, Future]:
    """The selected roles' scenarios, started together in a small pool."""
    selected = [item.callspec.params["role"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")]
    pool = ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="molecule")
    request.addfinalizer(pool.shutdown)
    return {role: pool.submit(run_scenario, role) for role in ROLES if role in selected}


@pytest.mark.integration
@pytest.mark.parametrize("role", ROLES)
def test_role_scenario(role: str, scenarios: dict[str, Future]) -> None:
    proc = scenarios[role].result()
    if proc.returncode != 0:
        print(proc.stdout[-20000:])
        print(proc.stderr[-5000:], file=sys.stderr)
    assert proc.returncode == 0, f"molecule test failed for role {role}"
