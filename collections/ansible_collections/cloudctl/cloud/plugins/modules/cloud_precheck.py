#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Validate the whole cloud description (groups, host variables, clusters) before deploying."""

from __future__ import annotations

DOCUMENTATION = r"""
module: cloud_precheck
short_description: Validate the cloud description before anything changes
description:
  - Checks the inventory's description of the whole cloud once, before any host is touched,
    and fails with one line per problem naming the host (or cluster) and the variable.
  - Run it once, delegated to localhost, from the first play of C(playbooks/site.yml).
    It reads only its arguments and changes nothing (C(changed=false) always).
  - "Checks: the groups C(clc), C(walrus), C(cc), C(sc) and C(nc) each have a host; every host
    in C(cc), C(sc) and C(nc) has C(cloud_cluster) naming a cluster of C(cloud_clusters); every
    cluster has a strict IPv4 C(subnet) (host bits zero) of at least a /29, a valid C(bridge)
    name (at most 15 characters) and, if set, a valid C(public_interface) name; no two
    clusters' subnets overlap; every cluster used by a node controller has one cluster
    controller (or two, a CC pair) and at least one storage controller."
  - "Elastic IP pools: a cluster's C(public_ips), if set, is an IPv4 CIDR (C(198.51.100.0/28),
    its host addresses) or an inclusive range C(A-B); it needs C(public_interface); it
    overlaps no cluster's subnet and no other cluster's pool."
  - "HA pairs: C(clc) and C(walrus) have one host or two (a pair), a zone one C(cc) or two.
    A C(clc) or C(walrus) pair needs its virtual address (O(vip_addresses)) and a C(witness)
    group of ONE host that is in neither group; a C(walrus) pair needs a C(clc) pair (its
    filer store is the etcd of the CLC pair and the witness). Every host of a pair has
    C(cloud_arbitrator_targets), a list of C(icmp:ADDRESS) or C(tcp:ADDRESS:PORT)."
  - "With the facts of the pair hosts (run again after gathering them): the virtual address
    lies in the network of the interface that carries it (C(vip_network)); an arbitrator
    target that no host of its pair reached (C(probes)) is an error, a host that reached none
    or only some of its targets a warning (Eucalyptus's rule: all failing releases the
    addresses, some failing is logged)."
options:
  groups:
    description: The inventory's groups, i.e. the C(groups) magic variable (group -> hosts).
    type: dict
    required: true
  hosts:
    description:
      - Host name -> dict of that host's relevant variables (C(cloud_cluster),
        C(cloud_arbitrator_targets), and from its facts C(vip_network) (the address and prefix
        of the interface carrying the virtual addresses, like C(192.0.2.11/24); C("") when no
        interface holds C(ansible_host)) and C(probes) (arbitrator target -> reached); other
        keys are ignored). A host in C(cc), C(sc) or C(nc) missing here has no C(cloud_cluster).
    type: dict
    default: {}
  vip_addresses:
    description:
      - The virtual addresses of the pairs, C(clc) (C(cloud_clc_vip_address)) and C(walrus)
        (C(cloud_walrus_vip_address)); empty or missing for a single host.
    type: dict
    default: {}
  clusters:
    description: The C(cloud_clusters) variable (see docs/conventions.md).
    type: dict
    required: true
notes:
  - When several problems are found, C(msg) lists them all on one line separated by C(; ),
    and C(errors) holds them as a list.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: It only reads, and runs the same way in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
author:
  - cloudctl developers (@cloudctl)
"""

EXAMPLES = r"""
# First play of playbooks/site.yml
- name: Check the cloud description
  hosts: all
  gather_facts: false
  tasks:
    - name: Validate groups, host variables and clusters
      cloudctl.cloud.cloud_precheck:
        groups: "{{ groups }}"
        hosts: >-
          {%- set out = {} -%}
          {%- for h in groups['all'] -%}
          {%- set _ = out.update({h: {'cloud_cluster': hostvars[h]['cloud_cluster'] | default(none)}}) -%}
          {%- endfor -%}
          {{ out | to_json }}
        clusters: "{{ cloud_clusters | default({}) }}"
      delegate_to: localhost
      run_once: true
"""

