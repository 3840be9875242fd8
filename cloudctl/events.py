"""Events: every operation cloudctl ran through Ansible, read back from its run directory.

The runner keeps one directory per run, <home>/runs/<stamp>-<operation>-<id>, with
summary.json and ansible-runner's job_events. An event's id is the run directory's last part
(8 hex characters, `PlayResult.event_id`). A run without summary.json is still running or
was killed: its status is "incomplete".

Nothing secret is shown: the runner marks secret-bearing tasks no_log (their results are
censored), and every field whose name looks secret (secret, password, token, *key*) is
redacted here too, in mappings and in "name: value" / "name=value" text.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from cloudctl.config import Settings
from cloudctl.errors import InputError
from cloudctl.runner import MAX_MESSAGE, failure_message, read_task_results, run_operation

REDACTED = "********"
INCOMPLETE = "incomplete"
_ID = re.compile(r"^[0-9a-f]{8}$")
_SECRET = re.compile(r"secret|passw|token|credential|private|key", re.IGNORECASE)
# Fields that name a key or hold a public one: shown.
_NOT_SECRET = {"key", "key_name", "keyname", "keypair", "key_pair", "public_key", "key_type"}
# "secret_key: VALUE", "password=VALUE", '"token": "VALUE"' inside free text.
_SECRET_TEXT = re.compile(
    r"""(?P<name>["']?[\w.-]*(?:secret|passw|token|credential|private|key)[\w.-]*["']?)"""
    r"""(?P<sep>\s*[:=]\s*)(?P<value>"[^"]*"|'[^']*'|[^\s,;}\]]+)""",
    re.IGNORECASE,
)


def is_secret_name(name: str) -> bool:
    return bool(_SECRET.search(name)) and name.lower() not in _NOT_SECRET


def redact(value: Any) -> Any:
    """A copy of a JSON value with the values of secret-looking fields replaced."""
    if isinstance(value, dict):
        return {
            k: REDACTED if is_secret_name(str(k)) and v not in (None, "") else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _SECRET_TEXT.sub(_redact_match, value)
    return value


def _redact_match(match: re.Match[str]) -> str:
    if not is_secret_name(match.group("name").strip("\"'")):
        return match.group(0)
    return f"{match.group('name')}{match.group('sep')}{REDACTED}"


def _run_dirs(settings: Settings) -> list[Path]:
    runs = settings.runs_dir
    if not runs.is_dir():
        return []
    return [p for p in runs.iterdir() if p.is_dir() and _ID.match(p.name.rsplit("-", 1)[-1])]


def _summary(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _started_from_name(run_dir: Path) -> str:
    stamp = run_dir.name.split("-", 1)[0]
    try:
        return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").isoformat() + "+00:00"
    except ValueError:
        return ""


def _seconds(summary: dict[str, Any]) -> float | None:
    try:
        started = datetime.fromisoformat(summary["started"])
        finished = datetime.fromisoformat(summary["finished"])
    except (KeyError, TypeError, ValueError):
        return None
    return round((finished - started).total_seconds(), 1)


def _failed_hosts(summary: dict[str, Any]) -> list[str]:
    hosts = {f.get("host", "") for f in summary.get("failures") or []}
    for stats in summary.get("stats") or []:
        if stats.get("failed") or stats.get("unreachable"):
            hosts.add(stats.get("host", ""))
    return sorted(h for h in hosts if h)


def _event(run_dir: Path) -> dict[str, Any]:
    summary = _summary(run_dir)
    return {
        "id": run_dir.name.rsplit("-", 1)[1],
        "operation": summary.get("operation") or run_operation(run_dir),
        "started": summary.get("started") or _started_from_name(run_dir),
        "seconds": _seconds(summary),
        "status": summary.get("status") or INCOMPLETE,
        "hosts_failed": _failed_hosts(summary),
        "_summary": summary,
        "_run_dir": run_dir,
    }


def list_events(
    settings: Settings, limit: int | None = None, operation: str | None = None
) -> list[dict[str, Any]]:
    """Events newest first: id, operation, started, seconds, status, hosts_failed."""
    if limit is not None and limit < 1:
        raise InputError(f"bad limit {limit}: must be at least 1")
    events = [_event(d) for d in _run_dirs(settings)]
    if operation:
        events = [e for e in events if e["operation"] == operation]
    events.sort(key=lambda e: (e["started"], e["_run_dir"].name), reverse=True)
    return [_public(e) for e in events[:limit]]


def show_event(settings: Settings, event_id: str) -> dict[str, Any]:
    """An event's summary fields and, per task and host, its status and a one-line message."""
    wanted = event_id.strip().lower()
    if not _ID.match(wanted):
        raise InputError(f"bad event id {event_id!r}: expected 8 hex characters")
    matches = [d for d in _run_dirs(settings) if d.name.endswith(f"-{wanted}")]
    if not matches:
        raise InputError(f"event {wanted} does not exist (see `cloudctl event list`)")
    if len(matches) > 1:
        raise InputError(f"event id {wanted} is ambiguous: {', '.join(d.name for d in matches)}")
    event = _event(matches[0])
    summary = event["_summary"]
    detail = {
        **_public(event),
        **{k: v for k, v in summary.items() if k not in event},
        "run_dir": str(matches[0]),
        "results": _results(matches[0], summary),
    }
    return redact(detail)


def _results(run_dir: Path, summary: dict[str, Any]) -> list[dict[str, str]]:
    ident = run_dir.name.rsplit("-", 1)[1]
    rows = []
    for r in read_task_results(run_dir / "artifacts" / ident):
        rows.append(
            {
                "task": r.task,
                "host": r.host,
                "status": r.status,
                "message": _message(r.status, r.res),
            }
        )
    return rows


def _message(status: str, res: dict[str, Any]) -> str:
    """One line about a task result; a censored (no_log) result says only that."""
    if "censored" in res:
        return "output hidden (no_log)"
    if status in ("failed", "unreachable"):
        return str(redact(failure_message(res)))
    text = str(res.get("msg") or "") or _last_line(str(res.get("stdout") or ""))
    if not text and status == "skipped":
        text = str(res.get("skip_reason") or "")
    flat = " ".join(str(redact(text)).split())
    return flat if len(flat) <= MAX_MESSAGE else flat[: MAX_MESSAGE - 3] + "..."


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _public(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if not k.startswith("_")}
