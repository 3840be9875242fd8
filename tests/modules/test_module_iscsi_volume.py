"""modules/iscsi_volume.py run for real through ansible-playbook inside a test SC host (network
namespace + private /run, see sc_host.py) with a real tgtd; QEMU's iSCSI initiator
(qemu-img, libiscsi, as the NC uses it) checks the export and its CHAP."""

from __future__ import annotations

import subprocess
import time

import pytest
from modhelpers import run_module
from sc_host import IQN_PREFIX, ScHost, sparse_usage, wait_for

pytestmark = pytest.mark.integration

GIB = 1 << 30
VOL = "vol-0a1b2c3d"
IQN = f"{IQN_PREFIX}:{VOL}"
USER, SECRET = "vol-0a1b2c3d", "s3cret-0a1b2c"


@pytest.fixture(scope="module")
def sc(tmp_path_factory):
    import os

    if os.geteuid() != 0:
        pytest.skip("needs root")
    host = ScHost(tmp_path_factory.mktemp("sc"))
    try:
        host.start_tgtd()
        yield host
    finally:
        host.close()


@pytest.fixture
def volume(sc, tmp_path):
    """Run iscsi_volume inside the SC host; returns the module's result."""

    def run(check: bool = False, **args) -> dict:
        args = {"sc_config": str(sc.config), **args}
        return run_module(tmp_path, "iscsi_volume", args, check=check, wrapper=sc.wrapper)

    return run


def ok(result: dict) -> dict:
    assert not result.get("failed"), result.get("msg")
    return result


def qemu_info(sc: ScHost, user: str | None, secret: str | None, iqn: str = IQN):
    auth = f"{user}%{secret}@" if user else ""
    return sc.run("qemu-img", "info", f"iscsi://{auth}127.0.0.1:3260/{iqn}/1", timeout=60)


def target_block(show: str, iqn: str) -> str:
    """The lines of one target in tgtadm's show output ('' when there is none)."""
    blocks = ("\n" + show).split("\nTarget ")
    return next((b for b in blocks if b.split("\n")[0].endswith(f": {iqn}")), "")


def test_lifecycle(sc, volume):
    path = sc.volume_dir / f"{VOL}.img"
    create = {"name": VOL, "size_gb": 1, "chap_user": USER, "chap_secret": SECRET}

    # check mode: predicts, touches nothing
    res = ok(volume(check=True, **create))
    assert res["changed"] and res["tid"] == 1 and res["iqn"] == IQN
    assert res["diff"]["before"]["target"] is None and res["diff"]["after"]["target"] == IQN
    assert res["diff"]["after"]["chap_users"] == [USER]
    assert not path.exists() and IQN not in sc.show()

    started = time.monotonic()
    res = ok(volume(**create))
    created_in = time.monotonic() - started
    assert res["changed"]
    assert (res["iqn"], res["lun"], res["tid"], res["path"]) == (IQN, 1, 1, str(path))
    assert res["portal"] == {"address": "127.0.0.1", "port": 3260} and res["chap"] is True
    assert SECRET not in str(res["diff"]) and "restored_bytes" not in res
    # what tgtd and the file system say, read independently of the module
    block = target_block(sc.show(), IQN)
    assert f"Backing store path: {path}" in block
    assert block.split("Account information:")[1].split()[0] == USER
    assert "ALL" in block.split("ACL information:")[1]
    assert path.stat().st_size == GIB and sparse_usage(path) < 1 << 20
    assert oct(path.stat().st_mode & 0o777) == "0o600"

    res = ok(volume(**create))
    assert not res["changed"] and res["tid"] == 1
    res = ok(volume(check=True, **create))
    assert not res["changed"]

    # QEMU's initiator (what the NC uses) logs in with the right CHAP only
    info = qemu_info(sc, USER, SECRET)
    assert info.returncode == 0 and "virtual size: 1 GiB" in info.stdout, info.stderr
    wrong = qemu_info(sc, USER, "wrong-secret-00")
    assert wrong.returncode != 0 and "Authentication failure" in wrong.stderr
    assert qemu_info(sc, None, None).returncode != 0

    # size mismatch: an error, never a resize
    res = volume(**{**create, "size_gb": 2})
    assert res.get("failed") and "never resized" in res["msg"], res
    assert path.stat().st_size == GIB

    # tgtd restart loses every target: the module re-exports the same data
    with open(path, "r+b") as f:
        f.seek(123 * 4096)
        f.write(b"MARKER-before-restart")
    sc.stop_tgtd()
    res = volume(**create)
    assert res.get("failed") and "cloud-tgtd, running?" in res["msg"], res
    sc.start_tgtd()
    assert IQN not in sc.show()
    res = ok(volume(check=True, **create))
    assert res["changed"] and res["diff"]["before"]["backing_store"] == str(path)
    assert IQN not in sc.show()
    res = ok(volume(**create))
    assert res["changed"] and res["diff"]["before"]["target"] is None
    assert f"Backing store path: {path}" in target_block(sc.show(), IQN)
    assert qemu_info(sc, USER, SECRET).returncode == 0
    with open(path, "rb") as f:
        f.seek(123 * 4096)
        assert f.read(21) == b"MARKER-before-restart"
    assert ok(volume(**create))["changed"] is False

    # absent refuses a target with a session (qemu-nbd keeps one open) unless force
    nbd = subprocess.Popen(
        [*sc.wrapper, "qemu-nbd", "-r", "-k", str(sc.work / "nbd.sock"),
         f"iscsi://{USER}%{SECRET}@127.0.0.1:3260/{IQN}/1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for("an iSCSI session", lambda: "I_T nexus: " in target_block(sc.show(), IQN))
        res = volume(name=VOL, state="absent")
        assert res.get("failed") and "session" in res["msg"] and "force" in res["msg"], res
        assert IQN in sc.show() and path.exists()
    finally:
        nbd.kill()
        nbd.wait()

    res = ok(volume(check=True, name=VOL, state="absent"))
    assert res["changed"] and res["diff"]["after"]["target"] is None
    assert IQN in sc.show() and path.exists()
    res = ok(volume(name=VOL, state="absent", force=True))
    assert res["changed"] and res["diff"]["before"]["chap_users"] == [USER]
    assert IQN not in sc.show() and not path.exists()
    assert USER not in sc.tgtadm("--mode", "account", "--op", "show").stdout
    assert not ok(volume(name=VOL, state="absent"))["changed"]
    print(f"create of a 1 GiB volume through ansible-playbook: {created_in:.2f} s")


def test_smallest_free_tid_and_chap_rules(sc, volume):
    names = ["vol-00000001", "vol-00000002", "vol-00000003"]

    def create(name: str) -> dict:
        return ok(volume(name=name, size_gb=1, chap_user=name, chap_secret="secret-12345"))

    assert [create(n)["tid"] for n in names[:2]] == [1, 2]
    ok(volume(name=names[0], state="absent"))
    assert create(names[2])["tid"] == 1  # the freed tid is reused

    res = volume(name="vol-00000004", size_gb=1)
    assert res.get("failed") and "chap_user and chap_secret are required" in res["msg"]
    res = volume(name="not-a-volume", size_gb=1, chap_user="u", chap_secret="s")
    assert res.get("failed") and "not a volume id" in res["msg"]
    assert not (sc.volume_dir / "vol-00000004.img").exists()
    for name in names[1:]:
        ok(volume(name=name, state="absent"))
    assert "Target " not in sc.show()
    assert not list(sc.volume_dir.iterdir())
