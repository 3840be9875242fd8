# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The instances of a cloudctl cloud as an Ansible inventory, read from cloudctl's state."""

from __future__ import annotations

DOCUMENTATION = r"""
name: instances
short_description: The instances of a cloudctl cloud
description:
  - Lists the instances of a cloud run by cloudctl as inventory hosts, read from the cloud's
    own state (the state that C(cloudctl instance list) reads), through cloudctl's Python
    API. The Python that runs Ansible must have the cloudctl package (run Ansible from
    cloudctl's virtual environment).
  - A missing state, or the state of another cloud, is an error, never an empty inventory.
    Ansible only warns about an inventory source that fails, unless
    C(any_unparsed_is_failed = True) is in the C([inventory]) section of C(ansible.cfg) (or
    E(ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED=true) is set). Set it, so that a play never
    runs on no host.
  - "The configuration is a YAML file whose name ends in C(instances.yml) or
    C(instances.yaml) with C(plugin: cloudctl.cloud.instances). The C(auto) inventory
    plugin, enabled by default, hands it to this plugin; an C(ansible.cfg) that sets
    C(enable_plugins) must keep C(auto) or name C(cloudctl.cloud.instances)."
  - "Host variables, from the state: C(instance_id), C(instance_state), C(state_reason),
    C(instance_type), C(image_id), C(image_name), C(kernel_id), C(ramdisk_id), C(zone),
    C(node) (its node controller), C(cc) (its zone's cluster controller), C(key_name),
    C(security_groups) (names), C(security_group_ids), C(private_ip), C(public_ip) (its
    elastic IP, or empty), C(mac), C(reservation_id), C(launch_time), C(instance_tags) (a
    mapping; empty when the instance has none)."
  - Every host is in the group C(instances) and in groups by zone (C(zone_ZONE)), node
    controller (C(node_NODE)), image (C(image_EMI)), instance type (C(instance_type_TYPE)),
    key pair (C(keypair_NAME)), security group (C(security_group_NAME)), state
    (C(instance_state_STATE)) and tag (C(tag_KEY_VALUE)). Characters that cannot be in a
    group name become C(_).
  - C(ansible_host) is the instance's private address. The instance network lives behind the
    zone's cluster controller (CC), so C(ansible_ssh_common_args) reaches it through that
    host with an SSH C(ProxyCommand) as the cloud's own inventory reaches the CC (its
    address, port, user, private key, and the host keys in the known_hosts file next to the
    cloud's inventory). No jump is made when the CC is the controller itself (connection
    C(local)). Guests' host keys are checked too (C(StrictHostKeyChecking=yes)) against
    O(known_hosts_file).
  - The values of the host variables are data, never rendered as templates.
author:
  - cloudctl developers (@cloudctl)
requirements:
  - cloudctl (the Python package, in the Python that runs Ansible)
extends_documentation_fragment:
  - ansible.builtin.constructed
  - ansible.builtin.inventory_cache
options:
  plugin:
    description: The name of this plugin; it marks the file as its configuration.
    required: true
    type: str
    choices: [cloudctl.cloud.instances]
  cloud:
    description:
      - The name of a cloud in cloudctl's clouds file (C(cloudctl cloud list)).
      - When not set, the cloud cloudctl itself would work on (E(CLOUDCTL_CLOUD), else
        E(CLOUDCTL_INVENTORY) with E(CLOUDCTL_HOME), else on a CLC host the cloud it
        controls, else the clouds file's default cloud).
    type: str
    env:
      - name: CLOUDCTL_CLOUD
  clouds_file:
    description:
      - cloudctl's clouds file.
      - When not set, cloudctl's own (E(CLOUDCTL_CLOUDS), else
        C(~/.config/cloudctl/clouds.yaml)).
    type: path
    env:
      - name: CLOUDCTL_CLOUDS
  instance_states:
    description:
      - The states of the instances to list.
    type: list
    elements: str
    choices: [pending, running, stopping, stopped, shutting-down, terminated, failed]
    default: [running]
  hostnames:
    description:
      - How to name a host, in order of preference; the first that gives a value names it.
        An instance that none of them names is left out.
      - C(instance-id) (the instance id), C(private-ip-address), C(ip-address) (its elastic
        IP), C(tag:KEY) (the value of its tag KEY).
    type: list
    elements: str
    default: [instance-id]
  known_hosts_file:
    description:
      - The known_hosts file of the guests' SSH host keys (C(UserKnownHostsFile)); a guest
        whose key is not in it is refused.
      - When not set, ssh's own (C(~/.ssh/known_hosts)).
      - A guest prints its host keys on its console (C(cloudctl instance console ID)) between
        C(-----BEGIN SSH HOST KEY KEYS-----) and C(-----END SSH HOST KEY KEYS-----); record
        them as lines C(PRIVATE_IP KEYTYPE KEY).
    type: path
"""

