"""Service status: which component of which host answers, from a runtime play.

An HA cloud (issue 12) gets more rows, per host of each pair and the witness: `vip-<pair>`
(clc, walrus, cc-<zone>: the primary holds the pair's virtual address), `arbitrator` (its
probes' last result, from the arbitrator's status file), `weed-master` (a Walrus pair's
SeaweedFS masters: leader, peers) and `etcd` (each member of the state's cluster, asked by
cloudctl itself: health, leader). A single-host cloud has none of them.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from cloudctl.config import EtcdState, Settings, check_inventory
from cloudctl.errors import HostKeyError, HostUnreachable
from cloudctl.runner import PlayResult, ProgressCallback, failure_message, run_playbook

STATUS_PLAYBOOK = "cloudctl.cloud.runtime.service_status"
COMPONENTS_TASK = "Components of this host"  # task names in STATUS_PLAYBOOK
HEALTH_TASK = "Check component health"
COMPONENTS = ("clc", "api", "walrus", "cc", "sc", "nc")  # api: the CLC's API service
PAIRS_TASK = "HA pairs of the cloud"  # the HA tasks of STATUS_PLAYBOOK
ADDRESSES_TASK = "HA addresses of this host"
ARBITRATOR_TASK = "HA arbitrator of this host"
MASTER_TASK = "HA SeaweedFS master of this host"

HEALTHY = "healthy"
UNHEALTHY = "unhealthy"
UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class ComponentStatus:
    host: str
    component: str
    status: str  # healthy | unhealthy | unreachable
    detail: str


def service_status(
    settings: Settings, *, limit: str | None = None, progress: ProgressCallback | None = None
) -> list[ComponentStatus]:
    check_inventory(settings)
    result = run_playbook(
        settings,
        STATUS_PLAYBOOK,
        limit=limit,
        progress=progress,
        operation="service-status",
        journal=False,
    )
    # The play did not run at all (bad inventory, syntax, no hosts), or ssh refused a host's
    # key: that is no component's health but a refusal the operator must act on.
    if not result.stats or any(isinstance(f, HostKeyError) for f in result.failures):
        result.raise_for_failures()
    rows = statuses_from_result(result) + ha_statuses(result)
    if settings.state_etcd is not None:
        rows += etcd_statuses(settings.state_etcd, _host_addresses(result))
    return sorted(rows, key=_order)


def statuses_from_result(result: PlayResult) -> list[ComponentStatus]:
    """One row per host and component; unreachable hosts get rows too."""
    components: dict[str, list[str]] = {}
    for r in result.task_results(COMPONENTS_TASK):
        facts = r.res.get("ansible_facts") or {}
        components[r.host] = list(facts.get("cloud_health_components") or [])

    rows: list[ComponentStatus] = []
    seen: set[str] = set()
    for r in result.task_results(HEALTH_TASK):
        seen.add(r.host)
        items = [i for i in r.res.get("results") or [] if not i.get("skipped")]
        if r.status in ("failed", "unreachable") and not items:
            status = UNREACHABLE if r.status == "unreachable" else UNHEALTHY
            rows += _host_rows(r.host, components.get(r.host), status, failure_message(r.res))
            continue
        for item in items:
            component = str(item.get("component") or item.get("item") or "-")
            if item.get("unreachable"):
                rows.append(ComponentStatus(r.host, component, UNREACHABLE, failure_message(item)))
            elif item.get("failed"):
                rows.append(ComponentStatus(r.host, component, UNHEALTHY, failure_message(item)))
            else:
                status = HEALTHY if item.get("healthy") else UNHEALTHY
                rows.append(ComponentStatus(r.host, component, status, str(item.get("detail", ""))))

    # Hosts that never reached the health task: unreachable, or failed before it.
    for failure in result.failures:
        if failure.host in seen:
            continue
        status = UNREACHABLE if isinstance(failure, HostUnreachable) else UNHEALTHY
        rows += _host_rows(failure.host, components.get(failure.host), status, failure.message)
        seen.add(failure.host)
    return sorted(rows, key=_order)


def ha_statuses(result: PlayResult) -> list[ComponentStatus]:
    """The rows of the HA pairs (none for a cloud without pairs)."""
    pairs: list[dict[str, Any]] = []
    for r in result.task_results(PAIRS_TASK):
        pairs = (r.res.get("ansible_facts") or {}).get("cloud_ha_pairs") or pairs
    held = {r.host: _ipv4(r.res.get("stdout", "")) for r in _ran(result, ADDRESSES_TASK)}
    rows = []
    for pair in pairs:
        component, vip = f"vip-{pair['name']}", pair["vip"]
        holders = [h for h in pair["hosts"] if vip in held.get(h, ())]
        for host in pair["hosts"]:
            if host not in held:
                continue  # unreachable: its component rows say so
            if len(holders) != 1:
                detail = f"{' and '.join(holders) or 'no host'} hold(s) {vip}"
                rows.append(ComponentStatus(host, component, UNHEALTHY, detail))
            elif host in holders:
                rows.append(ComponentStatus(host, component, HEALTHY, f"primary: holds {vip}"))
            else:
                detail = f"secondary ({holders[0]} holds {vip})"
                rows.append(ComponentStatus(host, component, HEALTHY, detail))
    for r in _ran(result, ARBITRATOR_TASK):
        rows.append(_arbitrator_row(r.host, r.res))
    for r in _ran(result, MASTER_TASK):
        rows.append(_master_row(r.host, r.res))
    return rows


def _ran(result: PlayResult, task: str) -> list[Any]:
    return [r for r in result.task_results(task) if r.status not in ("skipped", "unreachable")]


def _ipv4(ip_json: str) -> set[str]:
    """The IPv4 addresses in `ip -j -4 addr show`'s output."""
    try:
        links = json.loads(ip_json or "[]")
    except ValueError:
        return set()
    return {a["local"] for link in links for a in link.get("addr_info", []) if "local" in a}


