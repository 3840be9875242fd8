#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Decide the libvirt domain type (kvm or qemu) by running a tiny real guest."""

from __future__ import annotations

DOCUMENTATION = r"""
module: kvm_probe
short_description: Decide the libvirt domain type by running a tiny real guest
description:
  - Answers "does KVM really run a guest here?" and returns the libvirt domain type to use,
    C(kvm) or C(qemu) (TCG, software emulation).
  - Without C(/dev/kvm) the answer is C(qemu); the TCG run still checks that QEMU works.
  - The presence of C(/dev/kvm) proves nothing. Under nested virtualization it can exist
    while guests run about a thousand times slower than under TCG, so that a guest kernel
    seems to hang while it decompresses.
  - The probe boots a 512-byte boot sector with C(qemu-system-x86_64), first with
    C(-accel tcg) and then with C(-accel kvm). The boot sector runs a loop of 16 million
    iterations, then writes 0x31 to an C(isa-debug-exit) device, which ends QEMU with exit
    code 99. The TCG run must succeed, otherwise QEMU itself is broken and the module fails.
    KVM counts as working when its run exits with 99 no later than
    C(3 + 5 x (TCG run time)) seconds (a working KVM runs it faster than TCG) and within
    I(timeout).
  - When C(/dev/kvm) exists the module first gives it the ownership and mode udev gives it on
    a normal host (group C(kvm), group read/write, so C(0600) becomes C(0660)). Without that,
    libvirtd running QEMU as C(libvirt-qemu) finds KVM "enabled when probing but not available
    now" and re-probes QEMU about 12 times at every domain start (48 s per start). Fixing the
    device is the only change the module makes and the only reason for C(changed=true).
  - The probe itself changes nothing and also runs in check mode, so the returned
    I(domain_type) is right in a check-mode run too.
options:
  force:
    description:
      - C(auto) runs the probe. C(kvm) or C(qemu) skip it (QEMU is not run at all) and return
        that domain type; C(kvm) still fails when C(/dev/kvm) does not exist. The device
        permissions are fixed in every case (the 48 s trap hits domain type C(qemu) too).
    type: str
    choices: [auto, kvm, qemu]
    default: auto
  fix_permissions:
    description: Give C(/dev/kvm) group I(kvm_group) and group read/write when it lacks them.
    type: bool
    default: true
  kvm_group:
    description: Group that must be able to open C(/dev/kvm) (the QEMU user's group).
    type: str
    default: kvm
  timeout:
    description: Upper limit in seconds of each QEMU run.
    type: int
    default: 20
  qemu_binary:
    description: QEMU system emulator used by the probe (name looked up in PATH, or a path).
    type: str
    default: qemu-system-x86_64
notes:
  - Needs root on the target host. Takes about 0.2 s where KVM works and about 3 to 4 s where
    it does not (the KVM run is stopped at its deadline).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports what would change and changes nothing.
  diff_mode:
    support: full
    details: Shows the device's owner, group and mode before and after.
  platform:
    platforms: posix
author:
  - cloudctl developers (@cloudctl)
"""

EXAMPLES = r"""
- name: Find the libvirt domain type this node can run
  cloudctl.cloud.kvm_probe:
  register: nc_kvm

- name: Use it
  ansible.builtin.set_fact:
    nc_domain_type: "{{ nc_kvm.domain_type }}"

- name: Skip the probe where the answer is known
  cloudctl.cloud.kvm_probe:
    force: qemu
"""

RETURN = r"""
domain_type:
  description: Libvirt domain type to use, C(kvm) or C(qemu).
  returned: always
  type: str
  sample: qemu
reason:
  description: One line on why this domain type was chosen.
  returned: always
  type: str
  sample: >-
    KVM did not finish the probe guest within 3.6 s (TCG took 0.12 s): /dev/kvm exists but
    does not run guests at a usable speed (nested virtualization?)
kvm_device:
  description: C(/dev/kvm) after the run (in check mode, as it would be).
  returned: always
  type: dict
  contains:
    path:
      description: Device path.
      type: str
    exists:
      description: Whether the device exists.
      type: bool
    owner:
      description: Owner name.
      type: str
    group:
      description: Group name.
      type: str
    mode:
      description: Permission bits in octal.
      type: str
  sample: {path: /dev/kvm, exists: true, owner: root, group: kvm, mode: "0660"}
cpu_virt_flag:
  description: Whether /proc/cpuinfo shows the vmx or svm flag (informative only).
  returned: always
  type: bool
probe:
  description: The QEMU runs (skipped ones are absent).
  returned: always
  type: dict
  contains:
    tcg:
      description: C(rc), C(seconds), C(timed_out), C(stderr) of the TCG run.
      type: dict
    kvm:
      description: C(rc), C(seconds), C(timed_out), C(deadline), C(stderr) of the KVM run.
      type: dict
  sample:
    tcg: {rc: 99, seconds: 0.12, timed_out: false, stderr: ""}
    kvm: {rc: null, seconds: 3.6, timed_out: true, deadline: 3.6, stderr: ""}
seconds:
  description: Wall time of the whole probe.
  returned: always
  type: float
"""

