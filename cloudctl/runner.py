"""Run playbooks through ansible-runner: the only module of cloudctl that imports it.

Every run gets a private data directory <home>/runs/<timestamp>-<operation>-<id> (0700)
that is kept for audit: ansible-runner writes the events of the run to
artifacts/<id>/job_events/ there, and cloudctl adds summary.json.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shlex
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ansible_runner
import yaml

from cloudctl import hostkeys, playguard
from cloudctl import journal as operation_journal
from cloudctl.config import COLLECTION, Settings
from cloudctl.errors import (
    ConfigError,
    HostFailed,
    HostKeyError,
    HostUnreachable,
    InputError,
    PlaybookError,
)

log = logging.getLogger(__name__)

MAX_MESSAGE = 300  # characters of a failure message shown; the artifacts keep all of it
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_OPERATION = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_HOST_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}


@dataclass(frozen=True)
class PlayEvent:
    """What the progress callback receives."""

    kind: str  # "task": a task starts; "host": a host finished a task
    task: str
    host: str = ""
    status: str = ""  # ok | changed | failed | unreachable | skipped (kind "host")


ProgressCallback = Callable[[PlayEvent], None]


@dataclass
class HostStats:
    host: str
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0


@dataclass(frozen=True)
class TaskResult:
    host: str
    task: str
    status: str  # ok | changed | failed | unreachable | skipped
    res: dict[str, Any]


@dataclass
class PlayResult:
    status: str  # ansible-runner status: successful | failed | timeout | canceled
    rc: int
    run_dir: Path
    artifact_dir: Path
    stats: dict[str, HostStats] = field(default_factory=dict)
    failures: list[HostFailed | HostUnreachable] = field(default_factory=list)
    tasks: int = 0  # tasks started
    error: str = ""  # last error line of ansible-playbook, e.g. a syntax error

    @property
    def ok(self) -> bool:
        return self.status == "successful" and not self.failures

    @property
    def event_id(self) -> str:
        """The operation's id for `cloudctl event show` (the run directory's last part)."""
        return self.run_dir.name.rsplit("-", 1)[1]

    def changes(self) -> list[TaskResult]:
        """What changed (or, in check mode, would change), per host and task."""
        return [r for r in read_task_results(self.artifact_dir) if r.status == "changed"]

    def task_results(self, task: str) -> list[TaskResult]:
        """Per-host results of the tasks named `task`, in the order they arrived."""
        return [r for r in read_task_results(self.artifact_dir) if r.task == task]

    def started(self, task: str) -> set[str]:
        """Hosts on which the task named `task` started: it may have acted there even when
        no result came back."""
        return {
            (e.get("event_data") or {}).get("host", "")
            for e in read_events(self.artifact_dir)
            if e.get("event") == "runner_on_start"
            and (e.get("event_data") or {}).get("task") == task
        }

    def raise_for_failures(self) -> None:
        """Raise the typed error that describes a failed run; do nothing when it succeeded."""
        if self.ok:
            return
        if len(self.failures) == 1:
            raise self.failures[0]
        if self.failures:
            hosts = sorted({f.host for f in self.failures})
            raise PlaybookError(
                f"{len(hosts)} host(s) failed: {', '.join(hosts)}", failures=self.failures
            )
        if self.status == "timeout":
            raise PlaybookError(f"the playbook timed out (artifacts: {self.run_dir})")
        detail = self.error or f"ansible-playbook exited with rc {self.rc}"
        raise PlaybookError(f"{detail} (artifacts: {self.run_dir})")


class EventCollector:
    """ansible-runner event_handler: runs for every event, so it stays cheap."""

    def __init__(self, progress: ProgressCallback | None = None) -> None:
        self.progress = progress
        self.tasks = 0
        self.failures: list[HostFailed | HostUnreachable] = []
        self.stats: dict[str, HostStats] = {}
        self.error = ""
        self._origin_expected = False

    def __call__(self, event: Mapping[str, Any]) -> bool:
        name = event.get("event", "")
        data = event.get("event_data") or {}
        if name == "playbook_on_task_start":
            self.tasks += 1
            self._emit(PlayEvent("task", data.get("task", "")))
        elif name in _HOST_EVENTS:
            self._host_event(name, data)
        elif name == "playbook_on_stats":
            self.stats = parse_stats(data)
        elif name in ("verbose", "error"):
            self._error_line(event.get("stdout", ""))
        return True  # keep the event in the artifacts

    def _host_event(self, name: str, data: Mapping[str, Any]) -> None:
        host = data.get("host", "")
        task = data.get("task", "")
        res = data.get("res") or {}
        status = _HOST_EVENTS[name]
        if status == "ok" and res.get("changed"):
            status = "changed"
        if name == "runner_on_failed" and not data.get("ignore_errors"):
            self.failures.append(HostFailed(host, task, failure_message(res)))
        elif name == "runner_on_unreachable":
            self.failures.append(unreachable(host, task, res))
        self._emit(PlayEvent("host", task, host, status))

    def _error_line(self, stdout: str) -> None:
        # The first error ansible-playbook prints is the cause; its "Origin:" line follows.
        for line in _ANSI.sub("", stdout).splitlines():
            line = line.strip()
            if not self.error and line.startswith(("ERROR!", "[ERROR]:")):
                self.error = line.split(maxsplit=1)[1] if " " in line else line
                self._origin_expected = True
            elif self._origin_expected and line:
                if line.startswith("Origin:"):
                    self.error = f"{self.error} ({line})"
                self._origin_expected = False

    def _emit(self, event: PlayEvent) -> None:
        if self.progress is None:
            return
        try:
            self.progress(event)
        except Exception:  # progress is cosmetic: never let it break a run
            log.debug("progress callback failed; progress disabled", exc_info=True)
            self.progress = None

    def final_failures(self) -> list[HostFailed | HostUnreachable]:
        """The failure that ended each failed host's run, one per host.

        Events do not say whether a block rescued a failure, but a host stops at a failure
        that is not rescued, so its last failure is the one the final stats count.
        """
        last: dict[str, HostFailed | HostUnreachable] = {}
        for failure in reversed(self.failures):
            if failure.host in last:
                continue
            if not self.stats or _counted(failure, self.stats.get(failure.host)):
                last[failure.host] = failure
        return [f for f in self.failures if last.get(f.host) is f]


def _counted(failure: HostFailed | HostUnreachable, stats: HostStats | None) -> bool:
    if stats is None:
        return True
    if isinstance(failure, HostUnreachable):
        return stats.unreachable > 0
    return stats.failed > 0


def parse_stats(data: Mapping[str, Any]) -> dict[str, HostStats]:
    """Per-host counters from the event data of playbook_on_stats."""
    keys = {
        "ok": "ok",
        "changed": "changed",
        "failures": "failed",
        "dark": "unreachable",
        "skipped": "skipped",
        "rescued": "rescued",
        "ignored": "ignored",
    }
    stats: dict[str, HostStats] = {}
    hosts = set(data.get("processed") or {})
    for key in keys:
        hosts.update(data.get(key) or {})
    for host in sorted(hosts):
        counts = {attr: int((data.get(key) or {}).get(host, 0)) for key, attr in keys.items()}
        stats[host] = HostStats(host=host, **counts)
    return stats


def unreachable(host: str, task: str, res: Mapping[str, Any]) -> HostUnreachable:
    """The error of a host Ansible could not reach; ssh refusing its host key gets one line
    that says so and what to do."""
    if res.get("censored"):  # no_log hid ssh's message: run_playbook looks at the host key
        return HostUnreachable(host, hostkeys.HIDDEN, task=task)
    items = [i for i in res.get("results") or [] if isinstance(i, Mapping)]  # a loop's
    for result in (res, *items):
        if refused := hostkeys.refusal(host, str(result.get("msg") or "")):
            return HostKeyError(host, refused, task=task)
    return HostUnreachable(host, failure_message(res), task=task)


def failure_message(res: Mapping[str, Any]) -> str:
    """One line that says why a task failed, from the task result `res`."""
    for item in res.get("results") or []:
        if isinstance(item, Mapping) and (item.get("failed") or item.get("unreachable")):
            label = item.get("_ansible_item_label", item.get("item"))
            return f"item {label}: {failure_message(item)}"
    raw = str(res.get("msg") or "").removeprefix("Task failed: ")  # ansible-core 2.19
    msg = _shorten(raw)
    extra = _last_line(str(res.get("stderr") or res.get("module_stderr") or ""))
    if extra and extra not in msg:
        msg = f"{msg}: {_shorten(extra)}" if msg else _shorten(extra)
    return msg or "failed"


def _shorten(text: str) -> str:
    """One line; a long text keeps its start and its last line (where tools put the cause)."""
    flat = " ".join(text.split())
    if len(flat) <= MAX_MESSAGE:
        return flat
    head = flat[: MAX_MESSAGE // 3].rstrip()
    tail = " ".join(_last_line(text).split())[-(MAX_MESSAGE - len(head) - 5) :]
    return f"{head} ... {tail}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def read_events(artifact_dir: Path) -> Iterator[dict[str, Any]]:
    """The events of a finished run, in order."""
    events_dir = artifact_dir / "job_events"
    if not events_dir.is_dir():
        return
    files = [p for p in events_dir.glob("*.json") if p.name.split("-", 1)[0].isdigit()]
    for path in sorted(files, key=lambda p: int(p.name.split("-", 1)[0])):
        with path.open(encoding="utf-8") as fh:
            yield json.load(fh)


def read_task_results(artifact_dir: Path) -> list[TaskResult]:
    results = []
    for event in read_events(artifact_dir):
        name = event.get("event", "")
        if name not in _HOST_EVENTS:
            continue
        data = event.get("event_data") or {}
        res = data.get("res") or {}
        status = _HOST_EVENTS[name]
        if status == "ok" and res.get("changed"):
            status = "changed"
        results.append(TaskResult(data.get("host", ""), data.get("task", ""), status, res))
    return results


def new_run_dir(settings: Settings, operation: str) -> Path:
    """Create <home>/runs/<timestamp>-<operation>-<id> with mode 0700."""
    if not _OPERATION.match(operation):
        raise InputError(f"invalid operation name {operation!r}")
    runs = settings.ensure_home()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = runs / f"{stamp}-{operation}-{uuid.uuid4().hex[:8]}"
    path.mkdir(mode=0o700)
    path.chmod(0o700)  # mkdir's mode is filtered by the umask
    (path / "artifacts").mkdir(mode=0o700)
    return path


def run_operation(run_dir: Path) -> str:
    """The operation of a run directory named <timestamp>-<operation>-<id>."""
    parts = run_dir.name.split("-")
    return "-".join(parts[1:-1])


def previous_task_count(settings: Settings, operation: str) -> int | None:
    """Tasks started by the latest successful run of `operation`, as a progress estimate."""
    if not settings.runs_dir.is_dir():
        return None
    runs = sorted(settings.runs_dir.glob(f"*-{operation}-*"), reverse=True)
    for run in runs:
        if run_operation(run) != operation:  # "deploy" must not match "deploy-check"
            continue
        try:
            summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if summary.get("status") == "successful" and not summary.get("check"):
            return int(summary.get("tasks") or 0) or None
    return None


def _envvars(settings: Settings, ident: str) -> dict[str, str]:
    # ansible.cfg resolves its relative paths (library, roles_path, module_utils,
    # inventory) against its own directory, so pointing at it is enough.
    env = {"ANSIBLE_CONFIG": str(settings.ansible_cfg), "ANSIBLE_NOCOLOR": "1"}
    # Run the ansible-playbook of the interpreter that runs cloudctl, even when its
    # virtualenv is not activated (e.g. /opt/cloud/cloudctl/bin/cloudctl).
    bindir = Path(sys.executable).parent
    if (bindir / "ansible-playbook").exists():
        env["PATH"] = os.pathsep.join([str(bindir), os.environ.get("PATH", os.defpath)])
    # What the guard needs (cloudctl/playguard.py); every process of the play inherits the
    # operation id, which is how the guard and reconcile find them.
    env[playguard.ENV_OPERATION] = ident
    env[playguard.ENV_PARENT] = str(os.getpid())
    # ansible-runner turns host key checking off unless the environment says otherwise, and
    # ansible then adds `-o StrictHostKeyChecking=no` after ansible.cfg's `=yes` (ssh keeps
    # the first, but nothing should say no).
    env["ANSIBLE_HOST_KEY_CHECKING"] = "True"
    chosen = os.environ.get("ANSIBLE_SSH_CONTROL_PATH_DIR")  # the operator's choice wins
    env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = chosen or str(control_path_dir(settings))
    return env


def control_path_dir(settings: Settings) -> Path:
    """Where ssh keeps this cloud's connections (ansible.cfg's ControlPersist), so that the
    next cloudctl run within ControlPersist reuses them instead of connecting anew.

    A connection is only reused by plays that would check the host's key against the same
    keys: the directory is named by a hash of the cloud's home and of its known_hosts (a
    changed known_hosts, e.g. after `cloudctl host trust --replace`, makes new connections,
    which check the key again). It lives under ~/.ansible/cp (ansible's own default, 0700):
    a socket path must stay under about 100 characters, which a home deep in a test's
    temporary directory would exceed.
    """
    digest = hashlib.sha256(str(settings.home).encode())
    with contextlib.suppress(OSError):  # no known_hosts yet
        digest.update(hostkeys.known_hosts_path(settings).read_bytes())
    return Path.home() / ".ansible" / "cp" / f"cloud-{digest.hexdigest()[:12]}"


REDACTED = "********"
# Extra vars whose name says they are secret: redacted in the run directory's copy.
# User data too: it often carries secrets, and the module that uses it never shows it.
_SECRET_VAR = re.compile(r"secret|passw|token|credential|private|user_data", re.IGNORECASE)
# The query of a URL (a presigned URL's signature) and its user:password@.
_URL_QUERY = re.compile(r"(?P<url>\bhttps?://[^\s?#\"']*)\?[^\s#\"']*", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?P<scheme>\bhttps?://)[^\s/@\"']*@", re.IGNORECASE)


def redact_extravars(value: Any) -> Any:
    """A copy of extra vars for the audit trail: values of secret-named fields
    (chap_secret, secret_key, password, token, private_key, user_data...) replaced, and every URL
    stripped of its query string and user info (a presigned URL is a bearer credential
    until it expires; its path stays visible)."""
    if isinstance(value, Mapping):
        secret = {k for k, v in value.items() if _SECRET_VAR.search(str(k)) and v not in (None, "")}
        return {k: REDACTED if k in secret else redact_extravars(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_extravars(v) for v in value]
    if isinstance(value, str):
        text = _URL_USERINFO.sub(r"\g<scheme>", value)
        return _URL_QUERY.sub(rf"\g<url>?{REDACTED}", text)
    return value


class _UnsafeDumper(yaml.SafeDumper):
    """YAML in which every string is tagged `!unsafe`: Ansible keeps such a value as data and
    never evaluates it as a template, wherever a play uses it (ansible-core trusts the
    strings of an extra-vars file as templates otherwise). Double quotes keep every byte."""


def _unsafe_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("!unsafe", value, style='"')


_UnsafeDumper.add_representer(str, _unsafe_str)


def dump_untrusted(extravars: Mapping[str, Any]) -> str:
    """The extra vars as ansible-playbook reads them: every string, keys included, as data."""
    # Through JSON first: tuples become lists, str subclasses (enums) plain strings.
    plain = json.loads(json.dumps(dict(extravars)))
    return yaml.dump(plain, Dumper=_UnsafeDumper, allow_unicode=True, width=2**31)


def _write_extravars(run_dir: Path, extravars: Mapping[str, Any] | None) -> Path | None:
    """Write the extra vars for ansible-playbook; returns the file to remove after the play.

    Every play's extra vars go through here, so no value a user gave (names, descriptions,
    user data, keys...) can ever be templated: see dump_untrusted. The vars go to a private
    temporary file (0600, $TMPDIR) outside the run directory, which is kept for audit: never
    to env/extravars, where ansible-runner would keep them. The run directory gets
    extravars.json (0600) with the secrets redacted instead.
    """
    if not extravars:
        return None
    text = dump_untrusted(extravars)
    _write_private(run_dir / "extravars.json", redact_extravars(extravars))
    fd, name = tempfile.mkstemp(
        prefix=f"cloudctl-vars-{run_dir.name.rsplit('-', 1)[1]}-", suffix=".yml"
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def _forget_extravars(
    handler: Callable[[Mapping[str, Any]], bool], vars_file: Path | None
) -> Callable[[Mapping[str, Any]], bool]:
    """Remove the private extra-vars file as soon as ansible-playbook has read it.

    ansible-playbook loads its extra vars before it loads the playbook, so they are read by
    the first playbook_on_start event. Removing the file then, not only when the play ends,
    leaves nothing behind when cloudctl is killed during the play.
    """
    if vars_file is None:
        return handler

    def on_event(event: Mapping[str, Any]) -> bool:
        if event.get("event") == "playbook_on_start":
            vars_file.unlink(missing_ok=True)
        return handler(event)

    return on_event


def _playbook_target(settings: Settings, playbook: str | os.PathLike[str]) -> str:
    """What ansible-playbook is given: a collection playbook's name (ansible-playbook finds
    it in the project's collections path), or a playbook file's absolute path."""
    text = os.fspath(playbook)
    if text.startswith(f"{COLLECTION}."):
        parts = text[len(COLLECTION) + 1 :].split(".")
        path = settings.collection_dir.joinpath("playbooks", *parts).with_suffix(".yml")
        target = text
    else:
        path = Path(text) if Path(text).is_absolute() else settings.project_dir / text
        target = str(path)
    if not path.is_file():
        raise ConfigError(f"playbook {text} does not exist ({path})")
    return target


def _cmdline(playbook: str, check: bool, vars_file: Path | None) -> str:
    """What follows the interpreter: the guard, then ansible-playbook and its arguments
    (ansible-runner appends --inventory, --limit and --tags)."""
    args = ["-I", playguard.__file__, "ansible-playbook", playbook]
    if check:
        args += ["--check", "--diff"]
    if vars_file is not None:
        args += ["--extra-vars", f"@{vars_file}"]
    return shlex.join(args)


def _journal_play(
    handler: Callable[[Mapping[str, Any]], bool], settings: Settings, ident: str
) -> Callable[[Mapping[str, Any]], bool]:
    """Record ansible-playbook's pid in the journal from the first event that carries it."""
    recorded = False

    def on_event(event: Mapping[str, Any]) -> bool:
        nonlocal recorded
        if not recorded and event.get("pid"):
            recorded = True
            try:
                operation_journal.playing(settings, ident, int(event["pid"]))
            except Exception:  # the operation's tag still finds the play: never break a run
                log.warning("could not record the play's pid in the journal", exc_info=True)
        return handler(event)

    return on_event


