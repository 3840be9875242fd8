#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run, stop, reboot or remove one cloud instance as a persistent libvirt domain on an NC."""

from __future__ import annotations

DOCUMENTATION = r"""
module: cloud_instance
short_description: One cloud instance as a persistent libvirt domain on a Node Controller
description:
  - Manages the libvirt domain of one instance (named by its id, C(i-0a1b2c3d)) and its files
    in C(<instances_dir>/<name>/) (directory mode C(0750), group of I(node_config)'s
    C(instances_dir)).
  - C(disk.qcow2) is a qcow2 overlay on the cached image (C(qemu-img create -f qcow2 -F
    <image_format> -b <image>)), C(seed.iso) a NoCloud seed (ISO9660 labelled C(cidata),
    C(meta-data) with instance-id, local-hostname and public-keys, C(user-data)),
    C(console.log) the guest's serial console, C(instance.json) what the instance uses (the
    image cache never evicts the sha256s listed under C(images)), C(domain.xml) the
    definition, for reference.
  - The domain has the type of I(node_config)'s C(domain_type), machine C(pc), ACPI (needed
    for power-off and PCI hot-plug), the overlay as virtio disk C(vda), the seed as an IDE
    cdrom (C(/dev/sr0) in the guest), one virtio NIC on I(node_config)'s C(bridge) with the
    given MAC and the tap C(vn-<hex part of the id>) (security-group rules match it), the
    serial console appended to C(console.log), no graphics. With I(kernel) it boots that
    kernel directly (I(ramdisk), I(cmdline)); otherwise it boots from the disk.
  - C(running) defines the domain (making its files) when it is missing and starts it when it
    is not running. An existing domain is not reconfigured. C(stopped) asks the guest to
    power off (ACPI) and destroys the domain after I(shutdown_timeout) seconds. C(rebooted)
    resets a running domain (a hard reset) or starts a stopped one; it always changes.
    C(absent) destroys and undefines the domain and removes its directory; an unknown
    instance is C(ok).
  - When making a new instance fails half-way, everything this run made (files, directory,
    domain definition) is removed again and the message names the failing step and the
    libvirt (or tool) error.
  - Check mode reports what would change and changes nothing; diff mode shows the domain state
    and files before and after (and the new domain's XML). I(user_data) is never shown.
requirements:
  - libvirt Python bindings (Debian C(python3-libvirt)), C(qemu-img), C(genisoimage)
options:
  name:
    description: Instance id (C(i-) and 1 to 12 hex digits); also the domain name.
    type: str
    required: true
  state:
    description: Wanted state of the instance.
    type: str
    choices: [running, stopped, absent, rebooted]
    default: running
  node_config:
    description: The node facts written by the nc role (C(domain_type), C(bridge), C(instances_dir)).
    type: path
    default: /etc/cloud/nc/node.json
  uri:
    description: libvirt connection URI.
    type: str
    default: qemu:///system
  vcpus:
    description: Virtual CPUs. Needed to create the domain.
    type: int
  memory_mb:
    description: Memory in MiB. Needed to create the domain.
    type: int
  mac:
    description: MAC address of the instance's NIC (its DHCP reservation). Needed to create the domain.
    type: str
  hostname:
    description: Host name given to the guest through the seed (default I(name)).
    type: str
  image:
    description:
      - Path of the cached disk image the root overlay is made on. Needed to create the domain
        unless I(kernel) is given (then the instance has no root disk of its own).
    type: path
  image_format:
    description: Format of I(image).
    type: str
    choices: [qcow2, raw]
    default: raw
  image_sha256:
    description:
      - sha256 of I(image), recorded in C(instance.json) so that the cache keeps it. Defaults
        to the file name of I(image) when that is a sha256 (files in the cache are so named).
    type: str
  disk_gb:
    description: Virtual size in GiB of the root overlay; an overlay is never smaller than the image.
    type: int
  kernel:
    description: Path of a cached kernel; the domain boots it directly.
    type: path
  kernel_sha256:
    description: sha256 of I(kernel) (default its file name when that is a sha256).
    type: str
  ramdisk:
    description: Path of a cached initrd (with I(kernel) only).
    type: path
  ramdisk_sha256:
    description: sha256 of I(ramdisk) (default its file name when that is a sha256).
    type: str
  cmdline:
    description: Kernel command line (with I(kernel) only).
    type: str
    default: console=ttyS0
  public_keys:
    description: SSH public keys for the seed's C(public-keys).
    type: list
    elements: str
    default: []
  user_data:
    description:
      - User data for the seed (a C(#!) script or C(#cloud-config)). It may carry secrets, so
        it is no_log, never shown in results, invocations or diffs.
    type: str
  shutdown_timeout:
    description: Seconds C(stopped) waits for the guest to power off before destroying it.
    type: int
    default: 30
notes:
  - Runs as root on the Node Controller.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports what would change and changes nothing.
  diff_mode:
    support: full
    details: Shows the domain's state before and after.
  platform:
    platforms: posix
author:
  - cloudctl developers (@cloudctl)
"""

