"""Service status: which component of which host answers, from a runtime play."""

from __future__ import annotations

from dataclasses import dataclass

from cloudctl.config import Settings, check_inventory
from cloudctl.errors import HostKeyError, HostUnreachable
from cloudctl.runner import PlayResult, ProgressCallback, failure_message, run_playbook

STATUS_PLAYBOOK = "cloudctl.cloud.runtime.service_status"
COMPONENTS_TASK = "Components of this host"  # task names in STATUS_PLAYBOOK
HEALTH_TASK = "Check component health"
COMPONENTS = ("clc", "api", "walrus", "cc", "sc", "nc")  # api: the CLC's API service

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
    return statuses_from_result(result)


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


def _host_rows(
    host: str, components: list[str] | None, status: str, detail: str
) -> list[ComponentStatus]:
    return [ComponentStatus(host, c, status, detail) for c in components or ["-"]]


def _order(row: ComponentStatus) -> tuple[str, int, str]:
    rank = COMPONENTS.index(row.component) if row.component in COMPONENTS else len(COMPONENTS)
    return (row.host, rank, row.component)


def all_healthy(rows: list[ComponentStatus]) -> bool:
    return all(row.status == HEALTHY for row in rows)
