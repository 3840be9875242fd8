#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Attach or detach an iSCSI volume to a libvirt domain (hot-plug, with CHAP)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: instance_volume
short_description: Hot-plug an iSCSI volume of the Storage Controller into an instance
description:
  - Attaches a volume exported by the Storage Controller (a tgt iSCSI target, CHAP per volume)
    to an instance's libvirt domain as a network disk that QEMU's own iSCSI initiator opens
    (C(<disk type='network'><source protocol='iscsi'>)); no initiator on the host is needed.
  - >-
    The volume id is the disk's C(<serial>): that is how the module finds the volume in the
    domain, and how the guest names it, C(/dev/disk/by-id/virtio-<volume id>). The target
    device (C(vdb)...) is only a hint; the guest numbers its disks in probe order.
  - A running domain gets the disk live and in its persistent definition (so it survives a
    stop/start); a shut-off domain only in its definition. A transient domain only live.
  - CHAP credentials live in a libvirt secret (usage type C(iscsi), usage id the volume id,
    private, persistent) that the disk refers to; detaching removes it, unless another domain
    of the node still has the volume (a second attachment being unplugged).
  - Detaching asks the guest to release the device and waits until it is gone from the live
    domain, up to I(timeout) seconds.
  - Check mode reports what would change; diff mode shows the disk's XML before and after.
requirements:
  - libvirt Python bindings (Debian C(python3-libvirt)) on the Node Controller
  - QEMU with the iSCSI block driver (Debian C(qemu-block-extra))
