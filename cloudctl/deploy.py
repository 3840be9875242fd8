"""Deploy the cloud: run cloudctl.cloud.site and summarize it per host."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cloudctl.cloudconfig import fetched_path, get_config
from cloudctl.config import Settings, check_inventory, with_fetched_state
from cloudctl.errors import InputError
from cloudctl.runner import PlayResult, ProgressCallback, previous_task_count, run_playbook
from cloudctl.state import open_store

SITE_PLAYBOOK = "cloudctl.cloud.site"


@dataclass(frozen=True)
class HostSummary:
    host: str
    ok: int
    changed: int
    failed: int
    unreachable: int


def parse_extravars(pairs: Iterable[str]) -> dict[str, str]:
    """KEY=VALUE strings (as ansible-playbook -e takes them) into a dict of strings."""
    extravars: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise InputError(f"extra variable {pair!r} is not KEY=VALUE")
        extravars[key] = value
    return extravars


def operation_name(check: bool) -> str:
    return "deploy-check" if check else "deploy"


def expected_tasks(settings: Settings, check: bool = False) -> int | None:
    """How many tasks the last successful deploy started, to size a progress bar."""
    return previous_task_count(settings, operation_name(check))


def deploy(
    settings: Settings,
    *,
    check: bool = False,
    limit: str | None = None,
    tags: str | None = None,
    extravars: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> PlayResult:
    """Run site.yml; failed hosts are in the result (PlayResult.raise_for_failures)."""
    check_inventory(settings)
    result = run_playbook(
        settings,
        SITE_PLAYBOOK,
        extravars=extravars,
        limit=limit,
        tags=tags,
        check=check,
        progress=progress,
        operation=operation_name(check),
    )
    if not check:
        # The deploy may have changed the cloud configuration: fetch it again when needed.
        fetched_path(settings).unlink(missing_ok=True)
    return result


def record_cloud(settings: Settings) -> Settings | None:
    """After a deploy: the state records the cloud's id (made by the deploy), created when
    there is none; the state of another cloud is refused. The state is the one the fresh
    cloud.yml names (etcd once the deploy made a CLC pair). Returns the settings of that
    state when it was written, else None."""
    config = get_config(settings)
    settings = with_fetched_state(settings)
    written = open_store(settings).initialize(config.cloud_id, config.cloud_name)
    return settings if written else None


def host_summary(result: PlayResult) -> list[HostSummary]:
    return [
        HostSummary(s.host, s.ok, s.changed, s.failed, s.unreachable) for s in result.stats.values()
    ]
