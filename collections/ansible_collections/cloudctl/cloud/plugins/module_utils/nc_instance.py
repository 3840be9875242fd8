# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One cloud instance as a libvirt domain on a Node Controller: its files, definition and
power state (the code of cloud_instance, also run per instance by node_instances)."""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET

from ansible.module_utils.basic import AnsibleModule
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


def quiet_libvirt() -> None:
    """libvirt prints every error to stderr by default; the modules report them themselves."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


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


ARGUMENT_SPEC = {
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
}