RETURN = r"""
msg:
  description: One line. On success, a summary; on failure, every problem found.
  returned: always
  type: str
  sample: "cloud ok: 1 cluster; zone-a (subnet 172.31.0.0/24, bridge cloudbr0): cc cc1, sc sc1, nc nc1 nc2"
clusters:
  description: Each cluster with its subnet, bridge, gateway and hosts per role.
  returned: success
  type: dict
  sample:
    zone-a:
      subnet: 172.31.0.0/24
      gateway: 172.31.0.1
      bridge: cloudbr0
      cc: [cc1]
      sc: [sc1]
      nc: [nc1, nc2]
pairs:
  description: The HA pairs (C(clc), C(walrus), C(cc zone-a)...) and their two hosts.
  returned: success
  type: dict
  sample: {clc: [cloud1, cloud2], walrus: [cloud1, cloud2], cc zone-a: [cloud1, cloud2]}
pair_hosts:
  description: Every host of an HA pair (those that need arbitrator targets).
  returned: success
  type: list
  elements: str
  sample: [cloud1, cloud2]
vip_hosts:
  description: Every host of a C(clc) or C(walrus) pair (those that carry a virtual address).
  returned: success
  type: list
  elements: str
  sample: [cloud1, cloud2]
errors:
  description: Every problem found, one line each.
  returned: failure
  type: list
  elements: str
  sample: ["host nc2: cloud_cluster is not set (every host in cc, sc and nc needs it)"]
"""

import ipaddress

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.cloudctl.cloud.plugins.module_utils.cloud_net import ifname_problem

REQUIRED_GROUPS = {
    "clc": "a Cloud Controller host",
    "walrus": "a Walrus host",
    "cc": "a Cluster Controller host",
    "sc": "a Storage Controller host",
    "nc": "a Node Controller host",
}
CLUSTER_GROUPS = ("cc", "sc", "nc")
MAX_PREFIX = 29  # gateway + at least five instance addresses
# Groups whose two hosts make a pair with a virtual address, the witness's role for them.
VIP_PAIRS = {
    "clc": ("CLC", "cloud_clc_vip_address", "the third etcd member"),
    "walrus": ("Walrus", "cloud_walrus_vip_address", "the third SeaweedFS master"),
}
TARGET_FORMS = "icmp:ADDRESS or tcp:ADDRESS:PORT"


def check_cloud(groups: dict, hosts: dict, clusters: dict) -> tuple[list[str], list[str], dict]:
    """Validate the description. Returns (errors, warnings, clusters summary)."""
    errors: list[str] = []
    warnings: list[str] = []
    groups = groups or {}
    hosts = hosts or {}

    for group, what in REQUIRED_GROUPS.items():
        if not groups.get(group):
            errors.append(f"no host in group {group}: the cloud needs {what}")

    networks = check_clusters(clusters, errors)

    # cluster -> role -> hosts
    members: dict[str, dict[str, list[str]]] = {
        name: {g: [] for g in CLUSTER_GROUPS} for name in (clusters or {})
    }
    seen: set[str] = set()
    for group in CLUSTER_GROUPS:
        for host in groups.get(group) or []:
            cluster = (hosts.get(host) or {}).get("cloud_cluster")
            if host not in seen:
                seen.add(host)
                problem = cluster_ref_problem(cluster, clusters)
                if problem:
                    errors.append(f"host {host}: {problem}")
            if isinstance(cluster, str) and cluster in members:
                members[cluster][group].append(host)

    for name, roles in members.items():
        if not roles["nc"]:
            if roles["cc"] or roles["sc"]:
                warnings.append(f"cluster {name} has no node controller (no host in nc has it)")
            continue
        if len(roles["cc"]) not in (1, 2):
            found = (
                f"{len(roles['cc'])} hosts in group cc have it ({', '.join(roles['cc'])})"
                if roles["cc"]
                else "no host in group cc has it"
            )
            errors.append(
                f"cluster {name}: {found} as cloud_cluster; a cluster with node controllers "
                "needs one cluster controller (or two, a CC pair)"
            )
        if not roles["sc"]:
            errors.append(
                f"cluster {name}: no host in group sc has it as cloud_cluster; a cluster with "
                "node controllers needs a storage controller"
            )

    summary = {}
    for name, roles in members.items():
        net = networks.get(name)
        summary[name] = {
            "subnet": str(net) if net else None,
            "gateway": str(net.network_address + 1) if net else None,
            "bridge": spec.get("bridge") if isinstance(spec := clusters[name], dict) else None,
            **{g: sorted(roles[g]) for g in CLUSTER_GROUPS},
        }
    return errors, warnings, summary