def _arbitrator_row(host: str, res: dict[str, Any]) -> ComponentStatus:
    if "content" not in res:
        return ComponentStatus(host, "arbitrator", UNHEALTHY, "no result (keepalived's check has not run)")  # fmt: skip
    try:
        status = json.loads(base64.b64decode(res["content"]))
    except ValueError:
        return ComponentStatus(host, "arbitrator", UNHEALTHY, "unreadable status file")
    probes = status.get("probes") or {}
    listed = ", ".join(f"{t} {'ok' if ok else 'FAILS'}" for t, ok in probes.items())
    verdict = {
        "ok": "every probe answers",
        "some-failed": "some probes fail (logged only)",
        "all-failed": "every probe fails: the addresses are given up",
    }.get(status.get("verdict"), str(status.get("verdict")))
    healthy = status.get("verdict") == "ok"
    return ComponentStatus(
        host, "arbitrator", HEALTHY if healthy else UNHEALTHY,
        f"{verdict}: {listed} (at {status.get('time', '?')})",
    )  # fmt: skip


def _master_row(host: str, res: dict[str, Any]) -> ComponentStatus:
    answer = res.get("json") if res.get("status") == 200 else None
    if not isinstance(answer, dict):
        detail = f"does not answer: {failure_message(res) or res.get('status')}"
        return ComponentStatus(host, "weed-master", UNHEALTHY, detail)
    leader = _http_address(str(answer.get("Leader") or ""))
    peers = ", ".join(_http_address(str(p)) for p in answer.get("Peers") or [])
    if not leader:
        return ComponentStatus(host, "weed-master", UNHEALTHY, f"no leader; peers {peers}")
    role = "leader" if answer.get("IsLeader") else f"follower (leader {leader})"
    return ComponentStatus(host, "weed-master", HEALTHY, f"{role}; peers {peers or '-'}")


def _http_address(master: str) -> str:
    """HOST:PORT of a master that SeaweedFS names HOST:PORT.GRPCPORT."""
    host, _, port = master.rpartition(":")
    return f"{host}:{port.split('.')[0]}" if host else master


def _host_addresses(result: PlayResult) -> dict[str, str]:
    """Address (ansible_host) -> inventory name, for the hosts that ran the HA facts."""
    return {
        str((r.res.get("ansible_facts") or {}).get("cloud_ha_address")): r.host
        for r in result.task_results(PAIRS_TASK)
    }


def etcd_statuses(config: EtcdState, hosts: dict[str, str]) -> list[ComponentStatus]:
    """One row per member of the state's etcd cluster, as each answers cloudctl itself;
    `hosts`: address -> inventory name (the row's host)."""
    from etcd3gw import exceptions as etcd_errors  # only etcd-backed clouds need it

    from cloudctl.state import etcd_client, etcd_reason  # the state backend's client and errors

    answers: dict[str, dict[str, Any] | str] = {}
    for url in config.endpoints:
        client = etcd_client(url, config)
        try:
            answers[url] = client.post(client.get_url("/maintenance/status"), json={})
        except etcd_errors.Etcd3Exception as exc:
            answers[url] = etcd_reason(exc)
    members = {
        str(a["header"]["member_id"]): url for url, a in answers.items() if isinstance(a, dict)
    }
    rows = []
    for url, answer in answers.items():
        name = urllib.parse.urlsplit(url).hostname or url
        host = hosts.get(name, name)
        if not isinstance(answer, dict):
            rows.append(ComponentStatus(host, "etcd", UNHEALTHY, f"{url} does not answer: {answer}"))  # fmt: skip
            continue
        leader = str(answer.get("leader", ""))
        errors = "; ".join(answer.get("errors") or [])
        if leader == str(answer["header"]["member_id"]):
            role = "leader"
        else:
            where = members.get(leader)
            known = hosts.get(urllib.parse.urlsplit(where).hostname or "", where) if where else ""
            role = f"follower (leader {known or leader or 'none'})"
        detail = f"{role}; {len(members)} of {len(config.endpoints)} members answer, raft term {answer.get('raftTerm', '?')}"
        status = UNHEALTHY if errors or leader in ("", "0") else HEALTHY
        rows.append(ComponentStatus(host, "etcd", status, detail + (f"; {errors}" if errors else "")))  # fmt: skip
    return rows


def _host_rows(
    host: str, components: list[str] | None, status: str, detail: str
) -> list[ComponentStatus]:
    return [ComponentStatus(host, c, status, detail) for c in components or ["-"]]


def _order(row: ComponentStatus) -> tuple[str, int, str]:
    rank = COMPONENTS.index(row.component) if row.component in COMPONENTS else len(COMPONENTS)
    return (row.host, rank, row.component)


def all_healthy(rows: list[ComponentStatus]) -> bool:
    return all(row.status == HEALTHY for row in rows)
