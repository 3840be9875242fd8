"""kvm_probe, run for real through ansible-playbook.

Every run happens in a private mount namespace where /dev/kvm is a device node of our own
(bind-mounted over it), so that fixing its permissions never touches the machine's real
/dev/kvm. One test hides /dev/kvm altogether (a tmpfs over /dev in its mount namespace).
"""

from __future__ import annotations

import os
import shlex
import stat

import pytest
from modhelpers import load_module_source, run_module

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount namespace, mknod)"),
    pytest.mark.skipif(not os.path.exists("/usr/bin/qemu-system-x86_64"), reason="needs QEMU"),
]

KVM_REAL = os.path.exists("/dev/kvm")


def real_kvm_state():
    st = os.stat("/dev/kvm")
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


REAL_BEFORE = real_kvm_state() if KVM_REAL else None


def cpu_has_virt_flag() -> bool:
    with open("/proc/cpuinfo") as f:
        return any(
            line.startswith("flags") and ({"vmx", "svm"} & set(line.split(":", 1)[1].split()))
            for line in f
        )


@pytest.fixture
def kvm_node(tmp_path):
    """A private node for the KVM device (same major/minor as /dev/kvm), root:root 0600."""
    if not KVM_REAL:
        pytest.skip("/dev/kvm does not exist on this machine")
    st = os.stat("/dev/kvm")
    node = tmp_path / "kvm"
    os.mknod(node, 0o600 | stat.S_IFCHR, st.st_rdev)
    os.chown(node, 0, 0)
    os.chmod(node, 0o600)
    return node


def private_kvm(node) -> list[str]:
    """Wrapper: a private mount namespace where ``node`` is /dev/kvm."""
    script = f'mount --bind {shlex.quote(str(node))} /dev/kvm && exec "$@"'
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"]


# A private mount namespace whose /dev is a tmpfs with the few nodes Ansible and QEMU need.
HIDE_DEV_KVM = (
    "mount -t tmpfs -o mode=755 none /dev"
    " && mknod -m 666 /dev/null c 1 3 && mknod -m 666 /dev/zero c 1 5"
    " && mknod -m 666 /dev/random c 1 8 && mknod -m 666 /dev/urandom c 1 9"
    " && mkdir /dev/shm && mount -t tmpfs none /dev/shm && ln -s /proc/self/fd /dev/fd"
    ' && exec "$@"'
)
NO_KVM = ["unshare", "-m", "--propagation", "private", "sh", "-c", HIDE_DEV_KVM, "sh"]


def mode_of(path) -> tuple[int, int]:
    st = os.stat(path)
    return stat.S_IMODE(st.st_mode), st.st_gid


def test_boot_sector_layout():
    mod = load_module_source("kvm_probe")
    sector = mod.boot_sector()
    assert len(sector) == 512
    assert sector[-2:] == b"\x55\xaa"
    assert b"\xb0\x31\xe6\xf4" in sector  # mov al, 0x31; out 0xf4, al
    assert mod.EXIT_OK == 99


def test_real_probe_fixes_permissions_and_decides(tmp_path, kvm_node):
    """The full probe with the defaults: fixes the device, runs TCG and KVM, decides."""
    kvm_gid = __import__("grp").getgrnam("kvm").gr_gid
    res = run_module(tmp_path, "kvm_probe", {}, wrapper=private_kvm(kvm_node), timeout=120)
    assert not res.get("failed"), res.get("msg")
    print(
        f"\nkvm_probe: domain_type={res['domain_type']} seconds={res['seconds']} "
        f"probe={res['probe']} reason={res['reason']}"
    )

    # the permission fix is the change, and it is reported with a diff
    assert res["changed"] is True
    assert res["diff"]["before"]["mode"] == "0600" and res["diff"]["before"]["group"] == "root"
    assert res["kvm_device"] == {
        "path": "/dev/kvm",
        "exists": True,
        "owner": "root",
        "group": "kvm",
        "mode": "0660",
    }
    assert mode_of(kvm_node) == (0o660, kvm_gid)

    # QEMU works under TCG, and the probe decided
    assert res["probe"]["tcg"]["rc"] == 99
    assert res["domain_type"] in ("kvm", "qemu")
    assert res["reason"]
    if res["domain_type"] == "kvm":
        assert res["probe"]["kvm"]["rc"] == 99
    # the KVM run is stopped at its deadline, far below timeout: the whole probe stays short
    assert res["seconds"] < 20

    # On these machines /dev/kvm exists but the CPU shows no vmx/svm flag and KVM guests
    # crawl (ENVIRONMENT.md): the probe must say qemu there.
    if not cpu_has_virt_flag():
        assert res["domain_type"] == "qemu"
        assert res["probe"]["kvm"]["rc"] != 99