def check_ha(
    groups: dict, hosts: dict, clusters: dict, vips: dict
) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """The HA rules (issue 12), given check_cloud's clusters summary.
    Returns (errors, warnings, pairs: name -> its two hosts)."""
    errors: list[str] = []
    warnings: list[str] = []
    pairs: dict[str, list[str]] = {}
    groups = groups or {}
    hosts = hosts or {}
    witnesses = groups.get("witness") or []
    if len(witnesses) > 1:
        errors.append(
            f"group witness has {len(witnesses)} hosts ({', '.join(witnesses)}): it holds ONE "
            "host, the third etcd member and SeaweedFS master of the clc and walrus pairs"
        )
    for group, (what, vip_var, witness_role) in VIP_PAIRS.items():
        members = groups.get(group) or []
        if len(members) > 2:
            errors.append(
                f"group {group} has {len(members)} hosts ({', '.join(members)}): one {what} "
                "host, or two for a primary/secondary pair"
            )
        if len(members) != 2:
            continue
        pair = f"the {what} pair ({', '.join(members)})"
        pairs[group] = list(members)
        vip = vips.get(group)
        if vip is None or vip == "":
            errors.append(f"{pair} needs {vip_var}: the virtual address its clients reach")
        else:
            check_vip(pair, vip_var, vip, members, hosts, errors)
        if not witnesses:
            errors.append(
                f"{pair} needs a witness: one host in group witness, {witness_role} "
                "(a third host, so that either host of the pair can fail)"
            )
        for host in witnesses:
            if host in members:
                errors.append(
                    f"host {host} is in both witness and {group}: the witness must be a third "
                    f"host, not one of {pair}"
                )
    if "walrus" in pairs and "clc" not in pairs:
        errors.append(
            f"the Walrus pair ({', '.join(pairs['walrus'])}) keeps its filer store in etcd, whose "
            "members are the CLC pair and the witness: make clc a pair too"
        )
    if witnesses and not pairs:
        warnings.append(
            f"group witness ({', '.join(witnesses)}) is unused: no clc or walrus pair needs it"
        )
    for zone, spec in clusters.items():
        if len(spec["cc"]) == 2:
            pairs[f"cc {zone}"] = list(spec["cc"])
    for name, members in pairs.items():
        for host in members:
            check_targets(host, (hosts.get(host) or {}).get("cloud_arbitrator_targets"), errors)
        check_probes(name, members, hosts, errors, warnings)
    # A host in several pairs (clc, walrus and cc on the same two hosts) is told once.
    return list(dict.fromkeys(errors)), list(dict.fromkeys(warnings)), pairs


def check_vip(
    pair: str, var: str, vip: object, members: list[str], hosts: dict, errors: list[str]
) -> None:
    try:
        address = ipaddress.IPv4Address(str(vip).strip())
    except ValueError:
        errors.append(f"{pair}: {var} {vip!r} is not an IPv4 address")
        return
    for host in members:
        facts = hosts.get(host) or {}
        if facts.get("ansible_host") == str(address):
            errors.append(
                f"{pair}: {var} {address} is the address of host {host} (ansible_host): a "
                "virtual address is a free one that moves between the hosts"
            )
        if "vip_network" not in facts:
            continue  # before the facts are gathered
        if not facts["vip_network"]:
            errors.append(
                f"host {host}: no interface holds ansible_host {facts.get('ansible_host')}: set "
                "cloud_vip_interface to the interface that carries the virtual addresses"
            )
            continue
        network = ipaddress.IPv4Interface(facts["vip_network"]).network
        if address not in network:
            errors.append(
                f"{pair}: {var} {address} is outside the network {network} of host {host}'s "
                "virtual address interface (keepalived adds it there; clients could not "
                "reach it)"
            )


def target_problem(target: object) -> str | None:
    """Why a probe is not icmp:ADDRESS or tcp:ADDRESS:PORT (None if it is)."""
    kind, rest = str(target).partition(":")[::2]
    address, port = rest, None
    if kind == "tcp":
        address, port = rest.rpartition(":")[::2]
    try:
        ipaddress.IPv4Address(address)
        if kind not in ("icmp", "tcp") or (port is not None and not 0 < int(port) < 65536):
            raise ValueError(target)
    except ValueError:
        return f"{target!r} is not {TARGET_FORMS} (an IPv4 address, a port 1-65535)"
    return None


def check_targets(host: str, targets: object, errors: list[str]) -> None:
    if not targets:
        errors.append(
            f"host {host}: cloud_arbitrator_targets is not set (every host of an HA pair "
            f"probes something outside the pair: a list of {TARGET_FORMS})"
        )
        return
    if not isinstance(targets, list):
        errors.append(
            f"host {host}: cloud_arbitrator_targets must be a list of {TARGET_FORMS}, "
            f"not {type(targets).__name__} {targets!r}"
        )
        return
    for target in targets:
        if problem := target_problem(target):
            errors.append(f"host {host}: cloud_arbitrator_targets entry {problem}")