def _write_private(path: Path, data: Any) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)


def run_playbook(
    settings: Settings,
    playbook: str | os.PathLike[str],
    *,
    extravars: Mapping[str, Any] | None = None,
    limit: str | None = None,
    tags: str | None = None,
    check: bool = False,
    progress: ProgressCallback | None = None,
    operation: str = "deploy",
    timeout: int | None = None,
    journal: bool = True,
) -> PlayResult:
    """Run a playbook of the project and return what happened.

    Unless `check` or `journal=False` (plays that only read), the operation goes into the
    journal (cloudctl.journal) before the play starts and its outcome after it ends.

    `playbook` is a playbook of the collection by name (e.g. "cloudctl.cloud.site",
    "cloudctl.cloud.runtime.instance_run"), or a playbook file (absolute, or relative to
    the project directory). Failed tasks do not raise: call PlayResult.raise_for_failures() or read
    PlayResult.failures. Extra vars reach ansible-playbook through a private temporary file
    that is removed once ansible-playbook has read it (at the latest when the play ends);
    the run directory keeps extravars.json, a copy with the secrets redacted.
    """
    target = _playbook_target(settings, playbook)

    run_dir = new_run_dir(settings, operation)
    ident = run_dir.name.rsplit("-", 1)[1]
    collector = EventCollector(progress)
    started = datetime.now(UTC)
    journaled = journal and not check
    if journaled:
        operation_journal.begin(settings, ident, operation, limit, extravars)
    vars_file = _write_extravars(run_dir, extravars)
    handler = _forget_extravars(collector, vars_file)
    if journaled:
        handler = _journal_play(handler, settings, ident)
    try:
        # ansible-playbook runs behind cloudctl/playguard.py: no process of the play
        # outlives this thread of cloudctl, even when it is killed (-9).
        runner = ansible_runner.run(
            private_data_dir=str(run_dir),
            ident=ident,
            project_dir=str(settings.project_dir),
            binary=sys.executable,
            inventory=str(settings.inventory),
            envvars=_envvars(settings, ident),
            limit=limit or None,
            tags=tags or None,
            cmdline=_cmdline(target, check, vars_file),
            event_handler=handler,
            quiet=True,
            timeout=timeout,
        )
    finally:
        if vars_file is not None:
            vars_file.unlink(missing_ok=True)
    result = PlayResult(
        status=str(runner.status),
        rc=int(runner.rc if runner.rc is not None else -1),
        run_dir=run_dir,
        artifact_dir=run_dir / "artifacts" / ident,
        stats=collector.stats,
        failures=collector.final_failures() + _unmatched(limit, runner.status, collector.stats),
        tasks=collector.tasks,
        error=collector.error,
    )
    result.failures = hostkeys.explain(settings, result.failures)
    _write_summary(result, operation, target, limit, check, started)
    if journaled:
        operation_journal.finish(settings, ident, result.ok, result.status)
    return result


def _unmatched(
    limit: str | None, status: str, stats: Mapping[str, HostStats]
) -> list[HostUnreachable]:
    """Hosts named by `limit` that no play ran on: Ansible skips them ("no hosts matched")
    and succeeds, but an operation meant for them did not happen."""
    if not limit or status != "successful":
        return []
    return [
        HostUnreachable(host, "in no group of the inventory that this operation's play targets")
        for host in limit.split(",")
        if host and host not in stats
    ]


def _write_summary(
    result: PlayResult,
    operation: str,
    playbook: str,
    limit: str | None,
    check: bool,
    started: datetime,
) -> None:
    summary = {
        "operation": operation,
        "playbook": playbook,
        "limit": limit,
        "check": check,
        "started": started.isoformat(),
        "finished": datetime.now(UTC).isoformat(),
        "status": result.status,
        "rc": result.rc,
        "tasks": result.tasks,
        "error": result.error,
        "stats": [asdict(s) for s in result.stats.values()],
        "failures": [
            {
                "host": f.host,
                "task": f.task,
                "message": f.message,
                "unreachable": isinstance(f, HostUnreachable),
            }
            for f in result.failures
        ],
    }
    _write_private(result.run_dir / "summary.json", summary)
