"""Each role's molecule scenario: converge, idempotence, verify against live daemons.

The scenarios are independent (each has its own lab hosts): the selected ones are background
jobs (tests/background.py), started with the session, longest first, after the shared
clouds' deploys; a scenario spends much of its time waiting on SSH and daemons, and the
suite has a time budget (docs/benchmarks.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.background import job

PROJECT = Path(__file__).resolve().parents[2]
ROLES_DIR = PROJECT / "collections/ansible_collections/cloudctl/cloud/roles"
# ROLE (its default scenario) or ROLE/SCENARIO. Longest first (measured), so that the last
# one to start is short.
SCENARIOS = ["clc", "walrus", "nc", "keepalived", "etcd", "cc", "sc", "common"]


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


def scenario_job(scenario: str) -> str:
    return f"molecule {scenario}"


for order, scenario in enumerate(SCENARIOS):  # after the shared clouds' deploys
    job(scenario_job(scenario), order=10 + order,
        wanted=lambda item, s=scenario: item.name == f"test_role_scenario[{s}]",
    )(lambda tmp_path_factory, s=scenario: run_scenario(s))  # fmt: skip


@pytest.mark.integration
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_role_scenario(scenario: str, background) -> None:
    proc = background.result(scenario_job(scenario))
    if proc.returncode != 0:
        print(proc.stdout[-20000:])
        print(proc.stderr[-5000:], file=sys.stderr)
    assert proc.returncode == 0, f"molecule test failed for {scenario}"
