# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters of the keepalived role: the VRRP instances (virtual addresses) of a host of an HA
pair, worked out from the inventory (stdlib ipaddress)."""

from __future__ import annotations

import ipaddress

from ansible.errors import AnsibleFilterError

# virtual_router_id of each address; a zone's CC gateway gets CC_ROUTER_ID_BASE + its index
# among the zones (sorted). They need only differ between the instances of one segment.
ROUTER_IDS = {"clc": 51, "walrus": 52}
CC_ROUTER_ID_BASE = 60
PRIMARY_PRIORITY = 150  # the first host of a pair starts as the holder
SECONDARY_PRIORITY = 100


def _pair(name: str, members: list[str], vip: str, prefix: int | None, interface: str,
          router_id: int) -> dict:  # fmt: skip
    return {"name": name, "hosts": list(members), "vip": vip, "prefix": prefix,
            "interface": interface, "router_id": router_id}  # fmt: skip


def vrrp_pairs(groups: dict, hosts: dict, clusters: dict | None = None, clc_vip: str = "",
               walrus_vip: str = "", vip_interface: str = "") -> list[dict]:  # fmt: skip
    """Every HA pair of the inventory and its virtual address: two clc hosts (clc_vip), two
    walrus hosts (walrus_vip), two cc hosts of one zone (its gateway, the first address of the
    zone's subnet, on the zone's bridge). ``hosts``: inventory name -> {cloud_cluster}.
    A prefix of None means the prefix of the host's address on the interface."""
    pairs = []
    for name, vip in (("clc", clc_vip), ("walrus", walrus_vip)):
        members = groups.get(name) or []
        if len(members) == 2 and vip:
            pairs.append(_pair(name, members, str(vip), None, vip_interface, ROUTER_IDS[name]))
    for index, zone in enumerate(sorted(clusters or {})):
        members = [
            h for h in groups.get("cc") or [] if (hosts.get(h) or {}).get("cloud_cluster") == zone
        ]
        if len(members) != 2:
            continue
        cluster = clusters[zone] or {}
        try:
            network = ipaddress.ip_network(str(cluster.get("subnet")), strict=True)
        except ValueError as e:
            raise AnsibleFilterError(f"vrrp_pairs: cloud_clusters.{zone}.subnet: {e}") from e
        pairs.append(_pair(f"cc-{zone}", members, str(network[1]), network.prefixlen,
                           cluster.get("bridge", ""), CC_ROUTER_ID_BASE + index))  # fmt: skip
    return pairs


def vrrp_instances(host: str, pairs: list[dict], addresses: dict) -> list[dict]:
    """The VRRP instances ``host`` takes part in: one per pair it is in, with its peer's
    address (``addresses``: inventory name -> the address VRRP adverts go to) and its priority
    (the first host of the pair is the primary)."""
    instances = []
    for pair in pairs:
        if host not in pair["hosts"]:
            continue
        peers = [h for h in pair["hosts"] if h != host]
        instances.append({
            "name": pair["name"],
            "vip": pair["vip"],
            "prefix": pair["prefix"],
            "interface": pair["interface"],
            "router_id": pair["router_id"],
            "peers": [str(addresses.get(p, p)) for p in peers],
            "priority": PRIMARY_PRIORITY if pair["hosts"][0] == host else SECONDARY_PRIORITY,
        })  # fmt: skip
    return instances


class FilterModule:
    def filters(self) -> dict:
        return {"vrrp_pairs": vrrp_pairs, "vrrp_instances": vrrp_instances}
