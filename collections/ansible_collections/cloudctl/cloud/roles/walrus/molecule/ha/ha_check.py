"""Drive a Walrus pair the way S3 clients do, and print what happened as JSON (molecule verify).

Runs on the controller (the lab hosts are reachable from it); keys come from the environment
(WALRUS_ACCESS_KEY, WALRUS_SECRET_KEY).

    ha_check.py roundtrip A B                   put through each gateway, read through the other
    ha_check.py failover A B NETNS STATE_FILE   PUT a numbered object through B every 100 ms and
                                                read an older one; kill -9 every process of the
                                                lab host NETNS but sshd (its weed processes, its
                                                supervisord, its etcd member); keep going until B
                                                has taken writes for 5 s; record the acknowledged keys
    ha_check.py catchup A B STATE_FILE          wait for A's gateway, then read every acknowledged
                                                key through both gateways

A and B are gateway addresses (http://HOST:PORT).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

BUCKET = "images"
PERIOD_S = 0.1


def client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=os.environ["WALRUS_ACCESS_KEY"],
        aws_secret_access_key=os.environ["WALRUS_SECRET_KEY"],
        config=Config(
            connect_timeout=2,
            read_timeout=10,
            retries={"max_attempts": 1},
            s3={"addressing_style": "path"},
        ),
    )


def body_of(key: str) -> bytes:
    return key.encode() * 64


def roundtrip(a: str, b: str) -> dict:
    s3a, s3b = client(a), client(b)
    key_a, key_b = f"ha-a-{uuid.uuid4().hex}", f"ha-b-{uuid.uuid4().hex}"
    s3a.put_object(Bucket=BUCKET, Key=key_a, Body=body_of(key_a))
    s3b.put_object(Bucket=BUCKET, Key=key_b, Body=body_of(key_b))
    return {
        "a_to_b": s3b.get_object(Bucket=BUCKET, Key=key_a)["Body"].read() == body_of(key_a),
        "b_to_a": s3a.get_object(Bucket=BUCKET, Key=key_b)["Body"].read() == body_of(key_b),
        "buckets_a": sorted(x["Name"] for x in s3a.list_buckets()["Buckets"]),
        "buckets_b": sorted(x["Name"] for x in s3b.list_buckets()["Buckets"]),
    }


def kill_host(netns: str) -> list[str]:
    """kill -9 every process of the lab host but its sshd; returns what was killed."""
    pids = subprocess.run(
        ["ip", "netns", "pids", netns], check=True, text=True, capture_output=True
    ).stdout.split()
    killed = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            if comm != "sshd":
                os.kill(int(pid), signal.SIGKILL)
                killed.append(comm)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return sorted(killed)


def failover(a: str, b: str, netns: str, state_file: str) -> dict:
    s3a, s3b = client(a), client(b)
    old_key = f"ha-old-{uuid.uuid4().hex}"
    s3a.put_object(Bucket=BUCKET, Key=old_key, Body=body_of(old_key))
    acked, failed_puts, failed_reads = [], [], []
    killed, t_kill, first_ok, last_fail = None, None, None, None
    seq = 0
    start = time.monotonic()
    while time.monotonic() - start < 90:
        began = time.monotonic()
        if t_kill is None and len(acked) >= 10:
            killed, t_kill = kill_host(netns), time.monotonic()
            began = t_kill
        key = f"ha-seq-{seq:06d}"
        seq += 1
        try:
            s3b.put_object(Bucket=BUCKET, Key=key, Body=body_of(key))
            acked.append(key)
            if t_kill is not None and first_ok is None:
                first_ok = time.monotonic() - t_kill
        except (BotoCoreError, ClientError) as exc:  # one unacknowledged write
            last_fail = time.monotonic()
            failed_puts.append(
                {
                    "key": key,
                    "t": round(last_fail - (t_kill or last_fail), 2),
                    "error": str(exc)[:160],
                }
            )
        try:
            if s3b.get_object(Bucket=BUCKET, Key=old_key)["Body"].read() != body_of(old_key):
                failed_reads.append(round(time.monotonic() - (t_kill or began), 2))
        except (BotoCoreError, ClientError):
            failed_reads.append(round(time.monotonic() - (t_kill or began), 2))
        # Done once B has taken every write for 5 s since its first one after the kill.
        if first_ok is not None and time.monotonic() - max(last_fail or 0, t_kill + first_ok) > 5:
            break
        time.sleep(max(0.0, PERIOD_S - (time.monotonic() - began)))
    with open(state_file, "w") as f:
        json.dump({"acked": acked, "old_key": old_key}, f)
    return {
        "killed": killed,
        "acked": len(acked),
        "acked_after_kill": sum(1 for k in acked if int(k[-6:]) >= 10),
        "failed_puts": failed_puts,
        "failed_reads_at": failed_reads,
        "first_ok_put_after_kill_s": None if first_ok is None else round(first_ok, 2),
        "writes_recovered": first_ok is not None and acked[-1:] == [key],
    }


def catchup(a: str, b: str, state_file: str) -> dict:
    with open(state_file) as f:
        state = json.load(f)
    s3a, s3b = client(a), client(b)
    start = time.monotonic()
    while True:
        try:
            # Back = A's gateway takes writes again (its volume server has rejoined).
            s3a.put_object(Bucket=BUCKET, Key="ha-back", Body=b"back")
            break
        except (BotoCoreError, ClientError):
            if time.monotonic() - start > 120:
                return {"a_back": False}
            time.sleep(0.2)
    back_s = time.monotonic() - start
    missing = {"a": [], "b": []}
    for key in state["acked"]:
        for name, s3 in (("a", s3a), ("b", s3b)):
            try:
                if s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() != body_of(key):
                    missing[name].append(key)
            except (BotoCoreError, ClientError):
                missing[name].append(key)
    result = roundtrip(a, b)
    result.update(
        {
            "a_back": True,
            "a_back_s": round(back_s, 2),
            "checked": len(state["acked"]),
            "missing_a": missing["a"],
            "missing_b": missing["b"],
        }
    )
    return result


def main(argv: list[str]) -> None:
    command, args = argv[0], argv[1:]
    result = {"roundtrip": roundtrip, "failover": failover, "catchup": catchup}[command](*args)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
