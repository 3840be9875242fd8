#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A Node Controller's whole part of launching, powering or terminating instances, in one run."""

from __future__ import annotations

DOCUMENTATION = r"""
module: node_instances
short_description: Launch, power or remove a Node Controller's instances, all at once
description:
  - Does a Node Controller's whole part of an instance operation in one module run, with
    the instances handled at the same time (one thread each), so that N instances on a node
    cost about as much as one. Each step is the code of the one-resource module, with the
    same checks, results, check mode and diff.
  - "C(running) on instances that do not exist yet (a launch): first the I(images) are made
    sure of in the image cache, concurrently (M(cloudctl.cloud.image_cache): download from
    I(image_urls), sha256 check, LRU eviction); then the I(firewalls) are applied, one after
    the other (M(cloudctl.cloud.instance_firewall); the new instances' security groups and
    those of running instances whose source-group rules widen); then every instance is made
    (qcow2 overlay on the cached image, NoCloud seed ISO, domain definition) and started
    concurrently (M(cloudctl.cloud.cloud_instance)). The image files are the cache's,
    C(<cache_dir>/<sha256>)."
  - C(running) on existing instances starts the stopped ones; C(stopped) and C(rebooted)
    change the power state of every instance at once, as M(cloudctl.cloud.cloud_instance) does.
  - C(absent) destroys, undefines and removes every instance at once, then removes their
    firewalls (with each instance's I(generation)), then applies the I(firewalls) (other
    instances whose source-group rules narrow).
  - One instance failing does not stop the others. Its entry in RV(instances) says
    C(failed) with the message of the failing step, whatever it had made is removed again
    (as M(cloudctl.cloud.cloud_instance) does), and the module fails after all the others
    are done, with a message that names each failed instance. An image that cannot be cached
    fails the instances that use it; a firewall that cannot be applied fails the instances
    that were to start after it (an instance must never run without its rules).
  - Items may carry keys that are not options here (cloudctl passes its own views of the
    instances), which are ignored. Each item is checked like the options of the one-resource
    module (types, choices, defaults).
  - Check mode reports what would change and changes nothing; diff mode returns one diff per
    image, firewall and instance. I(user_data) and I(image_urls) are never shown.
requirements:
  - libvirt Python bindings (Debian C(python3-libvirt)), C(qemu-img), C(genisoimage),
    iptables, ebtables
options:
  state:
    description: Wanted state of every instance of I(instances).
    type: str
    choices: [running, stopped, rebooted, absent]
    default: running
  instances:
    description: The node's instances (their options as M(cloudctl.cloud.cloud_instance) takes them).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Instance id (C(i-) and 1 to 12 hex digits).
        type: str
        required: true
      hostname:
        description: Host name given to the guest.
        type: str
      vcpus:
        description: Virtual CPUs (to create it).
        type: int
      memory_mb:
        description: Memory in MiB (to create it).
        type: int
      mac:
        description: MAC address of its NIC (to create it).
        type: str
      disk_gb:
        description: Virtual size in GiB of the root overlay.
        type: int
      image_sha256:
        description: sha256 of its disk image in the image cache.
        type: str
      image_format:
        description: Format of the disk image.
        type: str
        choices: [qcow2, raw]
        default: raw
      kernel_sha256:
        description: sha256 of the kernel in the image cache (direct kernel boot).
        type: str
      ramdisk_sha256:
        description: sha256 of the initrd in the image cache.
        type: str
      cmdline:
        description: Kernel command line (with a kernel).
        type: str
        default: console=ttyS0
      public_keys:
        description: SSH public keys for the seed.
        type: list
        elements: str
        default: []
      generation:
        description: With C(absent), the generation of the removal of its firewall (see M(cloudctl.cloud.instance_firewall)).
        type: int
  images:
    description: Files the instances need in the image cache (C(running) only).
    type: list
    elements: dict
    default: []
    suboptions:
      sha256:
        description: sha256 of the file.
        type: str
        required: true
      size:
        description: Expected size in bytes.
        type: int
  image_urls:
    description: sha256 -> presigned URL to download a file that is not cached. Never logged.
    type: dict
    default: {}
  firewalls:
    description:
      - Firewalls to apply (C(present)), before the instances start with C(running), after
        they are removed with C(absent).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Instance id.
        type: str
        required: true
      tap:
        description: The instance's tap.
        type: str
        required: true
      mac:
        description: The instance's MAC address.
        type: str
      ip:
        description: The instance's private IPv4 address.
        type: str
        required: true
      rules:
        description: Inbound rules, as M(cloudctl.cloud.instance_firewall) takes them.
        type: list
        elements: dict
        default: []
      generation:
        description: Order of this change among the changes of the instance's firewall.
        type: int
  user_data:
    description: Instance id -> its user data (only instances that have some). Never logged.
    type: dict
    default: {}
  node_config:
    description: The node facts written by the nc role.
    type: path
    default: /etc/cloud/nc/node.json
  uri:
    description: libvirt connection URI.
    type: str
    default: qemu:///system
  shutdown_timeout:
    description: Seconds C(stopped) waits for a guest to power off before destroying it.
    type: int
    default: 30
  max_workers:
    description: Instances (and images) handled at the same time at most.
    type: int
    default: 16
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
    details: One diff per image, firewall and instance.
  platform:
    platforms: posix
author:
  - cloudctl developers (@cloudctl)
"""

