# SPDX-License-Identifier: GPL-3.0-or-later
"""The arbitrator, keepalived's vrrp_script: Eucalyptus's rule on this host's probes.

    arbitrator.py CONFIG.json

CONFIG holds {"targets": ["icmp:ADDRESS", "tcp:ADDRESS:PORT", ...], "status_file": PATH,
"log_file": PATH}. Every probe runs at once (ping -c1 -W1, or a TCP connect with a 1 s
timeout), so a check takes about 1 s at most. ALL probes failing -> exit 1 (keepalived puts
the host's instances in FAULT and it releases its addresses); SOME failing -> exit 0 and a log
line; none -> exit 0. A line is logged only when the set of failing probes changes, and the
last result is kept in status_file (JSON) for `cloudctl service status`. No shell: targets
are passed to ping as one argument each.
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


def probe(target: str) -> bool:
    kind, rest = target.split(":", 1) if ":" in target else (target, "")
    if kind == "icmp":
        ping = ["ping", "-n", "-q", "-c1", f"-W{PROBE_TIMEOUT_S}", "--", rest]
        return (
            subprocess.run(
                ping, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            ).returncode
            == 0
        )
    if kind == "tcp":
        host, port = rest.rsplit(":", 1) if ":" in rest else (rest, "")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S):
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


def main(config_path: str) -> int:
    config = read_json(config_path)
    targets = config.get("targets") or []
    if not targets:
        return 0  # nothing to arbitrate with (the precheck requires targets on a pair)
    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        results = dict(zip(targets, pool.map(probe, targets)))
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    status = {"time": now, "verdict": verdict(results), "probes": results}
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
    return 1 if status["verdict"] == "all-failed" else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