EXAMPLES = r"""
- name: Run an instance from a cached disk image
  cloudctl.cloud.cloud_instance:
    name: i-0a1b2c3d
    vcpus: 1
    memory_mb: 256
    mac: "d0:0d:0a:1b:2c:3d"
    hostname: web1
    image: "/var/lib/cloud/nc/cache/{{ image_sha256 }}"
    image_format: qcow2
    disk_gb: 10
    public_keys: ["{{ keypair.public_key }}"]
    user_data: "{{ user_data | default(omit) }}"

- name: Run an instance of a kernel + ramdisk image
  cloudctl.cloud.cloud_instance:
    name: i-0a1b2c3e
    vcpus: 1
    memory_mb: 256
    mac: "d0:0d:0a:1b:2c:3e"
    kernel: "/var/lib/cloud/nc/cache/{{ kernel_sha256 }}"
    ramdisk: "/var/lib/cloud/nc/cache/{{ ramdisk_sha256 }}"
    cmdline: console=ttyS0 quiet

- name: Stop it (ACPI power-off, destroyed after 10 s)
  cloudctl.cloud.cloud_instance:
    name: i-0a1b2c3d
    state: stopped
    shutdown_timeout: 10

- name: Terminate it
  cloudctl.cloud.cloud_instance:
    name: i-0a1b2c3d
    state: absent
"""

RETURN = r"""
state:
  description: Domain state after the run (C(running), C(stopped), C(paused), C(absent)); predicted in check mode.
  returned: always
  type: str
domain_type:
  description: libvirt domain type (C(kvm) or C(qemu)).
  returned: when the domain exists
  type: str
console_log:
  description: File receiving the guest's serial console.
  returned: always
  type: str
tap:
  description: Host name of the instance's tap interface (C(vn-<hex>)).
  returned: always
  type: str
  sample: vn-0a1b2c3d
mac:
  description: MAC address of the instance's NIC.
  returned: when the domain exists
  type: str
forced:
  description: C(stopped) had to destroy the domain because the guest did not power off in time.
  returned: when state=stopped
  type: bool
files:
  description: The instance's files.
  returned: always
  type: dict
  contains:
    dir:
      description: Instance directory.
      type: str
      returned: always
    disk:
      description: Root overlay (null without an image).
      type: str
      returned: always
    seed:
      description: NoCloud seed ISO.
      type: str
      returned: always
    console_log:
      description: Serial console file.
      type: str
      returned: always
    instance_json:
      description: What the instance uses (images, MAC address...).
      type: str
      returned: always
    domain_xml:
      description: Domain definition (reference copy).
      type: str
      returned: always
"""

import datetime
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.cloudctl.cloud.plugins.module_utils.cloud_role_config import (
    RoleConfigError,
    read_role_config,
)

try:
    import libvirt

    HAS_LIBVIRT = True
except ImportError:
    HAS_LIBVIRT = False

NAME = re.compile(r"^i-([0-9a-f]{1,12})$")  # "vn-" + 12 hex = 15 chars, the ifname limit
MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
GIB = 1 << 30


class StepFailed(Exception):
    def __init__(self, step: str, error: object) -> None:
        super().__init__(f"{step} failed: {error}")


def libvirt_state(dom) -> str:
    if dom is None:
        return "absent"
    code = dom.state()[0]
    if code in (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PMSUSPENDED):
        return "paused"
    if code in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED, libvirt.VIR_DOMAIN_NOSTATE):
        return "stopped"
    return "running"  # running, blocked, shutting down


