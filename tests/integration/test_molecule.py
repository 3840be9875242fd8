"""Each role's molecule scenario: converge, idempotence, verify against live daemons.

The scenarios are independent (each has its own lab hosts), so the selected ones
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
# ROLE (its default scenario) or ROLE/SCENARIO. Longest first (measured), so that the last
# one to start is short.
SCENARIOS = ["clc", "walrus", "nc", "keepalived", "etcd", "cc", "sc", "common"]
PARALLEL = 2


def run_scenario(scenario: str) -> subprocess.CompletedProcess:
    role, _, name = scenario.partition("/")
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["NO_COLOR"] = "1"
    return subprocess.run(
        ["molecule", "test", *(["-s", name] if name else [])],
        cwd=ROLES_DIR / role,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )


@pytest.fixture(scope="module")
def scenarios(request) -> dict[str, Future]:
    """The selected scenarios, started together in a small pool."""
    selected = [
        item.callspec.params["scenario"]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec")
    ]
    pool = ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="molecule")
    request.addfinalizer(pool.shutdown)
    return {s: pool.submit(run_scenario, s) for s in SCENARIOS if s in selected}


@pytest.mark.integration
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_role_scenario(scenario: str, scenarios: dict[str, Future]) -> None:
    proc = scenarios[scenario].result()
    if proc.returncode != 0:
        print(proc.stdout[-20000:])
        print(proc.stderr[-5000:], file=sys.stderr)
    assert proc.returncode == 0, f"molecule test failed for {scenario}"
