"""Service status rows from synthetic results of cloudctl.cloud.runtime.service_status."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import yaml

from cloudctl.config import COLLECTION_DIR
from cloudctl.health import (
    ADDRESSES_TASK,
    ARBITRATOR_TASK,
    COMPONENTS_TASK,
    HEALTH_TASK,
    MASTER_TASK,
    PAIRS_TASK,
    ComponentStatus,
    all_healthy,
    ha_statuses,
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
    assert {PAIRS_TASK, ADDRESSES_TASK, ARBITRATOR_TASK, MASTER_TASK} <= set(names)


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


# --- HA pairs (issue 12) -------------------------------------------------------------------

PAIRS = [
    {"name": "clc", "hosts": ["ha1", "ha2"], "vip": "10.213.0.50"},
    {"name": "cc-zone-a", "hosts": ["ha1", "ha2"], "vip": "172.31.0.1"},
]


def ip_addr(*addresses: str) -> dict:
    links = [{"ifname": "eth0", "addr_info": [{"family": "inet", "local": a} for a in addresses]}]
    return {"stdout": json.dumps(links), "rc": 0}


def arbitrator(verdict: str, probes: dict) -> dict:
    status = {"time": "2026-12-01T08:00:00+0000", "verdict": verdict, "probes": probes}
    return {"content": base64.b64encode(json.dumps(status).encode()).decode()}


def master(is_leader: bool, leader: str) -> dict:
    answer = {"IsLeader": is_leader, "Leader": leader, "Peers": ["10.213.0.12:9333.19333"]}
    return {"status": 200, "json": answer}


def ha_events(held: dict[str, tuple[str, ...]], arbitrators: dict, masters: dict) -> list:
    events = [
        host_event("runner_on_ok", h, PAIRS_TASK, {"ansible_facts": {"cloud_ha_pairs": PAIRS}})
        for h in ("ha1", "ha2", "ha-wit")
    ]
    events += [host_event("runner_on_ok", h, ADDRESSES_TASK, ip_addr(*a)) for h, a in held.items()]
    events += [host_event("runner_on_ok", h, ARBITRATOR_TASK, r) for h, r in arbitrators.items()]
    events += [host_event("runner_on_ok", h, MASTER_TASK, r) for h, r in masters.items()]
    return [*events, stats_event(ok={"ha1": 4, "ha2": 4, "ha-wit": 2})]


def test_ha_rows_name_the_primary_of_each_pair_its_probes_and_masters(tmp_path):
    result = play_result(
        tmp_path,
        ha_events(
            {"ha1": ("10.213.0.11", "10.213.0.50", "172.31.0.1"), "ha2": ("10.213.0.12",)},
            {
                "ha1": arbitrator("ok", {"icmp:10.213.0.254": True}),
                "ha2": arbitrator(
                    "some-failed", {"icmp:10.213.0.254": True, "tcp:10.213.0.9:22": False}
                ),
            },
            {
                "ha1": master(True, "10.213.0.11:9333.19333"),
                "ha-wit": {"status": -1, "msg": "refused"},
            },
        ),
    )
    rows = [(r.host, r.component, r.status, r.detail) for r in ha_statuses(result)]
    rows.sort()
    assert rows == [
        ("ha-wit", "weed-master", "unhealthy", "does not answer: refused"),
        ("ha1", "arbitrator", "healthy",
         "every probe answers: icmp:10.213.0.254 ok (at 2026-12-01T08:00:00+0000)"),
        ("ha1", "vip-cc-zone-a", "healthy", "primary: holds 172.31.0.1"),
        ("ha1", "vip-clc", "healthy", "primary: holds 10.213.0.50"),
        ("ha1", "weed-master", "healthy", "leader; peers 10.213.0.12:9333"),
        ("ha2", "arbitrator", "unhealthy", ("some probes fail (logged only): icmp:10.213.0.254 "
         "ok, tcp:10.213.0.9:22 FAILS (at 2026-12-01T08:00:00+0000)")),
        ("ha2", "vip-cc-zone-a", "healthy", "secondary (ha1 holds 172.31.0.1)"),
        ("ha2", "vip-clc", "healthy", "secondary (ha1 holds 10.213.0.50)"),
    ]  # fmt: skip


def test_an_address_held_by_both_hosts_or_none_is_unhealthy_on_both(tmp_path):
    held = {"ha1": ("10.213.0.50",), "ha2": ("10.213.0.50", "172.31.0.2")}
    result = play_result(tmp_path, ha_events(held, {"ha1": {"msg": "file not found"}}, {}))
    rows = {(r.host, r.component): (r.status, r.detail) for r in ha_statuses(result)}
    assert rows[("ha1", "vip-clc")] == ("unhealthy", "ha1 and ha2 hold(s) 10.213.0.50")
    assert rows[("ha2", "vip-cc-zone-a")] == ("unhealthy", "no host hold(s) 172.31.0.1")
    assert rows[("ha1", "arbitrator")] == (
        "unhealthy",
        "no result (keepalived's check has not run)",
    )


def test_a_cloud_without_pairs_has_no_ha_rows(tmp_path):
    facts = {"ansible_facts": {"cloud_ha_pairs": []}}
    events = [host_event("runner_on_ok", "ciab", PAIRS_TASK, facts)]
    events += [host_event("runner_on_skipped", "ciab", t, {}) for t in (ADDRESSES_TASK, ARBITRATOR_TASK, MASTER_TASK)]  # fmt: skip
    result = play_result(tmp_path, [*events, stats_event(ok={"ciab": 1})])
    assert ha_statuses(result) == []
