"""Service status rows from synthetic results of cloudctl.cloud.runtime.service_status."""

from __future__ import annotations

from pathlib import Path

import yaml

from cloudctl.config import COLLECTION_DIR
from cloudctl.health import (
    COMPONENTS_TASK,
    HEALTH_TASK,
    ComponentStatus,
    all_healthy,
    statuses_from_result,
)
from tests.unit.helpers import host_event, play_result, stats_event

PROJECT = Path(__file__).resolve().parents[2]


def components(host: str, names: list[str]) -> dict:
    res = {"ansible_facts": {"cloud_health_components": names}}
    return host_event("runner_on_ok", host, COMPONENTS_TASK, res)


def item(component: str, healthy: bool, detail: str) -> dict:
    return {"item": component, "component": component, "healthy": healthy, "detail": detail}


def test_task_names_match_the_playbook():
    path = PROJECT / COLLECTION_DIR / "playbooks/runtime/service_status.yml"
    plays = yaml.safe_load(path.read_text())
    names = [task["name"] for task in plays[0]["tasks"]]
    assert COMPONENTS_TASK in names and HEALTH_TASK in names


def test_rows_per_host_and_component(tmp_path):
    result = play_result(
        tmp_path,
        [
            components("ciab", ["clc", "sc", "nc"]),
            components("node2", ["nc"]),
            host_event(
                "runner_on_ok",
                "ciab",
                HEALTH_TASK,
                {
                    "results": [
                        item("nc", True, "libvirt answers"),
                        item("clc", True, "cloudctl 0.1.0"),
                        item("sc", False, "tgtd does not answer"),
                    ]
                },
            ),
            host_event(
                "runner_on_unreachable",
                "node2",
                HEALTH_TASK,
                {"msg": "ssh: no route", "unreachable": True},
            ),
            stats_event(ok={"ciab": 2}, dark={"node2": 1}),
        ],
    )
    rows = statuses_from_result(result)
    assert rows == [
        ComponentStatus("ciab", "clc", "healthy", "cloudctl 0.1.0"),
        ComponentStatus("ciab", "sc", "unhealthy", "tgtd does not answer"),
        ComponentStatus("ciab", "nc", "healthy", "libvirt answers"),
        ComponentStatus("node2", "nc", "unreachable", "ssh: no route"),
    ]
    assert not all_healthy(rows)
    assert all_healthy([r for r in rows if r.status == "healthy"])


def test_unreachable_during_the_check_and_failed_items(tmp_path):
    result = play_result(
        tmp_path,
        [
            components("a", ["cc", "sc"]),
            components("b", ["walrus"]),
            host_event(
                "runner_on_unreachable",
                "a",
                HEALTH_TASK,
                {"msg": "connection reset", "unreachable": True},
            ),
            host_event(
                "runner_on_failed",
                "b",
                HEALTH_TASK,
                {
                    "results": [
                        {"item": "walrus", "failed": True, "msg": "unsupported parameter"},
                    ]
                },
            ),
            stats_event(failures={"b": 1}, dark={"a": 1}),
        ],
    )
    assert [(r.host, r.component, r.status, r.detail) for r in statuses_from_result(result)] == [
        ("a", "cc", "unreachable", "connection reset"),
        ("a", "sc", "unreachable", "connection reset"),
        ("b", "walrus", "unhealthy", "unsupported parameter"),
    ]


def test_host_lost_before_the_check_gets_one_row(tmp_path):
    result = play_result(
        tmp_path,
        [
            host_event("runner_on_unreachable", "x", "Some earlier task", {"msg": "gone"}),
            stats_event(dark={"x": 1}),
        ],
    )
    assert statuses_from_result(result) == [ComponentStatus("x", "-", "unreachable", "gone")]


def test_failed_before_any_item_and_hosts_without_components(tmp_path):
    result = play_result(
        tmp_path,
        [
            components("cc1", ["cc"]),
            components("spare", []),
            host_event(
                "runner_on_failed", "cc1", HEALTH_TASK, {"msg": "'cloud_cluster' is undefined"}
            ),
            host_event(
                "runner_on_skipped",
                "spare",
                HEALTH_TASK,
                {"skipped": True, "results": [], "msg": "No items in the list"},
            ),
            stats_event(ok={"spare": 1}, failures={"cc1": 1}),
        ],
    )
    assert statuses_from_result(result) == [
        ComponentStatus("cc1", "cc", "unhealthy", "'cloud_cluster' is undefined"),
    ]
