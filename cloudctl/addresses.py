"""Elastic IPs: public addresses of a zone's pool, associated with instances by DNAT/SNAT on
the zone's CCs (modules/elastic_ip.py; both CCs of a pair hold the rules, the holder of the
zone's gateway address holds the public address). The instance keeps its private address.

Table "addresses": id eipalloc-..., public_ip, zone, cc (the zone's first CC), instance
(or None), private_ip,
event, owner fields. Pool "eip:<zone>": the zone's `public_ips` (cloud_clusters in the
inventory). Terminating an instance disassociates its address (it stays allocated).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cloudctl import cc_hosts, quotas, usage
from cloudctl.cloudconfig import public_ip_candidates
from cloudctl.errors import CapacityError, InputError, NotFound
from cloudctl.identity import current_owner, visible
from cloudctl.ids import new_id, parse_id
from cloudctl.runner import ProgressCallback, run_playbook
from cloudctl.services import CloudService
from cloudctl.state import PoolExhausted

TABLE = "addresses"
PLAYBOOK = "cloudctl.cloud.runtime.address_apply"
ASSOCIABLE_STATES = frozenset({"pending", "running", "stopping", "stopped"})


def pool(zone: str) -> str:
    return f"eip:{zone}"


def address_view(address: Mapping[str, Any], associated: bool = False) -> dict[str, Any]:
    """What cloudctl.cloud.runtime.address_apply (and instance_terminate) need."""
    return {
        "public_ip": address["public_ip"],
        "private_ip": address.get("private_ip") or "",
        "instance": address.get("instance") or "",
        "zone": address["zone"],
        "cc": address["cc"],
        "public_interface": address["public_interface"],
        "state": "present" if associated else "absent",
    }


class Addresses(CloudService):
    def list(self) -> list[dict[str, Any]]:
        records = [a for a in self.store.all(TABLE) if visible(a)]
        return sorted(records, key=lambda a: a["created"])

    def get(self, ref: str) -> dict[str, Any]:
        with self.store.snapshot() as snap:
            return _resolve(snap, ref)

    def allocate(self, zone: str | None = None) -> dict[str, Any]:
        zone = self.config.zone_or_default(zone)
        cluster = self.config.cluster(zone)
        if not cluster.public_ips or not cluster.public_interface or not cluster.ccs:
            raise InputError(f"zone {zone} has no elastic IP pool (public_ips in cloud_clusters)")
        owner = current_owner()
        aid = new_id("address")
        try:
            with self.store.transaction() as tx:
                quotas.check(tx, owner, {"ec2:quota-addressnumber": 1})
                public_ip = tx.allocate(pool(zone), public_ip_candidates(cluster.public_ips), aid)
                usage.record(tx, {"id": aid, **owner._asdict()}, "address", "allocated",
                             public_ip=str(public_ip))  # fmt: skip
                return tx.table(TABLE).insert(
                    {
                        "id": aid,
                        "account": owner.account,
                        "user": owner.user,
                        "public_ip": str(public_ip),
                        "zone": zone,
                        "cc": cluster.cc,
                        "public_interface": cluster.public_interface,
                        "instance": None,
                        "private_ip": None,
                    }
                )
        except PoolExhausted:
            raise CapacityError(f"zone {zone}: every elastic IP of the pool is allocated") from None

    def associate(
        self, ref: str, instance_id: str, progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        iid = parse_id(instance_id, "instance")
        with self.store.transaction() as tx:
            address = _resolve(tx, ref)
            instance = tx.table("instances").get(iid)
            if instance is None or not visible(instance):
                raise NotFound(f"instance {iid} does not exist")
            if instance["account"] != address["account"]:
                raise InputError(f"address {address['public_ip']} and instance {iid} are "
                                 "of different accounts")  # fmt: skip
            if instance["state"] not in ASSOCIABLE_STATES:
                raise InputError(f"instance {iid} is {instance['state']}: cannot associate")
            if instance["zone"] != address["zone"]:
                raise InputError(
                    f"address {address['public_ip']} is in zone {address['zone']}, instance "
                    f"{iid} in zone {instance['zone']}"
                )
            previous = [
                a
                for a in tx.table(TABLE).all()
                if a.get("instance") == iid and a["id"] != address["id"]
            ]
            if previous:
                raise InputError(
                    f"instance {iid} already has address {previous[0]['public_ip']}: "
                    "disassociate it first"
                )
        wanted = {**address, "instance": iid, "private_ip": instance["private_ip"]}
        self._apply([address_view(wanted, associated=True)], progress)
        with self.store.transaction() as tx:
            usage.record(tx, address, "address", "associated", instance_id=iid)
            return tx.table(TABLE).update(
                address["id"], instance=iid, private_ip=instance["private_ip"]
            )

    def disassociate(self, ref: str, progress: ProgressCallback | None = None) -> dict[str, Any]:
        address = self.get(ref)
        if not address.get("instance"):
            raise InputError(f"address {address['public_ip']} is not associated")
        self._apply([address_view(address)], progress)
        with self.store.transaction() as tx:
            usage.record(tx, address, "address", "disassociated")
            return tx.table(TABLE).update(address["id"], instance=None, private_ip=None)

    def release(self, ref: str, progress: ProgressCallback | None = None) -> dict[str, Any]:
        address = self.get(ref)
        if address.get("instance"):
            address = self.disassociate(ref, progress)
        with self.store.transaction() as tx:
            tx.release(pool(address["zone"]), address["public_ip"])
            usage.record(tx, address, "address", "released")
            return tx.table(TABLE).remove(address["id"])

    def _apply(self, views: list[dict[str, Any]], progress: ProgressCallback | None) -> None:
        """Run the change on every CC of the addresses' zones (a CC of a pair that fails is
        left for reconcile when the other did it)."""
        zones = cc_hosts.zone_ccs(self.config, views)
        result = run_playbook(
            self.settings,
            PLAYBOOK,
            extravars={"cloud_addresses": views},
            limit=",".join(sorted(cc_hosts.hosts(zones))),
            progress=progress,
            operation="address-apply",
        )
        cc_hosts.tolerate(result, zones).raise_for_failures()


def _resolve(tx, ref: str) -> dict[str, Any]:
    """An address by allocation id or public IP."""
    table = tx.table(TABLE)
    if ref.startswith("eipalloc-"):
        address = table.get(parse_id(ref, "address"))
    else:
        found = table.search(public_ip=ref.strip())
        address = found[0] if found else None
    if address is None or not visible(address):
        raise NotFound(f"address {ref!r} is not allocated")
    return address
