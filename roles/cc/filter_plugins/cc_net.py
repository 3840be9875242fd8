# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters of the cc role: the addresses of a cluster's instance network (stdlib ipaddress)."""

from __future__ import annotations

import ipaddress

from ansible.errors import AnsibleFilterError


def cc_subnet_problem(subnet: object) -> str:
    """Why ``subnet`` cannot be an instance subnet, or '' when it can.

    It must be an IPv4 network in CIDR notation (no host bits set) with room for the
    gateway and at least one instance (a /30 or larger).
    """
    if not isinstance(subnet, str) or "/" not in subnet:
        return f"must be an IPv4 network in CIDR notation (e.g. 172.31.0.0/24), got '{subnet}'"
    try:
        network = ipaddress.IPv4Network(subnet, strict=False)
    except ValueError:
        return f"must be an IPv4 network in CIDR notation (e.g. 172.31.0.0/24), got '{subnet}'"
    if str(network) != subnet:
        return f"has host bits set: '{subnet}' (the network is {network})"
    if network.prefixlen > 30:
        return f"'{subnet}' has no room for the gateway and an instance (use /30 or larger)"
    return ""


def cc_network(zone: str, clusters: dict, config_dir: str, data_dir: str) -> dict:
    """The cluster ``zone`` of ``clusters`` (cloud_clusters) with its addresses worked out
    and the paths of its DHCP server (``config_dir``, ``data_dir``: the role's directories)."""
    if zone not in clusters:
        raise AnsibleFilterError(f"cc_network: cluster {zone} is not in cloud_clusters")
    cluster = clusters[zone]
    problem = cc_subnet_problem(cluster.get("subnet"))
    if problem:
        raise AnsibleFilterError(f"cc_network: cloud_clusters.{zone}.subnet {problem}")
    network = ipaddress.IPv4Network(cluster["subnet"])
    gateway = network[1]
    return {
        "zone": zone,
        "bridge": cluster.get("bridge", ""),
        "public_interface": cluster.get("public_interface") or "",
        "subnet": str(network),
        "network": str(network.network_address),
        "netmask": str(network.netmask),
        "prefix": network.prefixlen,
        "gateway": str(gateway),
        "gateway_cidr": f"{gateway}/{network.prefixlen}",
        "service": f"cloud-dnsmasq-{zone}",
        "config_dir": f"{config_dir}/{zone}",
        "config_file": f"{config_dir}/{zone}/dnsmasq.conf",
        "hosts_dir": f"{config_dir}/{zone}/hosts",
        "data_dir": f"{data_dir}/{zone}",
        "lease_file": f"{data_dir}/{zone}/dnsmasq.leases",
        "pid_file": f"{data_dir}/{zone}/dnsmasq.pid",
    }


class FilterModule:
    def filters(self) -> dict:
        return {"cc_subnet_problem": cc_subnet_problem, "cc_network": cc_network}
