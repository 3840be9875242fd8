"""Secrets stay secret: CHAP secrets, the Walrus secret key, private keys, the admin
credentials, presigned URLs and user data never show up in ansible-runner's artifacts (every
file under CLOUDCTL_HOME/runs), in anything else cloudctl keeps in its home, in the lab host's
/var/log (daemon logs included) or in the output of any cloudctl command, and the files that
hold them are 0600 in 0700 directories.

The operations that carry secrets run through the CLI on the shared cloud (ops_cloud):
volume create, instance run (with user data: only the instance's seed may hold it), volume
attach, snapshot create, volume create --snapshot (also with --check and --debug), image
register, keypair create (to a file and to stdout), service status, event list/show, deploy
--check, and the clean-up (detach, delete, terminate, deregister). Then the canaries are
collected from where they legitimately live (state.json, the host's credential files, the
key files, and every presigned URL cloudctl generated: a sitecustomize module on the
cloudctl processes' PYTHONPATH records what botocore's presigner returns) and searched for
everywhere else.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.integration.cloud_client import CloudClient, in_host

pytestmark = pytest.mark.integration

MIN_CANARY = 16  # characters: shorter strings could match by chance
HOST_FILES_0600 = (
    "/etc/cloud/cloud.yml",
    "/etc/cloud/walrus/credentials.json",
    "/etc/cloud/walrus/s3.json",
    "/etc/cloud/clc/admin.json",
)
HOST_DIRS_0700 = ("/etc/cloud/walrus", "/etc/cloud/clc", "/etc/cloud/clc/inventory")
# Where the canaries may live in CLOUDCTL_HOME (state, the cloud configuration copy).
HOME_HOLDERS = ("state.json", "cloud.yml")

# Recorded in every cloudctl process (not in ansible-playbook): each presigned URL that
# botocore returns, one per line, to $SECRETS_TEST_URL_LOG.
SITECUSTOMIZE = textwrap.dedent(
    """
    import os, sys

    _log = os.environ.get("SECRETS_TEST_URL_LOG")
    if _log and os.path.basename(sys.argv[0] if sys.argv else "") == "cloudctl":
        from botocore.signers import RequestSigner

        _presign = RequestSigner.generate_presigned_url

        def generate_presigned_url(self, *args, **kwargs):
            url = _presign(self, *args, **kwargs)
            fd = os.open(_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a") as fh:
                fh.write(url + "\\n")
            return url

        RequestSigner.generate_presigned_url = generate_presigned_url
    """
)


class Session:
    """cloudctl commands whose output is kept for the search."""

    def __init__(self, cloud: CloudClient) -> None:
        self.cloud = cloud
        self.outputs: list[tuple[str, str]] = []  # (what, text)

    def run(self, *args: str, ok: bool = True, keep_stdout: bool = True, here: bool = False):
        proc = self.cloud.cloudctl(*args, ok=ok, here=here)
        label = "cloudctl " + " ".join(args)
        if keep_stdout:
            self.outputs.append((f"stdout of {label}", proc.stdout))
        self.outputs.append((f"stderr of {label}", proc.stderr))
        return proc

    def json(self, *args: str, here: bool = False):
        return json.loads(self.run("-o", "json", *args, here=here).stdout)


@pytest.fixture
def session(ops_cloud, tmp_path, monkeypatch):
    spy = tmp_path / "spy"
    spy.mkdir()
    (spy / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", str(spy))
    monkeypatch.setenv("SECRETS_TEST_URL_LOG", str(tmp_path / "presigned.log"))
    scratch = tmp_path / "tmpdir"  # cloudctl's private extra-vars files go here
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    s = Session(ops_cloud)
    s.url_log = tmp_path / "presigned.log"
    s.scratch = scratch
    return s


# --- the search ------------------------------------------------------------------------------


def find_in_tree(root: Path, canaries: dict[str, str], skip: tuple[Path, ...] = ()) -> list[str]:
    """'path: canary' for every file under root that holds a canary."""
    found = []
    for path in sorted(root.rglob("*")):
        if path in skip or not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        found += [f"{path}: {name}" for name, value in canaries.items() if value.encode() in data]
    return found


def find_in_host_logs(host: str, canaries: dict[str, str]) -> list[str]:
    """One pass over /var/log finds the files that hold any canary (none, when all is well);
    only those are searched for each canary."""
    assert not [name for name, value in canaries.items() if "\n" in value], canaries
    values = "".join(f"{value}\n" for value in canaries.values())
    proc = in_host(host, "grep", "-rlsaF", "-f", "-", "/var/log", input=values)
    assert proc.returncode in (0, 1, 2), proc.stderr  # 2: an unreadable file (a socket)
    holders = proc.stdout.split()
    found = []
    for name, value in canaries.items() if holders else ():
        proc = in_host(host, "grep", "-lsaF", "-e", value, *holders)
        assert proc.returncode in (0, 1, 2), proc.stderr
        found += [f"{host}:{path}: {name}" for path in proc.stdout.split()]
    return found


def find_in_outputs(outputs: list[tuple[str, str]], canaries: dict[str, str]) -> list[str]:
    return [f"{what}: {name}" for what, text in outputs for name, value in canaries.items()
            if value in text]  # fmt: skip


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def key_body_lines(pem: str) -> list[str]:
    """The full base64 lines of an OpenSSH private key (the short last one is mostly padding
    that every key shares)."""
    lines = [ln.strip() for ln in pem.splitlines() if ln.strip() and "-----" not in ln]
    return [ln for ln in lines if len(ln) >= 64]


def host_json(host: str, path: str) -> dict:
    proc = in_host(host, "cat", path)
    assert proc.returncode == 0, f"{path}: {proc.stderr}"
    return json.loads(proc.stdout)


# --- the test --------------------------------------------------------------------------------


def test_scanners_catch_a_planted_canary(ops_cloud, tmp_path):
    """The three searches find a string planted where they look (so a clean result means
    something)."""
    planted = {"planted": f"planted-canary-{secrets.token_hex(12)}"}
    probe = ops_cloud.home / "runs" / "planted-probe"
    probe.mkdir(parents=True, exist_ok=True)
    log = f"/var/log/cloudctl-planted-{secrets.token_hex(4)}.log"
    try:
        (probe / "event.json").write_text(json.dumps({"res": {"x": planted["planted"]}}))
        assert find_in_tree(ops_cloud.home / "runs", planted) == [
            f"{probe / 'event.json'}: planted"
        ]
        plant = in_host(ops_cloud.host, "sh", "-c", f"echo {planted['planted']} > {log}")
        assert plant.returncode == 0, plant.stderr
        assert find_in_host_logs(ops_cloud.host, planted) == [f"{ops_cloud.host}:{log}: planted"]
        outputs = [("stdout of x", "a\n" + planted["planted"] + "\n")]
        assert find_in_outputs(outputs, planted) == ["stdout of x: planted"]
    finally:
        (probe / "event.json").unlink(missing_ok=True)
        probe.rmdir()
        in_host(ops_cloud.host, "rm", "-f", log)


def test_secrets_stay_out_of_artifacts_logs_and_output(session, tmp_path):
    s, c = session, session.cloud
    cleanup: list[tuple[str, ...]] = []
    failed = []
    try:
        exercise(s, c, tmp_path, cleanup)
    finally:
        for args in reversed(cleanup):
            if s.run(*args, ok=False).returncode != 0:
                failed.append(" ".join(args))
    assert failed == [], f"clean-up failed: {failed}"
    # Every event of the shared cloud (the deploy's too), shown in this process: a new
    # interpreter for each of some hundred events took minutes (they read no presigned URL).
    s.run("event", "list", here=True)
    for event in s.json("event", "list", here=True):
        s.run("event", "show", event["id"], here=True)
        s.json("event", "show", event["id"], here=True)

    canaries = collect_canaries(s, c, tmp_path)
    skip = tuple(c.home / name for name in HOME_HOLDERS)
    leaks = (
        find_in_tree(c.home, canaries, skip=skip)
        + find_in_host_logs(c.host, canaries)
        + find_in_outputs(s.outputs, canaries)
    )
    assert leaks == [], "secrets found:\n" + "\n".join(leaks)

    # cloudctl's private extra-vars files are gone with their plays.
    assert list(s.scratch.glob("cloudctl-vars-*")) == []
    check_modes(c, tmp_path)


def exercise(s: Session, c: CloudClient, tmp_path: Path, cleanup: list) -> None:
    # Key pairs: one to a file (nothing printed), one to stdout (printed once, by design).
    key_file = tmp_path / "sec-file.pem"
    out = s.run("keypair", "create", "sec-file", "--output-file", str(key_file)).stdout
    cleanup.append(("keypair", "delete", "sec-file"))
    assert "PRIVATE KEY" not in out and str(key_file) in out
    printed = s.run("keypair", "create", "sec-stdout", keep_stdout=False).stdout
    cleanup.append(("keypair", "delete", "sec-stdout"))
    assert "BEGIN OPENSSH PRIVATE KEY" in printed
    (tmp_path / "sec-stdout.pem").write_text(printed)

    image = tmp_path / "sec.raw"
    image.write_bytes(os.urandom(1 << 20))
    rows = s.json("image", "register", "sec-image", "--file", str(image))
    emi = next(r["id"] for r in rows if r["kind"] == "machine")
    cleanup.append(("image", "deregister", emi))

    vol = s.json("volume", "create", "--size", "1")[0]["id"]
    cleanup.append(("volume", "delete", vol))
    s.run("volume", "create", "--size", "1", "--check")
    s.user_data = f"user-data-canary-{secrets.token_hex(16)}"
    user_data = tmp_path / "user-data"
    user_data.write_text(f"#!/bin/sh\n# {s.user_data}\ntrue\n")
    [inst] = s.json("instance", "run", "--image", c.ids["emi"], "--keypair", "ops",
                    "--user-data-file", str(user_data))  # fmt: skip
    cleanup.append(("instance", "terminate", inst["id"]))
    s.run("volume", "attach", vol, "--instance", inst["id"], "--check")
    s.json("volume", "attach", vol, "--instance", inst["id"])
    cleanup.append(("volume", "detach", vol))
    snap = s.json("snapshot", "create", vol)[0]["id"]
    cleanup.append(("snapshot", "delete", snap))
    s.run("volume", "create", "--snapshot", snap, "--check")
    debug = s.run("--debug", "-o", "json", "volume", "create", "--snapshot", snap)
    cleanup.append(("volume", "delete", json.loads(debug.stdout)[0]["id"]))
    for args in (("volume", "show", vol), ("volume", "list"), ("instance", "show", inst["id"]),
                 ("snapshot", "list"), ("keypair", "list"), ("image", "list")):  # fmt: skip
        s.run(*args)
        s.run("-o", "json", *args)
    # Detaching needs a guest that answers the unplug: wait until it has booted.
    c.guest(c.host, inst["private_ip"], "true")
    s.run("service", "status")
    s.json("service", "status")
    # Check mode with diffs through the roles that hold secrets (walrus: its keys and
    # s3.json; clc: admin.json, cloud.yml; common, their dependency); sc, cc and nc read
    # none, and the full deploy's own artifacts are searched with the rest.
    s.run("deploy", "--check", "--tags", "walrus,clc")


def collect_canaries(s: Session, c: CloudClient, tmp_path: Path) -> dict[str, str]:
    canaries: dict[str, str] = {}
    state = json.loads((c.home / "state.json").read_text())
    volumes = list((state.get("volumes") or {}).values())
    chap = {v["id"]: v["chap_secret"] for v in volumes if v.get("chap_secret")}
    assert len(chap) >= 2, f"expected the CHAP secrets of 2 volumes, got {sorted(chap)}"
    canaries.update({f"CHAP secret of {vid}": value for vid, value in chap.items()})

    walrus = host_json(c.host, "/etc/cloud/walrus/credentials.json")
    config = yaml.safe_load(in_host(c.host, "cat", "/etc/cloud/cloud.yml").stdout)
    assert config["walrus"]["secret_key"] == walrus["secret_key"]
    canaries["Walrus secret key"] = walrus["secret_key"]

    admin = host_json(c.host, "/etc/cloud/clc/admin.json")
    canaries["admin secret key"] = admin["secret_key"]
    canaries["admin access key"] = admin["access_key"]

    for name, path in (("ops", c.key), ("sec-file", tmp_path / "sec-file.pem"),
                       ("sec-stdout", tmp_path / "sec-stdout.pem")):  # fmt: skip
        lines = key_body_lines(path.read_text())
        assert lines, f"no private key lines in {path}"
        canaries.update({f"private key {name}, line {i}": ln for i, ln in enumerate(lines, 1)})

    urls = s.url_log.read_text().split() if s.url_log.exists() else []
    signatures = {}
    for url in urls:
        match = re.search(r"[?&]X-Amz-Signature=([0-9a-f]{64})", url)
        assert match, f"a presigned URL without a SigV4 signature: {url.split('?')[0]}"
        signatures[match[1]] = url.split("?")[0]
    # instance run: image, kernel, ramdisk; volume create --snapshot (twice, with --check);
    # snapshot create: its part URLs.
    paths = set(signatures.values())
    assert any("/images/" in p for p in paths) and any("/snapshots/" in p for p in paths), paths
    assert len(signatures) >= 6, paths
    canaries.update({f"presigned URL signature ({p})": sig for sig, p in signatures.items()})

    canaries["user data"] = s.user_data  # in loop items and job events before: never again

    short = [name for name, value in canaries.items() if len(value) < MIN_CANARY]
    assert short == [], f"canaries too short to search for: {short}"
    return canaries


def check_modes(c: CloudClient, tmp_path: Path) -> None:
    wrong = []

    def want(path: Path, expected: int) -> None:
        if mode(path) != expected:
            wrong.append(f"{path}: {oct(mode(path))}, expected {oct(expected)}")

    for path in (c.home, c.home / "runs", *c.home.glob("runs/*")):
        want(path, 0o700)
    for path in (c.home / "state.json", c.home / "state.json.lock", c.home / "cloud.yml",
                 c.key, tmp_path / "sec-file.pem",
                 *c.home.glob("runs/*/extravars.json"), *c.home.glob("runs/*/summary.json"),
                 *c.home.glob("runs/*/env/*")):  # fmt: skip
        if path.exists():
            want(path, 0o600)
    assert (c.home / "state.json").exists() and any(c.home.glob("runs/*/extravars.json"))
    listing = in_host(c.host, "stat", "-c", "%a %n", *HOST_FILES_0600, *HOST_DIRS_0700)
    assert listing.returncode == 0, listing.stderr
    modes = dict(reversed(line.split(" ", 1)) for line in listing.stdout.splitlines())
    for path in HOST_FILES_0600:
        if modes[path] != "600":
            wrong.append(f"{c.host}:{path}: {modes[path]}, expected 600")
    for path in HOST_DIRS_0700:
        if modes[path] != "700":
            wrong.append(f"{c.host}:{path}: {modes[path]}, expected 700")
    assert wrong == [], "\n".join(wrong)