def check_probes(
    name: str, members: list[str], hosts: dict, errors: list[str], warnings: list[str]
) -> None:
    """Probe results from the hosts (when gathered): a target none of the pair reaches is
    "shared by nothing": a typo or a firewall, it can never arbitrate."""
    reached_by: dict[str, list[str]] = {}
    for host in members:
        probes = (hosts.get(host) or {}).get("probes")
        if not isinstance(probes, dict) or not probes:
            continue
        for target, ok in probes.items():
            reached_by.setdefault(target, [])
            if ok:
                reached_by[target].append(host)
        failed = [target for target, ok in probes.items() if not ok]
        if failed and len(failed) == len(probes):
            warnings.append(
                f"host {host} reaches none of its arbitrator targets ({', '.join(failed)}): "
                "it cannot hold the virtual addresses of its pairs until one answers"
            )
        elif failed:
            warnings.append(f"host {host} does not reach arbitrator target {', '.join(failed)}")
    for target, reached in reached_by.items():
        if not reached:
            errors.append(
                f"arbitrator target {target} answers none of the pair hosts that probe it "
                f"({', '.join(members)}): a typo or a firewall? A target no host reaches never "
                "arbitrates"
            )


def cluster_ref_problem(cluster: object, clusters: dict) -> str | None:
    if cluster is None or cluster == "":
        return "cloud_cluster is not set (every host in cc, sc and nc needs it)"
    if not isinstance(cluster, str):
        return f"cloud_cluster must be a cluster name, not {type(cluster).__name__} {cluster!r}"
    if cluster not in (clusters or {}):
        defined = ", ".join(sorted(clusters or {})) or "none"
        return f"cloud_cluster {cluster!r} is not defined in cloud_clusters (defined: {defined})"
    return None


def check_clusters(clusters: dict, errors: list[str]) -> dict[str, ipaddress.IPv4Network]:
    """Check each cluster's variables; returns the valid subnets by cluster name."""
    if not clusters:
        errors.append("cloud_clusters is empty: define at least one cluster (docs/conventions.md)")
        return {}
    networks: dict[str, ipaddress.IPv4Network] = {}
    for name, spec in clusters.items():
        if not isinstance(spec, dict):
            errors.append(
                f"cluster {name}: cloud_clusters.{name} must be a dict with subnet and bridge"
            )
            continue
        net = subnet_of(name, spec.get("subnet"), errors)
        if net is not None:
            networks[name] = net
        bridge = spec.get("bridge")
        if bridge is None or bridge == "":
            errors.append(f"cluster {name}: cloud_clusters.{name}.bridge is not set")
        else:
            problem = ifname_problem(bridge)
            if problem:
                errors.append(f"cluster {name}: cloud_clusters.{name}.bridge {bridge!r} {problem}")
        public = spec.get("public_interface")
        if public:
            problem = ifname_problem(public)
            if problem:
                errors.append(
                    f"cluster {name}: cloud_clusters.{name}.public_interface {public!r} {problem}"
                )

    pools = {}
    for name, spec in clusters.items():
        if isinstance(spec, dict) and spec.get("public_ips"):
            pool = pool_of(name, spec, errors)
            if pool is not None:
                pools[name] = pool
    for name, (first, last) in pools.items():
        value = clusters[name]["public_ips"]
        for other, net in networks.items():
            if first <= net.broadcast_address and net.network_address <= last:
                errors.append(
                    f"cluster {name}: cloud_clusters.{name}.public_ips {value!r} overlaps "
                    f"cloud_clusters.{other}.subnet {net} (elastic IPs are public addresses)"
                )
    names = list(pools)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if pools[a][0] <= pools[b][1] and pools[b][0] <= pools[a][1]:
                errors.append(
                    f"clusters {a} and {b}: cloud_clusters.{a}.public_ips "
                    f"{clusters[a]['public_ips']!r} overlaps cloud_clusters.{b}.public_ips "
                    f"{clusters[b]['public_ips']!r}"
                )

    names = list(networks)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if networks[a].overlaps(networks[b]):
                errors.append(
                    f"clusters {a} and {b}: cloud_clusters.{a}.subnet {networks[a]} overlaps "
                    f"cloud_clusters.{b}.subnet {networks[b]}"
                )
    return networks


