#!/usr/bin/env python3
"""Where a runtime operation's seconds go outside the play's own work.

Needs the demo cloud (`bash scripts/ciab.sh`, CIAB_HOST names it). Each figure is the median
of --repeat runs, as a ratio to the bare one-task ansible-runner play of the same run
(bench/common.baseline_play):

- interpreter, cloudctl's start-up (its imports: `cloudctl volume attach --help`),
  `import ansible_runner`;
- ansible-playbook alone: a play with no task on localhost (start-up, config, collection
  loading), and the bare ping play to the cloud host without ansible-runner (what the runner
  adds: its private data dir, event files, display callback);
- the bare play with a cold SSH connection (a fresh ControlPath directory) against a warm one
  (the master of the previous run, ControlPersist);
- the bare play through cloudctl.runner.run_playbook (run directory, journal, playguard,
  extra vars file, event handler), in this process;
- `cloudctl volume attach` / `detach` of a volume to a running instance, split by the play's
  events: before the play starts (cloudctl's start-up, state, journal, ansible-playbook's
  start-up), each task, after the play (runner, state, output). The baseline runs again
  in every round of these, and their rows are ratios to the median of those runs (a loaded
  machine changes a lot in the minutes between the first rows and the last).

--before DIR adds attach and detach with the cloudctl of another work tree (taking turns with
this one's); --mitogen DIR adds the ping play, attach and detach with Mitogen for Ansible's
mitogen_linear strategy (DIR: the ansible_mitogen package, e.g. of an unpacked
`pip download mitogen`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from common import (
    BIN,
    LAB,
    PROJECT,
    Row,
    baseline_play,
    cloudctl,
    cloudctl_argv,
    env,
    load_average,
    median,
    timed,
)

PING = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n"
EMPTY = "- hosts: localhost\n  gather_facts: false\n  tasks: []\n"


def run(argv: list[str], extra_env: dict[str, str] | None = None) -> float:
    seconds, proc = timed(
        lambda: subprocess.run(
            argv, env={**env(), **(extra_env or {})}, capture_output=True, check=False
        )
    )
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr.decode()}")
    return seconds


def playbook_argv(play: Path) -> list[str]:
    return [str(BIN / "ansible-playbook"), "-i", str(LAB / "inventory"), str(play)]


def ansible_env(**extra: str) -> dict[str, str]:
    return {"ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"), **extra}


def through_cloudctl_runner(play: Path) -> float:
    """The bare play through cloudctl's runner (run dir, journal, guard, vars file)."""
    from cloudctl import runner
    from cloudctl.config import resolve_settings

    settings = resolve_settings(env=env())
    seconds, result = timed(
        lambda: runner.run_playbook(
            settings, play, extravars={"bench": "x"}, operation="bench-ping", journal=True
        )
    )
    if not result.ok:
        raise SystemExit(f"ping through cloudctl's runner failed: {result.status}")
    return seconds


def latest_run(operation: str) -> Path:
    runs = sorted((LAB / "cloudctl" / "runs").glob(f"*-{operation}-*"))
    return runs[-1]


def phases(operation: str, started: float, ended: float) -> dict[str, float]:
    """Seconds before the play, per task (longest host), and after the play, of the latest
    run of `operation`, from its events' timestamps and the command's wall clock."""
    events = sorted(
        (json.loads(p.read_text()) for p in latest_run(operation).glob("artifacts/*/job_events/*.json")),
        key=lambda e: e["counter"],
    )  # fmt: skip
    stamp = {e["event"]: datetime.fromisoformat(e["created"]).timestamp() for e in reversed(events)}
    split = {"before the play": stamp["playbook_on_start"] - started}
    for event in events:
        data = event.get("event_data") or {}
        if event["event"].startswith("runner_on_") and "duration" in data:
            key = f"task: {data['task']}"
            split[key] = max(split.get(key, 0.0), float(data["duration"]))
    last = max(datetime.fromisoformat(e["created"]).timestamp() for e in events)
    split["play (start to stats)"] = last - stamp["playbook_on_start"]
    split["after the play"] = ended - last
    return split


def tree_env(tree: Path) -> dict[str, str]:
    """cloudctl's environment for the demo cloud with the code of another work tree (e.g.
    `git worktree add /tmp/before HEAD~3`)."""
    return dict(env(), PYTHONPATH=str(tree), CLOUDCTL_PROJECT=str(tree))


def mitogen_env(package: Path) -> dict[str, str]:
    """Mitogen for Ansible's linear strategy, from the ansible_mitogen package at `package`
    (e.g. of `pip download mitogen` unpacked; its strategy plugin puts it on sys.path)."""
    plugins = package / "plugins" / "strategy"
    return {"ANSIBLE_STRATEGY_PLUGINS": str(plugins), "ANSIBLE_STRATEGY": "mitogen_linear"}


def timed_command(
    environ: dict[str, str], operation: str, *args: str
) -> tuple[float, dict[str, float]]:
    started = time.time()
    proc = subprocess.run(
        cloudctl_argv(*args), env=environ, capture_output=True, text=True, check=False
    )
    ended = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"cloudctl {' '.join(args)} failed:\n{proc.stderr}")
    return ended - started, phases(operation, started, ended)


