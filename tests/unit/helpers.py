"""Helpers for unit tests: synthetic ansible-runner events and artifact directories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cloudctl.runner import EventCollector, PlayResult
from cloudctl.state import StateStore

TEST_CLOUD_ID = "cloud-0123456789abcdef"


def init_state(path: Path, cloud_id: str = TEST_CLOUD_ID) -> Path:
    """A state file as `cloudctl deploy` leaves it for a new cloud (cloudctl refuses none)."""
    StateStore(path).initialize(cloud_id, "test")
    return path


def task_start(task: str) -> dict[str, Any]:
    return {"event": "playbook_on_task_start", "event_data": {"task": task}}


def host_event(event: str, host: str, task: str, res: dict[str, Any], **extra: Any) -> dict:
    return {"event": event, "event_data": {"host": host, "task": task, "res": res, **extra}}


def stats_event(**counters: dict[str, int]) -> dict[str, Any]:
    data = {
        key: counters.get(key, {})
        for key in ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored")
    }
    hosts = {h for values in data.values() for h in values}
    data["processed"] = dict.fromkeys(hosts, 1)
    return {"event": "playbook_on_stats", "event_data": data}


def write_events(artifact_dir: Path, events: list[dict[str, Any]]) -> None:
    """Lay events out as ansible-runner does: job_events/<counter>-<uuid>.json."""
    events_dir = artifact_dir / "job_events"
    events_dir.mkdir(parents=True, exist_ok=True)
    for counter, event in enumerate(events, start=1):
        (events_dir / f"{counter}-fake{counter}.json").write_text(json.dumps(event))


def play_result(tmp_path: Path, events: list[dict[str, Any]], status: str = "") -> PlayResult:
    """A PlayResult as run_playbook builds it, from synthetic events."""
    collector = EventCollector()
    for event in events:
        collector(event)
    artifact_dir = tmp_path / "artifacts" / "fake"
    write_events(artifact_dir, events)
    failures = collector.final_failures()
    return PlayResult(
        status=status or ("failed" if failures else "successful"),
        rc=2 if failures else 0,
        run_dir=tmp_path,
        artifact_dir=artifact_dir,
        stats=collector.stats,
        failures=failures,
        tasks=collector.tasks,
        error=collector.error,
    )