def test_check_mode_changes_nothing_but_still_answers(tmp_path, kvm_node):
    res = run_module(
        tmp_path, "kvm_probe", {"timeout": 10}, check=True, wrapper=private_kvm(kvm_node)
    )
    assert not res.get("failed"), res.get("msg")
    assert res["changed"] is True
    assert res["diff"]["after"]["mode"] == "0660"
    assert mode_of(kvm_node) == (0o600, 0)
    assert res["domain_type"] in ("kvm", "qemu")
    assert res["probe"]["tcg"]["rc"] == 99


def test_second_run_is_not_a_change(tmp_path, kvm_node):
    first = run_module(tmp_path, "kvm_probe", {"force": "qemu"}, wrapper=private_kvm(kvm_node))
    assert first["changed"] is True
    again = run_module(tmp_path, "kvm_probe", {"force": "qemu"}, wrapper=private_kvm(kvm_node))
    assert again["changed"] is False
    assert again["diff"]["before"] == again["diff"]["after"]


def test_more_open_mode_is_kept(tmp_path, kvm_node):
    """A node already 0666 (systemd's rule on some distros) only gets the kvm group."""
    os.chmod(kvm_node, 0o666)
    res = run_module(tmp_path, "kvm_probe", {"force": "qemu"}, wrapper=private_kvm(kvm_node))
    assert res["changed"] is True
    assert res["kvm_device"]["mode"] == "0666" and res["kvm_device"]["group"] == "kvm"


def test_fix_permissions_false(tmp_path, kvm_node):
    res = run_module(
        tmp_path,
        "kvm_probe",
        {"force": "qemu", "fix_permissions": False},
        wrapper=private_kvm(kvm_node),
    )
    assert res["changed"] is False
    assert mode_of(kvm_node) == (0o600, 0)


@pytest.mark.parametrize("force", ["kvm", "qemu"])
def test_force_skips_the_probe(tmp_path, kvm_node, force):
    res = run_module(tmp_path, "kvm_probe", {"force": force}, wrapper=private_kvm(kvm_node))
    assert not res.get("failed"), res.get("msg")
    assert res["domain_type"] == force
    assert res["probe"] == {}
    assert "forced" in res["reason"]
    assert res["seconds"] < 1


def test_without_dev_kvm(tmp_path):
    res = run_module(tmp_path, "kvm_probe", {}, wrapper=NO_KVM)
    assert not res.get("failed"), res.get("msg")
    assert res["changed"] is False
    assert res["domain_type"] == "qemu"
    assert res["kvm_device"] == {"path": "/dev/kvm", "exists": False}
    assert res["probe"]["tcg"]["rc"] == 99
    assert "kvm" not in res["probe"]

    res = run_module(tmp_path, "kvm_probe", {"force": "kvm"}, wrapper=NO_KVM)
    assert res["failed"] is True
    assert res["msg"] == "force=kvm but /dev/kvm does not exist: KVM cannot run here"


def test_broken_qemu_fails(tmp_path, kvm_node):
    """A QEMU that cannot run the guest even under TCG is an error, not a domain type."""
    fake = tmp_path / "qemu-broken"
    fake.write_text("#!/bin/sh\necho 'qemu: cannot start' >&2\nexit 1\n")
    fake.chmod(0o755)
    res = run_module(
        tmp_path,
        "kvm_probe",
        {"qemu_binary": str(fake), "fix_permissions": False},
        wrapper=private_kvm(kvm_node),
    )
    assert res["failed"] is True
    assert res["msg"] == (
        "QEMU is broken: the probe guest under TCG exited 1 instead of exiting 99 "
        "(qemu: cannot start)"
    )


def test_missing_qemu_fails(tmp_path, kvm_node):
    res = run_module(
        tmp_path,
        "kvm_probe",
        {"qemu_binary": "qemu-system-nonexistent", "fix_permissions": False},
        wrapper=private_kvm(kvm_node),
    )
    assert res["failed"] is True
    assert "qemu-system-nonexistent not found" in res["msg"]


def test_real_dev_kvm_untouched():
    """Runs last: the tests above must not have changed the machine's own /dev/kvm."""
    if not KVM_REAL:
        pytest.skip("no /dev/kvm")
    assert real_kvm_state() == REAL_BEFORE