def merge(samples: list[dict[str, float]]) -> dict[str, float]:
    return {key: median([s.get(key, 0.0) for s in samples]) for key in samples[0]}


def measure(work: Path, repeat: int, before: Path | None, mitogen: Path | None) -> list[Row]:
    ping = work / "ping.yml"
    ping.write_text(PING)
    empty = work / "empty.yml"
    empty.write_text(EMPTY)
    base = median([baseline_play(work) for _ in range(repeat)])
    ref = [("baseline", base)]
    rows = [Row("bare one-task ansible-runner play (baseline)", base, "s", ref)]

    def row(name: str, values: list[float]) -> None:
        rows.append(Row(name, median(values), "s", ref))

    row("python -c pass", [run([sys.executable, "-c", "pass"]) for _ in range(repeat)])
    attach_help = cloudctl_argv("volume", "attach", "--help")  # imports what attach imports
    row("cloudctl volume attach --help", [run(attach_help) for _ in range(repeat)])
    row(
        "python -c 'import ansible_runner'",
        [run([sys.executable, "-c", "import ansible_runner"]) for _ in range(repeat)],
    )
    row(
        "ansible-playbook, no task, localhost",
        [run(playbook_argv(empty), ansible_env()) for _ in range(repeat)],
    )
    row(
        "ansible-playbook, the ping play, warm SSH",
        [run(playbook_argv(ping), ansible_env()) for _ in range(repeat)],
    )
    cold = []
    for n in range(repeat):
        cp = work / f"cp-{n}"  # a fresh ControlPath directory: a new SSH connection
        cold.append(run(playbook_argv(ping), ansible_env(ANSIBLE_SSH_CONTROL_PATH_DIR=str(cp))))
    row("ansible-playbook, the ping play, cold SSH", cold)
    if mitogen:
        row(
            "ansible-playbook, the ping play, warm SSH, Mitogen",
            [run(playbook_argv(ping), ansible_env(**mitogen_env(mitogen))) for _ in range(repeat)],
        )
    row(
        "the ping play through cloudctl's runner",
        [through_cloudctl_runner(ping) for _ in range(repeat)],
    )

    [inst] = cloudctl("instance", "run", "--image", image_id())
    vol = cloudctl("volume", "create", "--size", "1")[0]["id"]
    variants = {"": env()}  # label -> cloudctl's environment
    if before:
        variants[f"{before.name}: "] = tree_env(before)
    if mitogen:
        variants["mitogen: "] = {**env(), **mitogen_env(mitogen)}
    samples: dict[str, list[tuple[float, dict[str, float]]]] = {}
    attach = ("volume-attach", "volume", "attach", vol, "--instance", inst["id"])
    detach = ("volume-detach", "volume", "detach", vol)
    bases = []  # the baseline again in every round: these rows are ratios to its median
    try:
        for _ in range(repeat):
            bases.append(baseline_play(work))
            for label, environ in variants.items():  # in turn: each sees the same load
                for name, command in (("attach", attach), ("detach", detach)):
                    runs = samples.setdefault(f"{label}volume {name}", [])
                    runs.append(timed_command(environ, *command))
    except SystemExit as failed:  # e.g. a host unreachable on a loaded machine: keep the rest
        print(f"stopped early: {failed}", file=sys.stderr)
        subprocess.run(cloudctl_argv("volume", "detach", vol), env=env(), check=False)
    finally:
        cloudctl("volume", "delete", vol)
        cloudctl("instance", "terminate", inst["id"])
    ref = [("baseline", median(bases))]
    row("bare one-task ansible-runner play, between the operations", bases)
    for name, runs in samples.items():
        if not runs:
            continue
        row(name, [seconds for seconds, _ in runs])
        for part, seconds in merge([split for _, split in runs]).items():
            rows.append(Row(f"  {name}: {part}", seconds, "s", ref))
    return rows


def image_id() -> str:
    """A machine image of the demo cloud (the one scripts/ciab.sh registered)."""
    images = [i for i in cloudctl("image", "list") if i.get("kind") == "machine"]
    if not images:
        raise SystemExit("the demo cloud has no machine image")
    return images[0]["id"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--before", type=Path, help="also attach and detach with the cloudctl of this work tree"
    )
    parser.add_argument(
        "--mitogen",
        type=Path,
        metavar="ANSIBLE_MITOGEN_DIR",
        help="also measure the bare play, attach and detach with Mitogen for Ansible",
    )
    args = parser.parse_args()
    if not (LAB / "inventory").is_dir():
        raise SystemExit("no cloud-in-a-box: run `bash scripts/ciab.sh` first")
    print(f"load average before: {load_average()}")
    with tempfile.TemporaryDirectory(prefix="cloud-profile-") as work:
        rows = measure(Path(work), args.repeat, args.before, args.mitogen)
    width = max(len(r.name) for r in rows)
    for r in rows:
        print(f"{r.name:<{width}}  {r.value:7.2f} {r.unit}  {r.ratios()}")
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
