"""A Storage Controller test host for the SC module tests: a network namespace of our own plus
a private mount namespace (tmpfs over /run, where tgtd keeps its control socket), held open by
a `sleep` process; tgtd (and SeaweedFS) run inside it. Everything is stopped by PID."""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
IQN_PREFIX = "iqn.2026-11.cloud.test"
S3_ACCESS_KEY = "AKSCMODULETEST000001"
S3_SECRET_KEY = "sc-module-test-secret-sc-module-test-000"


def wait_for(what: str, check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def stop(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class ScHost:
    def __init__(self, work: Path, chap: bool = True) -> None:
        self.work = work
        self.netns = f"cloudtest-sc-{secrets.token_hex(4)}"
        self.volume_dir = work / "volumes"
        self.volume_dir.mkdir()
        self.config = work / "sc.json"
        self.write_config(chap)
        self.tgtd: subprocess.Popen | None = None
        self.weed: subprocess.Popen | None = None
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True)
        # ip netns exec and unshare exec their command: the holder's PID is the sleep's.
        self.holder = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "unshare", "-m", "--propagation", "private",
             "sh", "-c", "mount -t tmpfs tmpfs /run && exec sleep infinity"],
        )  # fmt: skip
        wait_for("the namespace holder", lambda: self._comm(self.holder.pid) == "sleep")
        self.wrapper = ["nsenter", "-t", str(self.holder.pid), "-m", "-n"]

    @staticmethod
    def _comm(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return ""

    def write_config(self, chap: bool) -> None:
        conf = {
            "zone": "zone-a",
            "service": "cloud-tgtd",
            "store": "file",
            "volume_dir": str(self.volume_dir),
            "volume_group": None,
            "portal": {"listen_address": "127.0.0.1", "address": "127.0.0.1", "port": 3260},
            "iqn_prefix": IQN_PREFIX,
            "chap": chap,
        }
        self.config.write_text(json.dumps(conf, indent=2))

    def run(self, *cmd: str, check: bool = False, **kw) -> subprocess.CompletedProcess:
        """Run a command inside the host's namespaces."""
        kw.setdefault("timeout", 120)
        return subprocess.run(
            [*self.wrapper, *cmd], capture_output=True, text=True, check=check, **kw
        )

    # --- tgtd ---------------------------------------------------------------------------------

    def tgtadm(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("tgtadm", "--lld", "iscsi", *args)

    def show(self) -> str:
        return self.tgtadm("--mode", "target", "--op", "show").stdout

    def start_tgtd(self) -> None:
        log = open(self.work / "tgtd.log", "a")  # noqa: SIM115 (the child keeps it)
        self.tgtd = subprocess.Popen(
            [*self.wrapper, "/usr/sbin/tgtd", "-f", "--iscsi", "portal=127.0.0.1:3260"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        wait_for(
            "tgtd to answer",
            lambda: self.tgtadm("--mode", "target", "--op", "show").returncode == 0,
        )

    def stop_tgtd(self) -> None:
        """As docs/measured.md says: remove the targets, ask tgtd to exit, else SIGKILL."""
        if not self.tgtd:
            return
        if self.tgtd.poll() is None:
            for line in self.show().splitlines():
                if line.startswith("Target "):
                    tid = line.split()[1].rstrip(":")
                    self.tgtadm("--mode", "target", "--op", "delete", "--force", "--tid", tid)
            self.tgtadm("--mode", "system", "--op", "delete")
            try:
                self.tgtd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        stop(self.tgtd)
        self.tgtd = None

    # --- SeaweedFS ----------------------------------------------------------------------------

    def start_weed(self) -> str:
        """A single-node SeaweedFS with S3 inside the namespace; returns the endpoint URL."""
        binary = Path(sys.executable).parent / "weed"
        data = self.work / "weed"
        data.mkdir()
        s3conf = self.work / "s3.json"
        s3conf.write_text(json.dumps({"identities": [{
            "name": "admin",
            "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]}))  # fmt: skip
        # Ports are private to our namespace, but weed names some unix sockets in the shared
        # /tmp after them (seaweedfs-*-grpc-<port>.sock): random ports avoid other tests'.
        base = random.randrange(20000, 45000, 4)
        self.weed_ports = [base, base + 1, base + 2, base + 3]
        master, volume, filer, s3 = self.weed_ports
        command = [
            str(binary), "-logtostderr", "server", f"-dir={data}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
            f"-master.port={master}", "-master.volumeSizeLimitMB=64",
            f"-volume.port={volume}", "-volume.preStopSeconds=0",
            "-filer", f"-filer.port={filer}", "-filer.localSocket=/run/weed-filer.sock",
            "-s3", f"-s3.port={s3}", f"-s3.config={s3conf}",
            "-s3.localSocket=/run/weed-s3.sock",
            "-s3.iam=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]  # fmt: skip
        log = open(self.work / "weed.log", "w")  # noqa: SIM115 (the child keeps it)
        self.weed = subprocess.Popen(
            [*self.wrapper, *command], stdout=log, stderr=subprocess.STDOUT, cwd=data
        )
        log.close()
        return f"http://127.0.0.1:{s3}"

    def s3(self, request: dict) -> dict:
        """Run one S3 client operation (tests/modules/sc_s3.py) inside the namespace."""
        proc = self.run(sys.executable, str(HERE / "sc_s3.py"), input=json.dumps(request))
        if proc.returncode != 0:
            raise AssertionError(f"sc_s3.py {request.get('op')} failed:\n{proc.stderr}")
        return json.loads(proc.stdout)

    def close(self) -> None:
        try:
            self.stop_tgtd()
            if self.weed:
                stop(self.weed, signal.SIGTERM)
                for port in self.weed_ports:
                    for sock in Path("/tmp").glob(f"seaweedfs-*-{port + 10000}.sock"):
                        sock.unlink(missing_ok=True)
        finally:
            stop(self.holder)
            subprocess.run(["ip", "netns", "del", self.netns], check=False)


def sparse_usage(path: Path) -> int:
    """Bytes a file really occupies on disk."""
    return os.stat(path).st_blocks * 512
