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

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.cloudctl.cloud.plugins.module_utils.nc_instance import (
    ARGUMENT_SPEC,
    HAS_LIBVIRT,
    core,
    quiet_libvirt,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
    )
    if not HAS_LIBVIRT:
        module.fail_json(msg=missing_required_lib("libvirt-python (Debian python3-libvirt)"))
    quiet_libvirt()
    module.exit_json(**core(module))


if __name__ == "__main__":
    main()