def pool_of(
    name: str, spec: dict, errors: list[str]
) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address] | None:
    """(first, last) address of the cluster's elastic IP pool, or None after an error."""
    var = f"cloud_clusters.{name}.public_ips"
    text = spec["public_ips"]
    if not spec.get("public_interface"):
        errors.append(
            f"cluster {name}: {var} {text!r} needs public_interface (the CC holds the elastic "
            "IPs on it)"
        )
        return None
    wrong = (
        f"cluster {name}: {var} {text!r} is not an IPv4 CIDR (like 198.51.100.0/28) or "
        "range (like 198.51.100.10-198.51.100.20)"
    )
    if not isinstance(text, str):
        errors.append(wrong)
        return None
    try:
        if "-" in text:
            first, last = (ipaddress.IPv4Address(p.strip()) for p in text.split("-", 1))
        elif "/" in text:
            net = ipaddress.IPv4Network(text.strip(), strict=False)
        else:
            raise ValueError(text)
    except ValueError:
        errors.append(wrong)
        return None
    if "-" in text:
        if last < first:
            errors.append(f"cluster {name}: {var} {text!r} ends before it starts")
            return None
        return first, last
    if str(net) != text.strip():
        errors.append(f"cluster {name}: {var} {text!r} has host bits set (the network is {net})")
        return None
    if net.prefixlen >= 31:  # /31 and /32: every address is a host address
        return net[0], net[-1]
    return net[1], net[-2]


def subnet_of(name: str, subnet: object, errors: list[str]) -> ipaddress.IPv4Network | None:
    var = f"cloud_clusters.{name}.subnet"
    if subnet is None or subnet == "":
        errors.append(f"cluster {name}: {var} is not set")
        return None
    text = str(subnet)
    if "/" not in text:
        errors.append(
            f"cluster {name}: {var} {text!r} has no prefix length (write it like 172.31.0.0/24)"
        )
        return None
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        errors.append(
            f"cluster {name}: {var} {text!r} is not an IPv4 CIDR network (like 172.31.0.0/24)"
        )
        return None
    if net.version != 4:
        errors.append(f"cluster {name}: {var} {text!r} is not IPv4 (instance subnets are IPv4)")
        return None
    try:
        ipaddress.ip_network(text.strip(), strict=True)
    except ValueError:
        errors.append(f"cluster {name}: {var} {text!r} has host bits set (the network is {net})")
        return None
    if net.prefixlen > MAX_PREFIX:
        errors.append(
            f"cluster {name}: {var} {net} is too small (at least a /{MAX_PREFIX}: the gateway "
            "and the instances need addresses)"
        )
        return None
    return net


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "groups": {"type": "dict", "required": True},
            "hosts": {"type": "dict", "default": {}},
            "clusters": {"type": "dict", "required": True},
            "vip_addresses": {"type": "dict", "default": {}},
        },
        supports_check_mode=True,
    )
    groups, hosts = module.params["groups"], module.params["hosts"]
    errors, warnings, summary = check_cloud(groups, hosts, module.params["clusters"])
    ha_errors, ha_warnings, pairs = check_ha(groups, hosts, summary, module.params["vip_addresses"])
    errors += ha_errors
    warnings += ha_warnings
    for warning in warnings:
        module.warn(warning)
    if errors:
        msg = (
            errors[0]
            if len(errors) == 1
            else (f"{len(errors)} problems in the cloud description: " + "; ".join(errors))
        )
        module.fail_json(msg=msg, errors=errors)
    used = {n: s for n, s in summary.items() if s["cc"] or s["sc"] or s["nc"]}
    parts = [
        f"{n} (subnet {s['subnet']}, bridge {s['bridge']}): "
        + ", ".join(f"{g} {' '.join(s[g])}" for g in CLUSTER_GROUPS if s[g])
        for n, s in used.items()
    ]
    msg = f"cloud ok: {len(used)} cluster{'s' if len(used) != 1 else ''}; " + "; ".join(parts)
    if pairs:
        msg += "; HA pairs: " + ", ".join(f"{n} ({' '.join(h)})" for n, h in pairs.items())
    module.exit_json(
        changed=False,
        msg=msg,
        clusters=summary,
        pairs=pairs,
        pair_hosts=sorted({h for hosts in pairs.values() for h in hosts}),
        vip_hosts=sorted({h for n in VIP_PAIRS for h in pairs.get(n, [])}),
    )


if __name__ == "__main__":
    main()
