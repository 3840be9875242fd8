# SPDX-License-Identifier: GPL-3.0-or-later
"""The arbitrator: Eucalyptus's rule on this host's probes, for keepalived.

    arbitrator.py --watch CONFIG.json   the service: a check every interval, keepalived's track file
    arbitrator.py CONFIG.json           one check (exit 1: every probe fails)

CONFIG holds {"targets": ["icmp:ADDRESS", "tcp:ADDRESS:PORT", ...], "status_file": PATH,
"log_file": PATH, "track_file": PATH, "interval": S, "timeout": S, "fall": N, "rise": N}.
Every probe runs at once (ping -c1 -W<timeout>, or a TCP connect with that timeout). ALL
probes failing -> the check fails; SOME failing -> a log line only; none -> ok. A line is
logged only when the set of failing probes changes, and the last result is kept in
status_file (JSON) for `cloudctl service status`.

The service writes 1 to track_file after `fall` failed checks in a row and 0 again after
`rise` good ones: keepalived tracks the file (vrrp_track_file, weight 0) and puts the host's
instances in FAULT the moment it reads 1 (it releases its addresses). A service rather than
keepalived's vrrp_script: a script is a new python process every second, which on a loaded
host (measured: load average 60 on 2 cores) took longer than its timeout to start, so both
hosts of a pair went FAULT and nobody held the addresses. No shell: targets are passed to
ping as one argument each.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

PROBE_TIMEOUT_S = 1


def probe(target: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    kind, rest = target.split(":", 1) if ":" in target else (target, "")
    if kind == "icmp":
        ping = ["ping", "-n", "-q", "-c1", f"-W{max(1, round(timeout))}", "--", rest]
        return (
            subprocess.run(
                ping, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            ).returncode
            == 0
        )
    if kind == "tcp":
        host, port = rest.rsplit(":", 1) if ":" in rest else (rest, "")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                return True
        except (OSError, ValueError):
            return False
    return False


def verdict(results: dict[str, bool]) -> str:
    failed = [t for t, ok in results.items() if not ok]
    if not failed:
        return "ok"
    return "all-failed" if len(failed) == len(results) else "some-failed"


def read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def write_json(path: str, data: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def check(config: dict) -> dict:
    """One check: every probe at once; the status file, a log line when the failing set
    changed. The status: {time, verdict, probes}."""
    targets = config.get("targets") or []
    timeout = float(config.get("timeout", PROBE_TIMEOUT_S))
    results = {}
    if targets:
        with ThreadPoolExecutor(max_workers=len(targets)) as pool:
            results = dict(zip(targets, pool.map(lambda t: probe(t, timeout), targets)))
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    status = {"time": now, "verdict": verdict(results) if results else "ok", "probes": results}
    previous = read_json(config["status_file"])
    if previous.get("probes") != results:
        failed = ", ".join(t for t, ok in results.items() if not ok) or "none"
        line = {
            "ok": "every probe answers",
            "some-failed": f"some probes fail ({failed}): logged only",
            "all-failed": f"every probe fails ({failed}): giving up the addresses",
        }[status["verdict"]]
        with open(config["log_file"], "a") as log:
            log.write(f"{now} arbitrator: {line}\n")
    write_json(config["status_file"], status)
    return status


def main(config_path: str) -> int:
    status = check(read_json(config_path))
    return 1 if status["verdict"] == "all-failed" else 0


def write_track(path: str, value: int) -> None:
    """keepalived's track file, written in place (keepalived reads it on close) and only when
    the value changes."""
    try:
        with open(path) as f:
            if f.read().strip() == str(value):
                return
    except OSError:
        pass
    with open(path, "w") as f:
        f.write(f"{value}\n")


def watch(config_path: str) -> None:
    """The service: a check every interval; the track file 1 after `fall` failed checks in a
    row, 0 again after `rise` good ones."""
    config = read_json(config_path)
    interval = float(config.get("interval", 1))
    fall, rise = int(config.get("fall", 1)), int(config.get("rise", 2))
    for path in (config["status_file"], config["track_file"]):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    failing, bad, good = False, 0, 0
    while True:
        started = time.monotonic()
        if check(config)["verdict"] == "all-failed":
            bad, good = bad + 1, 0
            failing = failing or bad >= fall
        else:
            bad, good = 0, good + 1
            failing = failing and good < rise
        write_track(config["track_file"], 1 if failing else 0)
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


if __name__ == "__main__":
    if sys.argv[1] == "--watch":
        watch(sys.argv[2])
    sys.exit(main(sys.argv[1]))