EXAMPLES = r"""
# instances.yml: the running instances of the default cloud
plugin: cloudctl.cloud.instances

---
# prod.instances.yml: a named cloud, its guests' host keys, groups of your own
plugin: cloudctl.cloud.instances
cloud: prod
known_hosts_file: ~/.cloudctl/guest_known_hosts
instance_states: [running, stopped]
hostnames:
  - tag:Name
  - instance-id
keyed_groups:
  - key: instance_tags.role | default('none')
    prefix: role
groups:
  big: instance_type in ['m1.large', 'm1.xlarge']
compose:
  ansible_user: "'root'"
  # Through the elastic IP (still through the CC) instead of the private address:
  # ansible_host: public_ip or private_ip
"""

import os
import shlex

from ansible.errors import AnsibleParserError
from ansible.inventory.group import to_safe_group_name
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable

try:
    from cloudctl import addresses, groups, hostkeys, images, instances
    from cloudctl.config import ENV_CLOUDS, resolve_settings
    from cloudctl.errors import CloudError
    from cloudctl.services import checked_state
except ImportError as exc:
    CLOUDCTL_IMPORT_ERROR: ImportError | None = exc
else:
    CLOUDCTL_IMPORT_ERROR = None

GROUP_ALL = "instances"
# Variables that become groups named PREFIX_VALUE (a list variable: one group per item).
GROUPED_BY = {
    "zone": "zone",
    "node": "node",
    "image_id": "image",
    "instance_type": "instance_type",
    "instance_state": "instance_state",
    "key_name": "keypair",
    "security_groups": "security_group",
}


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "cloudctl.cloud.instances"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(("instances.yml", "instances.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path)
        self._read_config_data(path)
        if CLOUDCTL_IMPORT_ERROR is not None:
            raise AnsibleParserError(
                f"{self.NAME} needs the cloudctl Python package in the Python that runs Ansible "
                f"({CLOUDCTL_IMPORT_ERROR}): run Ansible from cloudctl's virtual environment"
            )
        key = self.get_cache_key(path)
        use_cache = cache and self.get_option("cache")
        found = self._cache.get(key) if use_cache else None
        if found is None:
            try:
                found = self._instances()
            except CloudError as exc:
                raise AnsibleParserError(f"{self.NAME}: {exc}") from None
            if self.get_option("cache"):
                self._cache[key] = found
        self._populate(found)

    def _instances(self):
        """The host variables of each instance of the chosen states, in launch order."""
        env = None
        if self.get_option("clouds_file"):
            env = {**os.environ, ENV_CLOUDS: self.get_option("clouds_file")}
        settings = resolve_settings(env=env, cloud=self.get_option("cloud"))
        states = set(self.get_option("instance_states"))
        with checked_state(settings) as snap:
            records = [r for r in snap.table(instances.TABLE).all() if r["state"] in states]
            group_names = {g["id"]: g["name"] for g in snap.table(groups.TABLE).all()}
            image_names = {i["id"]: i["name"] for i in snap.table(images.TABLE).all()}
            public_ips = {
                a["instance"]: a["public_ip"]
                for a in snap.table(addresses.TABLE).all()
                if a.get("instance")
            }
        records.sort(key=lambda r: (r["created"], r.get("launch_index", 0)))
        jumps = _jump_args(settings, {r["cc"] for r in records}) if records else {}
        guest_args = ["-o", "StrictHostKeyChecking=yes"]
        if self.get_option("known_hosts_file"):
            guest_args += ["-o", f"UserKnownHostsFile={self.get_option('known_hosts_file')}"]
        return [
            {
                "instance_id": r["id"],
                "instance_state": r["state"],
                "state_reason": r.get("reason") or "",
                "instance_type": r["type"],
                "image_id": r["image_id"],
                "image_name": image_names.get(r["image_id"], ""),
                "kernel_id": r.get("kernel_id") or "",
                "ramdisk_id": r.get("ramdisk_id") or "",
                "zone": r["zone"],
                "node": r["node"],
                "cc": r["cc"],
                "key_name": r.get("keypair") or "",
                "security_group_ids": list(r.get("groups") or []),
                "security_groups": [group_names.get(g, g) for g in r.get("groups") or []],
                "private_ip": r["private_ip"],
                "public_ip": public_ips.get(r["id"], ""),
                "mac": r["mac"],
                "reservation_id": r.get("reservation") or "",
                "launch_time": r["created"],
                "instance_tags": dict(r.get("tags") or {}),
                "ansible_host": r["private_ip"],
                "ansible_ssh_common_args": shlex.join([*jumps.get(r["cc"], []), *guest_args]),
            }
            for r in records
        ]

    def _populate(self, found):
        names = {}
        for hostvars in found:
            name = self._hostname(hostvars)
            if name is None:
                continue
            if name in names:
                raise AnsibleParserError(
                    f"{self.NAME}: instances {names[name]} and {hostvars['instance_id']} both "
                    f"have the host name {name!r} (see the hostnames option)"
                )
            names[name] = hostvars["instance_id"]
            self.inventory.add_host(name, group=self.inventory.add_group(GROUP_ALL))
            for var, value in hostvars.items():
                self.inventory.set_variable(name, var, value)
            for group in _group_names(hostvars):
                self.inventory.add_child(self.inventory.add_group(group), name)
            self._construct(hostvars, name)

    def _construct(self, hostvars, name):
        """compose, groups and keyed_groups (the constructed options)."""
        strict = self.get_option("strict")
        self._set_composite_vars(self.get_option("compose"), hostvars, name, strict)
        self._add_host_to_composed_groups(self.get_option("groups"), hostvars, name, strict)
        self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hostvars, name, strict)

    def _hostname(self, hostvars):
        """The first name the hostnames option gives the instance, or None."""
        by_preference = {
            "instance-id": hostvars["instance_id"],
            "private-ip-address": hostvars["private_ip"],
            "ip-address": hostvars["public_ip"],
        }
        for preference in self.get_option("hostnames"):
            if preference.startswith("tag:"):
                value = hostvars["instance_tags"].get(preference[len("tag:") :])
            elif preference in by_preference:
                value = by_preference[preference]
            else:
                raise AnsibleParserError(
                    f"{self.NAME}: unknown hostnames entry {preference!r} (instance-id, "
                    "private-ip-address, ip-address or tag:KEY)"
                )
            if value:
                return str(value)
        return None


def _jump_args(settings, ccs):
    """The ssh options that reach each CC's instance network: a ProxyCommand through the CC as
    the cloud's inventory reaches it; none for a CC reached without SSH (the controller)."""
    known_hosts = hostkeys.known_hosts_path(settings)
    by_name = {h.name: h for h in hostkeys.ssh_hosts(settings) if h.name in ccs}
    return {
        name: ["-o", "ProxyCommand=" + shlex.join(host.ssh_command(known_hosts, "-W", "%h:%p"))]
        for name, host in by_name.items()
    }


def _group_names(hostvars):
    """The groups an instance is in: by zone, node, image, type, state, key pair, security
    group and tag."""
    names = []
    for var, prefix in GROUPED_BY.items():
        values = hostvars[var] if isinstance(hostvars[var], list) else [hostvars[var]]
        names += [f"{prefix}_{value}" for value in values if value]
    names += [
        f"tag_{key}_{value}" if value else f"tag_{key}"
        for key, value in hostvars["instance_tags"].items()
    ]
    return [to_safe_group_name(name, force=True, silent=True) for name in names]
