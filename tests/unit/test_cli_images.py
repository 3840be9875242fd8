"""`cloudctl image ...` through click's CliRunner against a real SeaweedFS on 127.0.0.1.

The cloud configuration comes from $CLOUDCTL_CONFIG, a temp cloud.yml naming the test weed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cloudctl.cli.main import cli
from tests.unit.helpers import init_state
from tests.weed import free_port, weed  # noqa: F401 (weed: a module fixture)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bucket(weed):  # noqa: F811
    weed.client().create_bucket(Bucket="images")
    return weed


@pytest.fixture
def env(tmp_path, monkeypatch, bucket) -> Path:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("all: {}\n")
    monkeypatch.setenv("CLOUDCTL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CLOUDCTL_INVENTORY", str(inventory))
    monkeypatch.setenv("CLOUDCTL_STATE", str(tmp_path / "state.json"))
    monkeypatch.setenv("CLOUDCTL_CONFIG", str(bucket.cloud_yml(tmp_path / "cloud.yml")))
    monkeypatch.delenv("CLOUDCTL_PROJECT", raising=False)
    init_state(tmp_path / "state.json")
    return tmp_path


def run(*args: str):
    return CliRunner().invoke(cli, list(args), prog_name="cloudctl")


def test_register_list_show_deregister(env):
    disk = env / "tiny.qcow2"
    disk.write_bytes(b"QFI\xfb" + os.urandom(30_000))
    kernel = env / "vmlinuz"
    kernel.write_bytes(os.urandom(3000))

    result = run("-o", "json", "image", "register", "tiny", "--file", str(disk),
                 "--kernel", str(kernel), "--description", "a test image")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["kind"], r["object"], r["record"]) for r in rows] == [
        ("machine", "uploaded", "new"),
        ("kernel", "uploaded", "new"),
    ]
    emi, eki = rows[0]["id"], rows[1]["id"]

    result = run("image", "register", "again", "--file", str(disk), "--kernel", str(kernel))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["KIND", "ID", "FILE", "SIZE", "OBJECT", "RECORD"]
    assert lines[1].split()[-2:] == ["reused", "new"] and lines[2].split()[-2:] == [
        "reused",
        "reused",
    ]

    result = run("image", "list")
    assert result.exit_code == 0, result.output
    header, *body = result.stdout.splitlines()
    assert header.split() == [
        "ID", "NAME", "KIND", "FORMAT", "SIZE", "KERNEL_ID", "RAMDISK_ID", "STATE",
    ]  # fmt: skip
    assert [line.split()[2] for line in body] == ["machine", "machine", "kernel"]
    result = run("image", "list", "--kind", "kernel", "-o", "json")
    assert [r["id"] for r in json.loads(result.stdout)] == [eki]

    result = run("image", "show", "tiny", "-o", "yaml")
    assert result.exit_code == 0, result.output
    [shown] = yaml.safe_load(result.stdout)
    assert (shown["id"], shown["format"], shown["kernel_id"]) == (emi, "qcow2", eki)
    assert shown["description"] == "a test image" and len(shown["sha256"]) == 64

    result = run("image", "deregister", eki)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: kernel ")
    result = run("image", "deregister", emi)
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"machine image {emi} (tiny) deregistered; object kept: other images use it\n"
    )


def test_errors_are_one_line_with_an_exit_code(env):
    disk = env / "disk.img"
    disk.write_bytes(os.urandom(100))
    cases = [
        (["image", "register", "x", "--file", str(env / "none.img")], 2, "cannot read"),
        (["image", "register", "x", "--file", str(env)], 2, "is a directory"),
        (["image", "register", "x", "--file", str(disk), "--ramdisk", str(env / "e")], 2, "e:"),
        (["image", "show", "emi-00000000"], 2, "image 'emi-00000000' does not exist"),
        (["image", "show", "nosuch"], 2, "image 'nosuch' does not exist"),
        (["image", "deregister", "vol-12345678"], 2, "bad image id"),
    ]
    for args, code, message in cases:
        result = run(*args)
        assert result.exit_code == code, (args, result.output)
        assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, args
        assert message in result.stderr, (args, result.stderr)
        assert result.stdout == ""
    assert json.loads(run("-o", "json", "image", "list").stdout) == []


def test_walrus_down_is_one_line_and_records_nothing(env, bucket, monkeypatch):
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("CLOUDCTL_CONFIG", str(bucket.cloud_yml(env / "down.yml", closed)))
    disk = env / "disk.img"
    disk.write_bytes(os.urandom(100))
    result = run("image", "register", "x", "--file", str(disk))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: Walrus at {closed} does not answer")
    assert result.stderr.count("\n") == 1 and bucket.secret_key not in result.output
    assert run("-o", "json", "image", "list").stdout.strip() == "[]"
