"""Availability zones: the clusters of the cloud configuration, with their free capacity."""

from __future__ import annotations

import ipaddress
from typing import Any

from cloudctl.addresses import ASSOCIABLE_STATES
from cloudctl.addresses import TABLE as ADDRESSES
from cloudctl.instances import TABLE as INSTANCES
from cloudctl.instances import ip_pool
from cloudctl.scheduler import Free, capacity, free_resources
from cloudctl.services import CloudService


class Zones(CloudService):
    def list(self, verbose: bool = False) -> list[dict[str, Any]]:
        """One row per zone; with verbose, one more per instance type: free / max, as
        `euca-describe-availability-zones verbose` shows them."""
        config = self.config
        instances = self.store.all("instances")
        rows: list[dict[str, Any]] = []
        for zone in sorted(config.clusters):
            cluster = config.clusters[zone]
            rows.append(
                {
                    "zone": zone,
                    "state": "available" if cluster.cc and cluster.nodes else "unavailable",
                    "cc": cluster.cc,
                    "subnet": cluster.subnet,
                    "nodes": len(cluster.nodes),
                }
            )
            if not verbose:
                continue
            free = free_resources(cluster.nodes, instances, config.instance_types)
            for itype in config.instance_types.values():
                rows.append(
                    {
                        "zone": f"|- {itype.name}",
                        "free": sum(capacity(f, itype) for f in free.values()),
                        "max": sum(
                            capacity(Free(n.vcpus, n.memory_mb), itype) for n in cluster.nodes
                        ),
                        "cpus": itype.cpus,
                        "memory_mb": itype.memory_mb,
                        "disk_gb": itype.disk_gb,
                    }
                )
        return rows

    def network(self, zone: str | None = None) -> list[dict[str, Any]]:
        """What every CC of a zone holds for its instances, one row per instance that has a
        DHCP reservation (pending, running, stopping, stopped): its MAC and private IP, and its
        elastic IP when one is associated. Rows fit cloudctl.cloud.cc_instances (name, zone,
        mac, ip, hostname); the deploy gives them to a CC that joined a pair."""
        zones = [self.config.cluster(zone).zone] if zone else sorted(self.config.clusters)
        with self.store.snapshot() as snap:
            instances = [i for i in snap.table(INSTANCES).all() if i["state"] in ASSOCIABLE_STATES]
            addresses = {a["instance"]: a for a in snap.table(ADDRESSES).all() if a.get("instance")}
        rows = []
        for record in sorted(instances, key=lambda i: (i["zone"], i["id"])):
            if record["zone"] not in zones:
                continue
            address = addresses.get(record["id"], {})
            rows.append(
                {
                    "zone": record["zone"],
                    "name": record["id"],
                    "hostname": record["id"],
                    "mac": record["mac"],
                    "ip": record["private_ip"],
                    "public_ip": address.get("public_ip", ""),
                    "public_interface": address.get("public_interface", ""),
                }
            )
        return rows

    def free_private_ips(self) -> dict[str, int]:
        """Per zone, how many private addresses are left for instances: the subnet's host
        addresses but the gateway (instances.ip_candidates), less those taken."""
        free = {}
        with self.store.snapshot() as snap:
            for zone, cluster in self.config.clusters.items():
                subnet = ipaddress.ip_network(cluster.subnet, strict=False)
                size = subnet.num_addresses
                hosts = size - 2 if subnet.prefixlen < subnet.max_prefixlen - 1 else size
                gateway = ipaddress.ip_address(cluster.gateway) in subnet
                free[zone] = hosts - int(gateway) - len(snap.allocations(ip_pool(zone)))
        return free