EXAMPLES = r"""
- name: Launch two instances of a kernel + ramdisk image on this node
  cloudctl.cloud.node_instances:
    images:
      - {sha256: "{{ root_sha256 }}", size: 67108864}
      - {sha256: "{{ kernel_sha256 }}", size: 8123456}
    image_urls: "{{ presigned_urls }}"
    firewalls:
      - {name: i-0a1b2c3d, tap: vn-0a1b2c3d, ip: 172.31.0.23, rules: [{protocol: tcp, from_port: 22, to_port: 22, cidr: 0.0.0.0/0}]}
      - {name: i-0a1b2c3e, tap: vn-0a1b2c3e, ip: 172.31.0.24, rules: []}
    instances:
      - name: i-0a1b2c3d
        vcpus: 1
        memory_mb: 256
        mac: "d0:0d:0a:1b:2c:3d"
        image_sha256: "{{ root_sha256 }}"
        image_format: qcow2
        kernel_sha256: "{{ kernel_sha256 }}"
      - name: i-0a1b2c3e
        vcpus: 1
        memory_mb: 256
        mac: "d0:0d:0a:1b:2c:3e"
        image_sha256: "{{ root_sha256 }}"
        image_format: qcow2
        kernel_sha256: "{{ kernel_sha256 }}"
    user_data:
      i-0a1b2c3d: "#!/bin/sh\necho hello\n"

- name: Terminate them
  cloudctl.cloud.node_instances:
    state: absent
    instances:
      - {name: i-0a1b2c3d, generation: 7}
      - {name: i-0a1b2c3e, generation: 7}
"""

RETURN = r"""
instances:
  description:
    - One result per instance, in the order of I(instances), as M(cloudctl.cloud.cloud_instance)
      returns it, with its C(name) and C(changed), and C(failed) and C(msg) when it failed.
  returned: always
  type: list
  elements: dict
  sample: [{name: i-0a1b2c3d, state: running, changed: true, tap: vn-0a1b2c3d}]
images:
  description: One result per image, as M(cloudctl.cloud.image_cache) returns it (C(hit), C(downloaded_bytes), C(seconds)...), with its C(sha256).
  returned: always
  type: list
  elements: dict
firewalls:
  description: One result per firewall applied or removed, as M(cloudctl.cloud.instance_firewall) returns it, with its C(instance).
  returned: always
  type: list
  elements: dict
seconds:
  description: Wall time of each step (C(images), C(firewalls), C(instances)).
  returned: always
  type: dict
"""