import grp
import os
import pwd
import stat
import struct
import subprocess
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule

KVM_DEVICE = "/dev/kvm"  # QEMU always opens this path
EXIT_OK = (0x31 << 1) | 1  # isa-debug-exit: QEMU exits with (value << 1) | 1
LOOPS = 1 << 24
KVM_SLACK = 3.0  # seconds granted to the KVM run on top of ...
KVM_FACTOR = 5.0  # ... this many times the TCG run time


def boot_sector(loops: int = LOOPS) -> bytes:
    """A real-mode boot sector: count ECX down from ``loops``, then out 0xf4, 0x31; hlt."""
    code = (
        b"\x66\xb9" + struct.pack("<I", loops)  # mov ecx, loops
        + b"\x66\x49"  # .loop: dec ecx
        + b"\x75\xfc"  # jnz .loop
        + b"\xb0\x31"  # mov al, 0x31
        + b"\xe6\xf4"  # out 0xf4, al  (isa-debug-exit: QEMU exits with 99)
        + b"\xf4"  # hlt
        + b"\xeb\xfe"  # jmp $
    )  # fmt: skip
    return code + bytes(510 - len(code)) + b"\x55\xaa"


def device_info(path: str, st: os.stat_result | None = None, uid=None, gid=None, mode=None):
    if st is None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return {"path": path, "exists": False}
    uid = st.st_uid if uid is None else uid
    gid = st.st_gid if gid is None else gid
    mode = stat.S_IMODE(st.st_mode) if mode is None else mode
    return {
        "path": path,
        "exists": True,
        "owner": _name(pwd.getpwuid, uid),
        "group": _name(grp.getgrgid, gid),
        "mode": f"{mode:04o}",
    }


def _name(lookup, ident: int) -> str:
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


def fix_device(module: AnsibleModule, path: str) -> tuple[bool, dict, dict]:
    """Give the device root ownership, group kvm_group, group rw. Returns changed, before, after."""
    st = os.stat(path)
    before = device_info(path, st)
    if not stat.S_ISCHR(st.st_mode):
        module.fail_json(msg=f"{path} exists but is not a character device")
    if not module.params["fix_permissions"]:
        return False, before, before
    group = module.params["kvm_group"]
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        module.warn(
            f"group {group} does not exist: {path} left as it is "
            "(QEMU run by libvirt may not open it)"
        )
        return False, before, before
    mode = stat.S_IMODE(st.st_mode)
    want_mode = mode | 0o660
    if st.st_uid == 0 and st.st_gid == gid and mode == want_mode:
        return False, before, before
    after = device_info(path, st, uid=0, gid=gid, mode=want_mode)
    if not module.check_mode:
        try:
            os.chown(path, 0, gid)
            os.chmod(path, want_mode)
        except OSError as exc:
            module.fail_json(
                msg=f"cannot give {path} group {group} and mode {want_mode:04o}: {exc}"
            )
        after = device_info(path)
    return True, before, after


def run_guest(qemu: str, image: str, accel: str, limit: float) -> dict:
    cmd = [
        qemu, "-accel", accel, "-machine", "pc", "-m", "16",
        "-display", "none", "-no-reboot", "-nodefaults",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-drive", f"file={image},format=raw,if=ide",
    ]  # fmt: skip
    start = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=limit, check=False
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr or b""
        return {
            "rc": None,
            "seconds": round(time.monotonic() - start, 2),
            "timed_out": True,
            "stderr": err.decode(errors="replace").strip(),
        }
    return {
        "rc": proc.returncode,
        "seconds": round(time.monotonic() - start, 2),
        "timed_out": False,
        "stderr": proc.stderr.decode(errors="replace").strip(),
    }