options:
  instance:
    description: Domain name (the instance id, e.g. C(i-0a1b2c3d)).
    type: str
    required: true
  volume:
    description: Volume id (e.g. C(vol-0a1b2c3d)); the disk's serial.
    type: str
    required: true
  state:
    description: Whether the volume must be attached to the instance.
    type: str
    choices: [attached, detached]
    default: attached
  uri:
    description: libvirt connection URI.
    type: str
    default: qemu:///system
  portal_address:
    description: Address of the iSCSI portal (the SC's tgtd). Required to attach.
    type: str
  portal_port:
    description: TCP port of the iSCSI portal.
    type: int
    default: 3260
  iqn:
    description: IQN of the volume's target. Required to attach.
    type: str
  lun:
    description: LUN of the volume in its target.
    type: int
    default: 1
  chap_user:
    description: CHAP user name of the volume. Without it (and I(chap_secret)) no CHAP is used.
    type: str
  chap_secret:
    description: CHAP secret of the volume.
    type: str
  device:
    description:
      - Target device hint (C(vdb) .. C(vdz)). When empty or taken by another disk, the first
        C(vdX) not used by the domain, from C(vdb), is chosen.
    type: str
  timeout:
    description: Seconds to wait for the guest to release a detached volume.
    type: int
    default: 30
notes:
  - An already attached volume is left as it is (its CHAP secret is not re-set).
  - Detaching from a domain that does not exist succeeds without change (the instance is gone);
    attaching to one fails.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports what would change and changes nothing.
  diff_mode:
    support: full
    details: Shows the disk's XML before and after.
  platform:
    platforms: posix
author:
  - cloudctl developers (@cloudctl)
"""

EXAMPLES = r"""
- name: Attach vol-0a1b2c3d to i-0a1b2c3d
  cloudctl.cloud.instance_volume:
    instance: i-0a1b2c3d
    volume: vol-0a1b2c3d
    portal_address: 10.0.0.5
    iqn: iqn.2026-01.cloud.sc:vol-0a1b2c3d
    chap_user: vol-0a1b2c3d
    chap_secret: "{{ volume_chap_secret }}"
    device: vdc

- name: Detach it (waits for the guest to release it)
  cloudctl.cloud.instance_volume:
    instance: i-0a1b2c3d
    volume: vol-0a1b2c3d
    state: detached
    timeout: 60
"""

RETURN = r"""
device:
  description: Target device of the disk in the domain XML (a hint for the guest); null when detached.
  type: str
  returned: always
  sample: vdb
serial:
  description: The disk's serial (the volume id); the guest shows C(/dev/disk/by-id/virtio-<serial>).
  type: str
  returned: always
  sample: vol-0a1b2c3d
attached:
  description: Whether the volume is attached after the task (predicted in check mode).
  type: bool
  returned: always
"""

import re
import time
import xml.etree.ElementTree as ET
from xml.sax.saxutils import quoteattr

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import libvirt

    HAS_LIBVIRT = True
except ImportError:
    HAS_LIBVIRT = False

DEVICE = re.compile(r"^vd[b-z]$")
SECRET_USAGE_ISCSI = 3  # libvirt.VIR_SECRET_USAGE_TYPE_ISCSI


def disk_xml(p: dict, dev: str) -> str:
    """The <disk> of the volume (CHAP through the secret whose usage id is the volume id)."""
    auth = ""
    if p["chap_user"]:
        auth = (
            f"<auth username={quoteattr(p['chap_user'])}>"
            f"<secret type='iscsi' usage={quoteattr(p['volume'])}/></auth>"
        )
    name = f"{p['iqn']}/{p['lun']}"
    return (
        "<disk type='network' device='disk'>"
        "<driver name='qemu' type='raw' cache='none'/>"
        f"<source protocol='iscsi' name={quoteattr(name)}>"
        f"<host name={quoteattr(p['portal_address'])} port='{p['portal_port']}'/>{auth}"
        "</source>"
        f"<target dev={quoteattr(dev)} bus='virtio'/>"
        f"<serial>{p['volume']}</serial>"
        "</disk>"
    )


def secret_xml(volume: str) -> str:
    return (
        "<secret ephemeral='no' private='yes'>"
        f"<description>CHAP of volume {volume}</description>"
        f"<usage type='iscsi'><target>{volume}</target></usage>"
        "</secret>"
    )


def find_disk(domain_xml: str | None, serial: str) -> ET.Element | None:
    if not domain_xml:
        return None
    for disk in ET.fromstring(domain_xml).findall("./devices/disk"):
        if (disk.findtext("serial") or "").strip() == serial:
            return disk
    return None


def target_devs(*domain_xmls: str | None) -> set[str]:
    devs = set()
    for text in domain_xmls:
        if text:
            for target in ET.fromstring(text).findall("./devices/disk/target"):
                devs.add(target.get("dev", ""))
    return devs


def pick_device(hint: str | None, used: set[str]) -> str | None:
    """The hint when it is free, otherwise the first free vdb..vdz (None when all are taken)."""
    if hint and hint not in used:
        return hint
    return next((f"vd{c}" for c in "bcdefghijklmnopqrstuvwxyz" if f"vd{c}" not in used), None)


def to_text(disk: ET.Element | None) -> str:
    if disk is None:
        return ""
    disk.tail = None
    return ET.tostring(disk, encoding="unicode")


class Node:
    """The libvirt connection, with libvirt errors turned into one-line failures."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.p = module.params
        try:
            self.conn = libvirt.open(self.p["uri"])
        except libvirt.libvirtError as exc:
            module.fail_json(msg=f"cannot connect to libvirt at {self.p['uri']}: {exc}")

    def fail(self, action: str, exc: Exception) -> None:
        self.module.fail_json(
            msg=f"{action} volume {self.p['volume']} of instance {self.p['instance']} failed: {exc}"
        )

    def domain(self):
        try:
            return self.conn.lookupByName(self.p["instance"])
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            self.fail("looking up the instance of", exc)

    def xmls(self, dom) -> tuple[str | None, str | None]:
        """(live XML or None when not running, persistent XML or None when transient)."""
        live = dom.XMLDesc(0) if dom.isActive() else None
        config = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) if dom.isPersistent() else None
        return live, config

    def secret(self):
        try:
            return self.conn.secretLookupByUsage(SECRET_USAGE_ISCSI, self.p["volume"])
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_SECRET:
                return None
            self.fail("looking up the CHAP secret of", exc)

    def set_secret(self) -> None:
        """Define the secret (unless it exists) and set its value."""
        secret = self.secret() or self.conn.secretDefineXML(secret_xml(self.p["volume"]))
        secret.setValue(self.p["chap_secret"].encode())

    def remove_secret(self) -> None:
        secret = self.secret()
        if secret is not None:
            secret.undefine()

    def used_elsewhere(self) -> bool:
        """Whether a domain other than the instance has a disk of the volume."""
        others = [d for d in self.conn.listAllDomains() if d.name() != self.p["instance"]]
        return any(find_disk(x, self.p["volume"]) is not None for d in others for x in self.xmls(d))