import time
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.cloudctl.cloud.plugins.module_utils import (
    nc_firewall,
    nc_image_cache,
    nc_instance,
)
from ansible_collections.cloudctl.cloud.plugins.module_utils.item_module import run_item


def pick(item: dict, *keys: str) -> dict:
    """The item's values of `keys` that are given (an empty string is not given)."""
    return {key: item[key] for key in keys if item.get(key) not in (None, "")}


class Node:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.p = module.params
        self.diffs: list = []
        self.seconds: dict[str, float] = {}
        try:
            self.cache_dir = nc_image_cache.load_config(self.p["node_config"])["cache_dir"]
        except nc_image_cache.RoleConfigError:
            self.cache_dir = None  # each instance's own run names the problem

    def parallel(self, fn, items: list) -> list:
        if len(items) <= 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(max_workers=max(1, min(len(items), self.p["max_workers"]))) as ex:
            return list(ex.map(fn, items))

    def timed(self, step: str, fn, items: list, at_once: bool = True) -> list:
        start = time.monotonic()
        out = self.parallel(fn, items) if at_once else [fn(item) for item in items]
        self.seconds[step] = round(time.monotonic() - start, 3)
        return out

    def keep_diff(self, res: dict, header: str) -> dict:
        diff = res.pop("diff", None)
        if diff is not None:
            diff.setdefault("before_header", header)
            diff.setdefault("after_header", header)
            self.diffs.append(diff)
        return res

    # -- the steps, each the code of its one-resource module ---------------------------------
    def cache(self, image: dict) -> dict:
        sha = image["sha256"]
        params = {
            **pick(image, "sha256", "size"),
            "url": self.p["image_urls"].get(sha),
            "node_config": self.p["node_config"],
        }
        res = run_item(self.module, nc_image_cache.ARGUMENT_SPEC, params, nc_image_cache.core)
        return self.keep_diff({"sha256": sha, **res}, f"image {sha}")

    def firewall(self, item: dict, state: str) -> dict:
        params = {
            "instance": item["name"],
            "state": state,
            **pick(item, "generation"),
            **(pick(item, "tap", "mac", "ip", "rules") if state == "present" else {}),
        }
        res = run_item(
            self.module,
            nc_firewall.ARGUMENT_SPEC,
            params,
            nc_firewall.core,
            nc_firewall.REQUIRED_IF,
        )
        if res.get("failed"):
            res["msg"] = f"firewall of {item['name']}: {res['msg']}"
        return self.keep_diff({"instance": item["name"], **res}, f"firewall {item['name']}")

    def instance(self, item: dict) -> dict:
        params = {
            **pick(item, "name", "hostname", "vcpus", "memory_mb", "mac", "disk_gb"),
            **pick(item, "image_format", "image_sha256", "kernel_sha256", "ramdisk_sha256"),
            **pick(item, "cmdline", "public_keys"),
            "state": self.p["state"],
            "node_config": self.p["node_config"],
            "uri": self.p["uri"],
            "shutdown_timeout": self.p["shutdown_timeout"],
            "user_data": self.p["user_data"].get(item.get("name")),
        }
        for kind in ("image", "kernel", "ramdisk"):
            if params.get(f"{kind}_sha256") and self.cache_dir:
                params[kind] = f"{self.cache_dir}/{params[f'{kind}_sha256']}"
        res = run_item(self.module, nc_instance.ARGUMENT_SPEC, params, nc_instance.core)
        return self.keep_diff({"name": item.get("name"), **res}, f"instance {item.get('name')}")

    # -- the operations --------------------------------------------------------------------
    def launch(self) -> dict:
        images = self.timed("images", self.cache, self.p["images"])
        # One after the other: they share the node's firewall lock.
        firewalls = self.timed(
            "firewalls", lambda f: self.firewall(f, "present"), self.p["firewalls"], at_once=False
        )
        blocked = {}  # instance -> why it must not start
        for res in images:
            if res.get("failed"):
                for item in self.p["instances"]:
                    if res["sha256"] in (item.get(k) for k in SHA_KEYS):
                        blocked.setdefault(item["name"], res["msg"])
        failed_fw = [res for res in firewalls if res.get("failed")]
        for item in self.p["instances"]:
            own = [res for res in failed_fw if res["instance"] == item["name"]]
            if own or failed_fw:
                blocked.setdefault(item["name"], (own or failed_fw)[0]["msg"])

        def start(item: dict) -> dict:
            if item["name"] in blocked:
                msg = f"instance {item['name']}: not started: {blocked[item['name']]}"
                return {"name": item["name"], "failed": True, "changed": False, "msg": msg}
            return self.instance(item)

        instances = self.timed("instances", start, self.p["instances"])
        return {"images": images, "firewalls": firewalls, "instances": instances}

    def power(self) -> dict:
        instances = self.timed("instances", self.instance, self.p["instances"])
        return {"images": [], "firewalls": [], "instances": instances}

    def remove(self) -> dict:
        instances = self.timed("instances", self.instance, self.p["instances"])
        gone = [item for item, res in zip(self.p["instances"], instances) if not res.get("failed")]
        start = time.monotonic()
        firewalls = [self.firewall(item, "absent") for item in gone]
        firewalls += [self.firewall(item, "present") for item in self.p["firewalls"]]
        self.seconds["firewalls"] = round(time.monotonic() - start, 3)
        # An instance is removed once its rules are, and other instances' rules no longer
        # admit its address (which the next instance may get).
        failed_fw = [res for res in firewalls if res.get("failed")]
        for item, res in zip(self.p["instances"], instances):
            own = [fw for fw in failed_fw if fw["instance"] == item["name"]]
            if not res.get("failed") and (own or failed_fw):
                res.update(
                    failed=True, msg=f"instance {item['name']}: {(own or failed_fw)[0]['msg']}"
                )
        return {"images": [], "firewalls": firewalls, "instances": instances}