def cpu_virt_flag() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return "vmx" in flags or "svm" in flags
    except OSError:
        pass
    return False


def find_qemu(module: AnsibleModule) -> str:
    name = module.params["qemu_binary"]
    path = name if "/" in name else module.get_bin_path(name)
    if not path or not os.access(path, os.X_OK):
        module.fail_json(msg=f"{name} not found: install QEMU (Debian: qemu-system-x86)")
    return path


def probe(module: AnsibleModule, probe_result: dict, with_kvm: bool) -> tuple[str, str]:
    """Run the guest under TCG, then (with_kvm) under KVM. Returns (domain_type, reason).

    Fails the module when TCG cannot run the guest: QEMU itself is broken.
    """
    qemu = find_qemu(module)
    timeout = module.params["timeout"]
    with tempfile.TemporaryDirectory(prefix="kvm_probe-", dir=module.tmpdir) as tmp:
        image = os.path.join(tmp, "boot.img")
        with open(image, "wb") as f:
            f.write(boot_sector())

        tcg = run_guest(qemu, image, "tcg", timeout)
        probe_result["tcg"] = tcg
        if tcg["rc"] != EXIT_OK:
            how = (
                f"did not finish within {timeout} s" if tcg["timed_out"] else f"exited {tcg['rc']}"
            )
            last = f" ({tcg['stderr'].splitlines()[-1]})" if tcg["stderr"] else ""
            module.fail_json(
                msg=f"QEMU is broken: the probe guest under TCG {how} instead of exiting "
                f"{EXIT_OK}{last}",
                probe=probe_result,
            )
        if not with_kvm:
            return (
                "qemu",
                f"{KVM_DEVICE} does not exist (TCG ran the probe guest in {tcg['seconds']} s)",
            )

        deadline = round(min(float(timeout), KVM_SLACK + KVM_FACTOR * tcg["seconds"]), 2)
        kvm = run_guest(qemu, image, "kvm", deadline)
        kvm["deadline"] = deadline
        probe_result["kvm"] = kvm

    if kvm["rc"] == EXIT_OK:
        return "kvm", f"KVM ran the probe guest in {kvm['seconds']} s (TCG took {tcg['seconds']} s)"
    if kvm["timed_out"]:
        return "qemu", (
            f"KVM did not finish the probe guest within {deadline} s (TCG took "
            f"{tcg['seconds']} s): {KVM_DEVICE} exists but does not run guests at a usable "
            "speed (nested virtualization?)"
        )
    last = kvm["stderr"].splitlines()[-1] if kvm["stderr"] else "no message"
    return "qemu", f"QEMU with -accel kvm exited {kvm['rc']} instead of {EXIT_OK} ({last})"


def core(module: AnsibleModule) -> dict:
    started = time.monotonic()
    force = module.params["force"]
    if module.params["timeout"] <= 0:
        module.fail_json(msg="timeout: must be a positive number of seconds")
    result = {"changed": False, "probe": {}, "cpu_virt_flag": cpu_virt_flag()}

    exists = os.path.exists(KVM_DEVICE)
    if exists:
        changed, before, after = fix_device(module, KVM_DEVICE)
        result["changed"] = changed
        result["kvm_device"] = after
        if module._diff:
            result["diff"] = {"before": before, "after": after}
    else:
        result["kvm_device"] = device_info(KVM_DEVICE)
        if force == "kvm":
            module.fail_json(msg=f"force=kvm but {KVM_DEVICE} does not exist: KVM cannot run here")

    if force == "auto":
        result["domain_type"], result["reason"] = probe(module, result["probe"], with_kvm=exists)
    else:
        result["domain_type"] = force
        result["reason"] = f"forced by force={force} (probe skipped)"

    result["seconds"] = round(time.monotonic() - started, 2)
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "force": {"type": "str", "choices": ["auto", "kvm", "qemu"], "default": "auto"},
            "fix_permissions": {"type": "bool", "default": True},
            "kvm_group": {"type": "str", "default": "kvm"},
            "timeout": {"type": "int", "default": 20},
            "qemu_binary": {"type": "str", "default": "qemu-system-x86_64"},
        },
        supports_check_mode=True,
    )
    module.exit_json(**core(module))


if __name__ == "__main__":
    main()