def default_sha(path: str | None, sha: str | None) -> str | None:
    if sha:
        return sha.lower()
    if path and SHA256.match(os.path.basename(path)):
        return os.path.basename(path)
    return None


def run_tool(step: str, cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise StepFailed(step, exc) from None
    if proc.returncode != 0:
        raise StepFailed(step, (proc.stderr or proc.stdout).strip() or f"rc {proc.returncode}")
    return proc.stdout


def domain_xml(p: dict, cfg: dict, files: dict, tap: str) -> str:
    """The libvirt definition of a new instance."""
    dom = ET.Element("domain", type=cfg["domain_type"])
    ET.SubElement(dom, "name").text = p["name"]
    ET.SubElement(dom, "memory", unit="MiB").text = str(p["memory_mb"])
    ET.SubElement(dom, "vcpu").text = str(p["vcpus"])
    os_el = ET.SubElement(dom, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    if p["kernel"]:
        ET.SubElement(os_el, "kernel").text = p["kernel"]
        if p["ramdisk"]:
            ET.SubElement(os_el, "initrd").text = p["ramdisk"]
        ET.SubElement(os_el, "cmdline").text = p["cmdline"]
    else:
        ET.SubElement(os_el, "boot", dev="hd")
    ET.SubElement(ET.SubElement(dom, "features"), "acpi")
    ET.SubElement(dom, "clock", offset="utc")
    for event, action in (
        ("on_poweroff", "destroy"),
        ("on_reboot", "restart"),
        ("on_crash", "destroy"),
    ):
        ET.SubElement(dom, event).text = action
    dev = ET.SubElement(dom, "devices")
    if files["disk"]:
        disk = ET.SubElement(dev, "disk", type="file", device="disk")
        ET.SubElement(disk, "driver", name="qemu", type="qcow2")
        ET.SubElement(disk, "source", file=files["disk"])
        ET.SubElement(disk, "target", dev="vda", bus="virtio")
    cd = ET.SubElement(dev, "disk", type="file", device="cdrom")
    ET.SubElement(cd, "driver", name="qemu", type="raw")
    ET.SubElement(cd, "source", file=files["seed"])
    ET.SubElement(cd, "target", dev="hdc", bus="ide")
    ET.SubElement(cd, "readonly")
    nic = ET.SubElement(dev, "interface", type="bridge")
    ET.SubElement(nic, "mac", address=p["mac"])
    ET.SubElement(nic, "source", bridge=cfg["bridge"])
    ET.SubElement(nic, "target", dev=tap)
    ET.SubElement(nic, "model", type="virtio")
    serial = ET.SubElement(dev, "serial", type="file")
    ET.SubElement(serial, "source", path=files["console_log"], append="on")
    ET.SubElement(serial, "target", port="0")
    ET.SubElement(dev, "memballoon", model="none")
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode") + "\n"


def seed_meta_data(p: dict) -> str:
    lines = [f"instance-id: {p['name']}", f"local-hostname: {p['hostname'] or p['name']}"]
    if p["public_keys"]:
        lines.append("public-keys:")
        lines += [f"  - {json.dumps(k.strip())}" for k in p["public_keys"]]  # JSON is YAML
    return "\n".join(lines) + "\n"


class Instance:
    def __init__(self, module: AnsibleModule, cfg: dict) -> None:
        self.module = module
        self.p = module.params
        self.cfg = cfg
        name = self.p["name"]
        self.tap = "vn-" + NAME.match(name).group(1)
        d = os.path.join(cfg["instances_dir"], name)
        with_disk = bool(self.p["image"])
        self.files = {
            "dir": d,
            "disk": os.path.join(d, "disk.qcow2") if with_disk else None,
            "seed": os.path.join(d, "seed.iso"),
            "console_log": os.path.join(d, "console.log"),
            "instance_json": os.path.join(d, "instance.json"),
            "domain_xml": os.path.join(d, "domain.xml"),
        }
        try:
            self.conn = libvirt.open(self.p["uri"])
        except libvirt.libvirtError as exc:
            module.fail_json(msg=f"cannot connect to libvirt at {self.p['uri']}: {exc}")
        self.created: list[str] = []  # paths made by this run (removed again on failure)

    def lookup(self):
        try:
            return self.conn.lookupByName(self.p["name"])
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            self.module.fail_json(msg=f"looking up domain {self.p['name']} failed: {exc}")

    def existing_files(self) -> list[str]:
        d = self.files["dir"]
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def described(self, dom) -> dict:
        """domain_type and mac from the domain's definition."""
        root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        mac = root.find("./devices/interface/mac")
        return {
            "domain_type": root.get("type"),
            "mac": mac.get("address") if mac is not None else None,
        }

    # -- creating a new instance -----------------------------------------------------------
    def check_create_params(self) -> None:
        p = self.p
        missing = [k for k in ("vcpus", "memory_mb", "mac") if not p[k]]
        if not p["image"] and not p["kernel"]:
            missing.append("image or kernel")
        if missing:
            self.module.fail_json(
                msg=f"instance {p['name']} is not defined on this node; to create it give {', '.join(missing)}"
            )
        if p["vcpus"] < 1 or p["memory_mb"] < 16:
            self.module.fail_json(msg="vcpus must be >= 1 and memory_mb >= 16")
        p["mac"] = p["mac"].lower()
        if not MAC.match(p["mac"]):
            self.module.fail_json(msg=f"mac: {p['mac']!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
        if p["hostname"] and not HOSTNAME.match(p["hostname"]):
            self.module.fail_json(msg=f"hostname: {p['hostname']!r} is not a valid host name")
        if p["ramdisk"] and not p["kernel"]:
            self.module.fail_json(msg="ramdisk needs kernel")
        # In check mode the image cache has not downloaded them yet: it only said it would.
        for key in ("image", "kernel", "ramdisk"):
            if p[key] and not self.module.check_mode and not os.path.isfile(p[key]):
                self.module.fail_json(
                    msg=f"{key}: {p[key]} does not exist (is it in the image cache?)"
                )
        for key in ("image_sha256", "kernel_sha256", "ramdisk_sha256"):
            if p[key] and not SHA256.match(p[key].lower()):
                self.module.fail_json(msg=f"{key}: {p[key]!r} is not 64 hex digits")
        for key in ("domain_type", "bridge"):
            if not self.cfg.get(key):
                self.module.fail_json(msg=f"node_config: {self.p['node_config']} lacks {key}")

    def images(self) -> list[str]:
        p = self.p
        shas = [
            default_sha(p["image"], p["image_sha256"]),
            default_sha(p["kernel"], p["kernel_sha256"]),
            default_sha(p["ramdisk"], p["ramdisk_sha256"]),
        ]
        return [s for s in shas if s]

    def write_file(self, path: str, content: str, mode: int = 0o640) -> None:
        if not os.path.exists(path):
            self.created.append(path)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.chown(tmp, 0, self.gid)
        os.replace(tmp, path)

    def create(self, xml: str) -> None:
        """Make the files, define and start the domain; undo all of it on failure."""
        p, files = self.p, self.files
        self.gid = os.stat(self.cfg["instances_dir"]).st_gid
        dir_created = False
        defined = None
        step = "instance directory"
        try:
            if not os.path.isdir(files["dir"]):
                os.mkdir(files["dir"], 0o750)
                dir_created = True
            os.chown(files["dir"], 0, self.gid)
            os.chmod(files["dir"], 0o750)

            # Recorded first: from now on the image cache keeps the images.
            step = "writing instance.json"
            meta = {
                "name": p["name"],
                "images": self.images(),
                "mac": p["mac"],
                "hostname": p["hostname"] or p["name"],
                "vcpus": p["vcpus"],
                "memory_mb": p["memory_mb"],
                "image": p["image"],
                "image_format": p["image_format"],
                "kernel": p["kernel"],
                "ramdisk": p["ramdisk"],
                "disk_gb": p["disk_gb"],
                "tap": self.tap,
                "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            }
            self.write_file(files["instance_json"], json.dumps(meta, indent=2) + "\n")

            if files["disk"] and not os.path.exists(files["disk"]):  # never clobber a guest's disk
                step = "creating the root overlay (qemu-img)"
                self.make_overlay()
            step = "building the seed ISO (genisoimage)"
            self.make_seed()
            step = "writing domain.xml"
            self.write_file(files["domain_xml"], xml, 0o644)
            step = "defining the domain (libvirt)"
            defined = self.conn.defineXML(xml)
            step = "starting the domain (libvirt)"
            defined.create()
        except (libvirt.libvirtError, OSError, StepFailed) as exc:
            error = str(exc).removeprefix(f"{step} failed: ")
            self.undo(defined, dir_created)
            self.module.fail_json(msg=f"instance {p['name']}: {step} failed: {error}")

    def make_overlay(self) -> None:
        p, disk = self.p, self.files["disk"]
        step = "creating the root overlay (qemu-img)"
        info = json.loads(
            run_tool(
                step, ["qemu-img", "info", "--output=json", "-f", p["image_format"], p["image"]]
            )
        )
        size = int(info["virtual-size"])
        if p["disk_gb"]:
            size = max(size, p["disk_gb"] * GIB)
        self.created.append(disk)
        run_tool(
            step,
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", p["image_format"], "-b", p["image"]]
            + [disk, str(size)],
        )
        os.chown(disk, 0, self.gid)
        os.chmod(disk, 0o660)

    def make_seed(self) -> None:
        p, seed = self.p, self.files["seed"]
        with tempfile.TemporaryDirectory(dir=self.files["dir"], prefix=".seed-") as tmp:
            meta = os.path.join(tmp, "meta-data")
            user = os.path.join(tmp, "user-data")
            with open(meta, "w", encoding="utf-8") as f:
                f.write(seed_meta_data(p))
            with open(user, "w", encoding="utf-8") as f:
                f.write(p["user_data"] or "")
            out = os.path.join(tmp, "seed.iso")
            run_tool(
                "building the seed ISO (genisoimage)",
                ["genisoimage", "-quiet", "-o", out, "-V", "cidata", "-J", "-r", meta, user],
            )
            os.chown(out, 0, self.gid)
            os.chmod(out, 0o640)
            if not os.path.exists(seed):
                self.created.append(seed)
            os.replace(out, seed)

    def undo(self, dom, dir_created: bool) -> None:
        """Remove what create() made; errors here must not hide the original one."""
        if dom is not None:
            try:
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
            except libvirt.libvirtError as exc:
                self.module.warn(f"cleanup: could not remove domain {self.p['name']}: {exc}")
        if dir_created:
            shutil.rmtree(self.files["dir"], ignore_errors=True)
            return
        for path in reversed(self.created):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    # -- power -----------------------------------------------------------------------------
    def stop(self, dom) -> bool:
        """ACPI power-off, then destroy after shutdown_timeout. Returns True when forced."""
        try:
            dom.shutdown()
        except libvirt.libvirtError as exc:
            if dom.isActive():
                self.module.warn(f"ACPI shutdown request failed: {exc}")
        deadline = time.monotonic() + self.p["shutdown_timeout"]
        while time.monotonic() < deadline:
            if not dom.isActive():
                return False
            time.sleep(0.5)
        if not dom.isActive():
            return False
        try:
            dom.destroy()
        except libvirt.libvirtError as exc:
            if dom.isActive():
                self.module.fail_json(
                    msg=f"instance {self.p['name']}: destroying the domain failed: {exc}"
                )
        return True


def load_node_config(module: AnsibleModule) -> dict:
    try:
        return read_role_config(module.params["node_config"], "nc", ("instances_dir",))
    except RoleConfigError as exc:
        module.fail_json(msg=f"node_config: {exc}")


def core(module: AnsibleModule) -> dict:
    p = module.params
    if not NAME.match(p["name"]):
        module.fail_json(
            msg=f"name: {p['name']!r} is not an instance id (i- and 1 to 12 hex digits)"
        )
    cfg = load_node_config(module)
    inst = Instance(module, cfg)
    dom = inst.lookup()
    before = {"state": libvirt_state(dom), "files": inst.existing_files()}
    after_state = before["state"]
    new_xml = None
    changed = False
    forced = None
    state = p["state"]
    check = module.check_mode

    def act(step: str, fn) -> None:
        if not check:
            try:
                fn()
            except libvirt.libvirtError as exc:
                module.fail_json(msg=f"instance {p['name']}: {step} failed: {exc}")

    if state == "running":
        if dom is None:
            inst.check_create_params()
            new_xml = domain_xml(p, cfg, inst.files, inst.tap)
            if not check:
                inst.create(new_xml)
            changed, after_state = True, "running"
        elif before["state"] == "stopped":
            act("starting the domain (libvirt)", dom.create)
            changed, after_state = True, "running"
        elif before["state"] == "paused":
            act("resuming the domain (libvirt)", dom.resume)
            changed, after_state = True, "running"
    elif state in ("stopped", "rebooted"):
        if dom is None:
            module.fail_json(msg=f"instance {p['name']} is not defined on this node")
        if state == "stopped":
            forced = False
            if before["state"] != "stopped":
                if not check:
                    forced = inst.stop(dom)
                changed, after_state = True, "stopped"
        else:
            if before["state"] == "stopped":
                act("starting the domain (libvirt)", dom.create)
            elif before["state"] == "paused":
                act("resetting the domain (libvirt)", lambda: (dom.reset(0), dom.resume()))
            else:
                act("resetting the domain (libvirt)", lambda: dom.reset(0))
            changed, after_state = True, "running"
    else:  # absent
        if dom is not None:
            if dom.isActive():
                act("destroying the domain (libvirt)", dom.destroy)
            act(
                "undefining the domain (libvirt)",
                lambda: dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE),
            )
            changed = True
        if before["files"] or os.path.isdir(inst.files["dir"]):
            if not check:
                shutil.rmtree(inst.files["dir"])
            changed = True
        after_state = "absent"

    res = {
        "changed": changed,
        "state": after_state,
        "console_log": inst.files["console_log"],
        "tap": inst.tap,
        "files": inst.files,
    }
    if forced is not None:
        res["forced"] = forced
    if state != "absent":
        if check or dom is None:
            res.update(domain_type=cfg.get("domain_type"), mac=p["mac"])
        else:
            res.update(inst.described(dom))
        if dom is not None and not check:
            res["state"] = libvirt_state(dom)
        elif dom is None and not check:
            res["state"] = libvirt_state(inst.lookup())
    if module._diff:
        after = {"state": res["state"]}
        if not check:
            after["files"] = inst.existing_files()
        elif after_state == "absent":
            after["files"] = []
        elif new_xml:
            after["files"] = sorted(set(before["files"]) | planned_files(inst))
        else:
            after["files"] = before["files"]
        if new_xml:
            after["domain_xml"] = new_xml
        res["diff"] = {"before": before, "after": after}
    return res


def planned_files(inst: Instance) -> set[str]:
    names = {"seed.iso", "instance.json", "domain.xml", "console.log"}
    if inst.files["disk"]:
        names.add("disk.qcow2")
    return names


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "state": {
                "type": "str",
                "choices": ["running", "stopped", "absent", "rebooted"],
                "default": "running",
            },
            "node_config": {"type": "path", "default": "/etc/cloud/nc/node.json"},
            "uri": {"type": "str", "default": "qemu:///system"},
            "vcpus": {"type": "int"},
            "memory_mb": {"type": "int"},
            "mac": {"type": "str"},
            "hostname": {"type": "str"},
            "image": {"type": "path"},
            "image_format": {"type": "str", "choices": ["qcow2", "raw"], "default": "raw"},
            "image_sha256": {"type": "str"},
            "disk_gb": {"type": "int"},
            "kernel": {"type": "path"},
            "kernel_sha256": {"type": "str"},
            "ramdisk": {"type": "path"},
            "ramdisk_sha256": {"type": "str"},
            "cmdline": {"type": "str", "default": "console=ttyS0"},
            "public_keys": {"type": "list", "elements": "str", "default": [], "no_log": False},
            "user_data": {"type": "str", "no_log": True},
            "shutdown_timeout": {"type": "int", "default": 30},
        },
        supports_check_mode=True,
    )
    if not HAS_LIBVIRT:
        module.fail_json(msg=missing_required_lib("libvirt-python (Debian python3-libvirt)"))
    # libvirt prints every error to stderr by default; the module reports them itself.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    module.exit_json(**core(module))


if __name__ == "__main__":
    main()
