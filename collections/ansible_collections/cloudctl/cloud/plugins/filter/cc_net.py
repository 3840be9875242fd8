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


def cc_pool_range(pool: object) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """(first, last) address of an elastic IP pool: a CIDR (its host addresses) or "A-B".
    ValueError when it is neither."""
    text = pool.strip() if isinstance(pool, str) else ""
    if "-" in text:
        first, last = (ipaddress.IPv4Address(part.strip()) for part in text.split("-", 1))
        if last < first:
            raise ValueError("ends before it starts")
        return first, last
    if "/" not in text:
        raise ValueError("not a CIDR or range")
    network = ipaddress.IPv4Network(text)  # strict: no host bits
    if network.prefixlen >= 31:  # /31 and /32: every address is a host address
        return network[0], network[-1]
    return network[1], network[-2]


def cc_public_ips_problem(zone: str, clusters: dict) -> str:
    """Why ``clusters[zone].public_ips`` (the zone's elastic IP pool) is wrong, or ''.

    Optional; when set it is an IPv4 CIDR or an inclusive range A-B, needs the zone's
    public_interface, and overlaps no cluster's subnet and no other cluster's pool."""
    cluster = clusters.get(zone) or {}
    pool = cluster.get("public_ips") or ""
    if not pool:
        return ""
    if not cluster.get("public_interface"):
        return f"'{pool}' needs public_interface (the CC holds the elastic IPs on it)"
    try:
        first, last = cc_pool_range(pool)
    except ValueError as exc:
        if str(exc) == "ends before it starts":
            return f"'{pool}' ends before it starts"
        try:
            if "/" in pool:
                network = ipaddress.IPv4Network(pool.strip(), strict=False)
                return f"'{pool}' has host bits set (the network is {network})"
        except (ValueError, TypeError):
            pass
        return (
            f"'{pool}' is not an IPv4 CIDR (like 198.51.100.0/28) or range "
            "(like 198.51.100.10-198.51.100.20)"
        )
    for other, spec in clusters.items():
        if not isinstance(spec, dict):
            continue
        try:
            net = ipaddress.IPv4Network(str(spec.get("subnet")))
            if first <= net.broadcast_address and net.network_address <= last:
                return f"'{pool}' overlaps cloud_clusters.{other}.subnet {net}"
        except ValueError:
            pass  # a broken subnet has its own message
        if other != zone and spec.get("public_ips"):
            try:
                o_first, o_last = cc_pool_range(spec["public_ips"])
            except ValueError:
                continue
            if first <= o_last and o_first <= last:
                return f"'{pool}' overlaps cloud_clusters.{other}.public_ips '{spec['public_ips']}'"
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
        "public_ips": cluster.get("public_ips") or "",
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
        return {
            "cc_subnet_problem": cc_subnet_problem,
            "cc_public_ips_problem": cc_public_ips_problem,
            "cc_network": cc_network,
        }
