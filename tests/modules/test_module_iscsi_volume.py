"""modules/iscsi_volume.py run for real through ansible-playbook inside a test SC host (network
namespace + private /run, see sc_host.py) with a real tgtd; QEMU's iSCSI initiator
(qemu-img, libiscsi, as the NC uses it) checks the export and its CHAP. Its tgtd client
(module_utils/tgt_ipc.py) is compared with Debian's tgtadm byte for byte."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest
from modhelpers import load_module_utils, run_module
from sc_host import IQN_PREFIX, ScHost, sparse_usage, stop, wait_for

ipc = load_module_utils("tgt_ipc")

pytestmark = pytest.mark.integration

GIB = 1 << 30
VOL = "vol-0a1b2c3d"
IQN = f"{IQN_PREFIX}:{VOL}"
USER, SECRET = "vol-0a1b2c3d", "s3cret-0a1b2c"


@pytest.fixture(scope="module")
def sc(tmp_path_factory):
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


def test_chap_secret_never_on_a_command_line(sc, volume, tmp_path):
    """strace records the command line of every program the run starts (ansible-playbook, the
    module's interpreter, anything the module runs): the CHAP secret is on none of them."""
    name, secret = "vol-0c0c0c0c", "Cmd1ine0Canary42"
    trace = tmp_path / "execve.log"
    strace = ["strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=execve", "-s", "65536",
              "-o", str(trace)]  # fmt: skip
    args = {"sc_config": str(sc.config), "name": name, "size_gb": 1, "chap_user": name,
            "chap_secret": secret}  # fmt: skip
    ok(run_module(tmp_path, "iscsi_volume", args, wrapper=[*strace, *sc.wrapper]))
    execs = trace.read_text()
    assert "ansible-playbook" in execs and "/usr/bin/python3" in execs, execs[:2000]
    assert secret not in execs
    assert qemu_info(sc, name, secret, f"{IQN_PREFIX}:{name}").returncode == 0
    wrong = qemu_info(sc, name, "wrong-secret-00", f"{IQN_PREFIX}:{name}")
    assert wrong.returncode != 0 and "Authentication failure" in wrong.stderr
    ok(volume(name=name, state="absent"))


# Every request iscsi_volume sends: tgtadm's arguments, and the same request through tgt_ipc.
REQUESTS = [
    ("--mode target --op show", ipc.MODE_TARGET, ipc.OP_SHOW, {}),
    ("--mode account --op show", ipc.MODE_ACCOUNT, ipc.OP_SHOW, {}),
    (f"--mode target --op new --tid 7 --targetname {IQN}", ipc.MODE_TARGET, ipc.OP_NEW,
     {"tid": 7, "params": {"targetname": IQN}}),
    ("--mode logicalunit --op new --tid 7 --lun 1 --backing-store /srv/v.img", ipc.MODE_DEVICE,
     ipc.OP_NEW, {"tid": 7, "lun": 1, "params": {"path": "/srv/v.img"}}),
    ("--mode target --op bind --tid 7 --initiator-address ALL", ipc.MODE_TARGET, ipc.OP_BIND,
     {"tid": 7, "params": {"initiator-address": "ALL"}}),
    ("--mode account --op new --user u7 --password pw-7", ipc.MODE_ACCOUNT, ipc.OP_NEW,
     {"params": {"user": "u7", "password": "pw-7"}}),
    ("--mode account --op bind --tid 7 --user u7", ipc.MODE_ACCOUNT, ipc.OP_BIND,
     {"tid": 7, "params": {"user": "u7"}}),
    ("--mode account --op unbind --tid 7 --user u7", ipc.MODE_ACCOUNT, ipc.OP_UNBIND,
     {"tid": 7, "params": {"user": "u7"}}),
    ("--mode account --op delete --user u7", ipc.MODE_ACCOUNT, ipc.OP_DELETE,
     {"params": {"user": "u7"}}),
    ("--mode target --op delete --force --tid 7", ipc.MODE_TARGET, ipc.OP_DELETE,
     {"tid": 7, "force": True}),
]  # fmt: skip


def tgtadm_bytes(sc: ScHost, args: str) -> bytes:
    """What tgtadm sends for ``args``: caught on a socket of our own in the host's /run
    (tgtadm --control-port 9 connects to /run/tgtd/socket.9), answered with success."""
    path = f"/proc/{sc.holder.pid}/root/run/tgtd/socket.9"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(1)
        server.settimeout(30)
        cmd = [*sc.wrapper, "tgtadm", "--lld", "iscsi", "--control-port", "9", *args.split()]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            conn, _ = server.accept()
            with conn:
                head = ipc.recv_exactly(conn, ipc.REQ.size)
                sent = head + ipc.recv_exactly(conn, ipc.REQ.unpack(head)[3] - ipc.REQ.size)
                conn.sendall(ipc.RSP.pack(0, ipc.RSP.size))
            assert proc.wait(timeout=30) == 0, proc.stderr.read()
        finally:
            stop(proc)
            os.unlink(path)
    return sent


def test_tgt_ipc_sends_what_tgtadm_sends(sc):
    for args, mode, op, kw in REQUESTS:
        assert ipc.encode(mode, op, **kw) == tgtadm_bytes(sc, args), args


def test_tgt_ipc_errors_as_tgtadm_words_them(sc):
    """Requests that tgtd refuses: tgt_ipc reports tgtadm's reason (so its error table
    matches tgtd's codes), never the password."""
    path = f"/proc/{sc.holder.pid}/root/run/tgtd/socket.0"
    password = "pw-in-no-message"
    ipc.request(ipc.MODE_TARGET, ipc.OP_NEW, tid=9, params={"targetname": IQN}, path=path)
    ipc.request(ipc.MODE_TARGET, ipc.OP_BIND, tid=9, params={"initiator-address": "ALL"},
                path=path)  # fmt: skip
    new_account = {"params": {"user": "u9", "password": password}}
    ipc.request(ipc.MODE_ACCOUNT, ipc.OP_NEW, path=path, **new_account)
    assert "\n    u9\n" in sc.tgtadm("--mode", "account", "--op", "show").stdout
    refused = [
        (f"--mode target --op new --tid 9 --targetname {IQN}x", ipc.MODE_TARGET, ipc.OP_NEW,
         {"tid": 9, "params": {"targetname": f"{IQN}x"}}),
        ("--mode target --op bind --tid 9 --initiator-address ALL", ipc.MODE_TARGET,
         ipc.OP_BIND, {"tid": 9, "params": {"initiator-address": "ALL"}}),
        ("--mode target --op unbind --tid 9 --initiator-address 192.0.2.1", ipc.MODE_TARGET,
         ipc.OP_UNBIND, {"tid": 9, "params": {"initiator-address": "192.0.2.1"}}),
        ("--mode target --op delete --tid 77", ipc.MODE_TARGET, ipc.OP_DELETE, {"tid": 77}),
        ("--mode account --op new --user u9 --password other", ipc.MODE_ACCOUNT, ipc.OP_NEW,
         new_account),
        ("--mode account --op delete --user nobody", ipc.MODE_ACCOUNT, ipc.OP_DELETE,
         {"params": {"user": "nobody"}}),
    ]  # fmt: skip
    reasons = set()
    for args, mode, op, kw in refused:
        cli = sc.tgtadm(*args.split())
        reason = cli.stderr.strip().removeprefix("tgtadm: ")
        assert cli.returncode != 0 and reason, args
        with pytest.raises(ipc.TgtdRefused) as exc:
            ipc.request(mode, op, path=path, **kw)
        assert str(exc.value).endswith(f" refused by tgtd: {reason}"), (args, str(exc.value))
        assert password not in str(exc.value)
        reasons.add(reason)
    assert len(reasons) == 6  # six different codes of the table

    with pytest.raises(ipc.TgtIpcError, match="comma") as exc:
        ipc.request(ipc.MODE_ACCOUNT, ipc.OP_NEW, params={"user": "u8", "password": "a,b"},
                    path=path)  # fmt: skip
    assert "a,b" not in str(exc.value)
    assert "u8" not in sc.tgtadm("--mode", "account", "--op", "show").stdout
    with pytest.raises(ipc.TgtdUnreachable, match="socket.99"):
        ipc.request(ipc.MODE_TARGET, ipc.OP_SHOW, path=path.replace("socket.0", "socket.99"))
    ipc.request(ipc.MODE_ACCOUNT, ipc.OP_DELETE, params={"user": "u9"}, path=path)
    ipc.request(ipc.MODE_TARGET, ipc.OP_DELETE, tid=9, force=True, path=path)
    assert "Target " not in sc.show()