SHA_KEYS = ("image_sha256", "kernel_sha256", "ramdisk_sha256")


def core(module: AnsibleModule) -> dict:
    node = Node(module)
    state = module.params["state"]
    if state == "absent":
        res = node.remove()
    elif state == "running":
        res = node.launch()
    else:
        res = node.power()
    parts = [*res["images"], *res["firewalls"], *res["instances"]]
    res["changed"] = any(part.get("changed") for part in parts)
    res["seconds"] = node.seconds
    if module._diff:
        res["diff"] = node.diffs
    failures = [part["msg"] for part in parts if part.get("failed")]
    if failures:
        res["failed"] = True
        res["msg"] = "; ".join(dict.fromkeys(failures))
    return res


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state": {
                "type": "str",
                "choices": ["running", "stopped", "rebooted", "absent"],
                "default": "running",
            },
            "instances": {"type": "list", "elements": "dict", "default": []},
            "images": {"type": "list", "elements": "dict", "default": []},
            "image_urls": {"type": "dict", "default": {}, "no_log": True},
            "firewalls": {"type": "list", "elements": "dict", "default": []},
            "user_data": {"type": "dict", "default": {}, "no_log": True},
            "node_config": {"type": "path", "default": "/etc/cloud/nc/node.json"},
            "uri": {"type": "str", "default": "qemu:///system"},
            "shutdown_timeout": {"type": "int", "default": 30},
            "max_workers": {"type": "int", "default": 16},
        },
        supports_check_mode=True,
    )
    if not nc_instance.HAS_LIBVIRT:
        module.fail_json(msg=missing_required_lib("libvirt-python (Debian python3-libvirt)"))
    nc_instance.quiet_libvirt()
    res = core(module)
    if res.get("failed"):
        module.fail_json(**res)
    module.exit_json(**res)


if __name__ == "__main__":
    main()