def attach(module: AnsibleModule, node: Node) -> dict:
    p = module.params
    dom = node.domain()
    if dom is None:
        module.fail_json(
            msg=f"cannot attach volume {p['volume']}: instance {p['instance']} does not exist "
            f"on {p['uri']}"
        )
    live, config = node.xmls(dom)
    live_disk, config_disk = find_disk(live, p["volume"]), find_disk(config, p["volume"])
    flags = 0
    if live is not None and live_disk is None:
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    if config is not None and config_disk is None:
        flags |= libvirt.VIR_DOMAIN_AFFECT_CONFIG
    existing = live_disk if live_disk is not None else config_disk
    if existing is not None:
        dev = existing.find("target").get("dev")
    else:
        dev = pick_device(p["device"], target_devs(live, config))
        if dev is None:
            module.fail_json(msg=f"instance {p['instance']} has no free device name (vdb..vdz)")
        if p["device"] and dev != p["device"]:
            module.warn(f"device {p['device']} is taken in {p['instance']}; using {dev}")
    res = {"changed": flags != 0, "device": dev, "serial": p["volume"], "attached": True}
    if module._diff:
        after = to_text(existing) if flags == 0 else disk_xml(p, dev)
        res["diff"] = {
            "before": to_text(existing) if flags == 0 else "",
            "after": after,
            "before_header": f"{p['instance']}: {p['volume']}",
            "after_header": f"{p['instance']}: {p['volume']}",
        }
    if flags == 0 or module.check_mode:
        return res

    defined_secret = False
    try:
        if p["chap_user"]:
            defined_secret = node.secret() is None
            node.set_secret()
        dom.attachDeviceFlags(disk_xml(p, dev), flags)
    except libvirt.libvirtError as exc:
        # libvirt saves the definition only when the live attach worked: nothing is attached.
        # Take away the secret this run defined, so a failure leaves nothing behind.
        if defined_secret:
            try:
                node.remove_secret()
            except libvirt.libvirtError:
                pass
        hint = ""
        if p["chap_user"] and re.search(r"login|auth|chap", str(exc), re.IGNORECASE):
            hint = " (wrong CHAP user or secret?)"
        module.fail_json(
            msg=f"attaching volume {p['volume']} ({p['iqn']}/{p['lun']} at "
            f"{p['portal_address']}:{p['portal_port']}) to instance {p['instance']} failed"
            f"{hint}: {exc}"
        )
    return res


def detach(module: AnsibleModule, node: Node) -> dict:
    p = module.params
    dom = node.domain()
    live, config = node.xmls(dom) if dom is not None else (None, None)
    live_disk, config_disk = find_disk(live, p["volume"]), find_disk(config, p["volume"])
    existing = live_disk if live_disk is not None else config_disk
    secret = node.secret()
    if secret is not None and node.used_elsewhere():
        secret = None  # the other domain's disk still needs it
    flags = 0
    if live_disk is not None:
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    if config_disk is not None:
        flags |= libvirt.VIR_DOMAIN_AFFECT_CONFIG
    res = {
        "changed": flags != 0 or secret is not None,
        "device": None,
        "serial": p["volume"],
        "attached": False,
    }
    if module._diff:
        res["diff"] = {
            "before": to_text(existing),
            "after": "",
            "before_header": f"{p['instance']}: {p['volume']}",
            "after_header": f"{p['instance']}: {p['volume']}",
        }
    if module.check_mode or not res["changed"]:
        return res

    if flags:
        try:
            dom.detachDeviceFlags(to_text(existing), flags)
        except libvirt.libvirtError as exc:
            # A detach asked for earlier may still be waiting for the guest: keep waiting.
            if "already in the process of unplug" not in str(exc):
                node.fail("detaching", exc)
        if live_disk is not None:
            deadline = time.monotonic() + p["timeout"]
            while dom.isActive() and find_disk(dom.XMLDesc(0), p["volume"]) is not None:
                if time.monotonic() > deadline:
                    module.fail_json(
                        msg=f"instance {p['instance']} did not release volume {p['volume']} "
                        f"(device {existing.find('target').get('dev')}) within {p['timeout']} s; "
                        "the guest may still use it"
                    )
                time.sleep(0.2)
    try:
        if secret is not None:
            secret.undefine()
    except libvirt.libvirtError as exc:
        node.fail("removing the CHAP secret of", exc)
    return res


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "instance": {"type": "str", "required": True},
            "volume": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["attached", "detached"], "default": "attached"},
            "uri": {"type": "str", "default": "qemu:///system"},
            "portal_address": {"type": "str"},
            "portal_port": {"type": "int", "default": 3260},
            "iqn": {"type": "str"},
            "lun": {"type": "int", "default": 1},
            "chap_user": {"type": "str"},
            "chap_secret": {"type": "str", "no_log": True},
            "device": {"type": "str"},
            "timeout": {"type": "int", "default": 30},
        },
        required_if=[("state", "attached", ("portal_address", "iqn"))],
        required_together=[("chap_user", "chap_secret")],
        supports_check_mode=True,
    )
    if not HAS_LIBVIRT:
        module.fail_json(msg=missing_required_lib("libvirt-python (Debian python3-libvirt)"))
    p = module.params
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", p["volume"]):
        module.fail_json(msg=f"volume: {p['volume']!r} is not a volume id like vol-0a1b2c3d")
    if p["device"] and not DEVICE.match(p["device"]):
        module.fail_json(msg=f"device: {p['device']!r} is not a device name vdb .. vdz")
    node = Node(module)
    result = attach(module, node) if p["state"] == "attached" else detach(module, node)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
