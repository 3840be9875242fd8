"""cloudctl reconcile: compare the state with what the hosts hold, report every drift, and
with fix=True repair it.

One read-only play (playbooks/runtime/reconcile_scan.yml, module cloud_resources) lists
what each host runs: libvirt domains, instance directories, firewall chains, cache files,
tgt targets and backing stores, DHCP reservations, elastic IP rules. Records that an
operation still in progress touches (a live journal entry, or changed after the scan began)
are left alone, as is everything on a host that could not be scanned.

The fix commits the state's side first (lost instances `failed` with their addresses
released, interrupted operations finished or marked), then runs one play that removes what
the state no longer owns. Reconcile converges: a fix whose play failed is found again and
retried by the next run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cloudctl import journal
from cloudctl.addresses import TABLE as ADDRESSES
from cloudctl.addresses import address_view
from cloudctl.ids import InstanceState, VolumeState
from cloudctl.images import TABLE as IMAGES
from cloudctl.instances import TABLE as INSTANCES
from cloudctl.instances import end_instance
from cloudctl.runner import ProgressCallback, run_playbook
from cloudctl.services import CloudService
from cloudctl.state import utc_now
from cloudctl.volumes import TABLE as VOLUMES
from cloudctl.volumes import sc_view

SCAN_PLAYBOOK = "playbooks/runtime/reconcile_scan.yml"
FIX_PLAYBOOK = "playbooks/runtime/reconcile_fix.yml"
TASK_SCAN = "Find what the cloud made on the host"  # contract with reconcile_scan.yml

_I, _V = InstanceState, VolumeState
LIVE_INSTANCE = {_I.PENDING, _I.RUNNING, _I.STOPPING, _I.STOPPED, _I.SHUTTING_DOWN}
GONE_VOLUME = {_V.DELETED}
# What libvirt reports (modules/cloud_resources.py) -> the instance state it means.
DOMAIN_TO_STATE = {"running": _I.RUNNING, "paused": _I.RUNNING, "stopped": _I.STOPPED}


@dataclass
class Drift:
    kind: str  # lost-instance, orphan-domain, ... (see Reconciler.compare)
    resource: str  # an id, a public IP or a sha256
    host: str  # where it was found ("" = the state only)
    detail: str
    fix: str  # what --fix does ("none": reported only)
    fixed: bool = False


@dataclass
class _Plan:
    """What a fix changes on the hosts: the extra vars of reconcile_fix.yml."""

    orphan_instances: list[dict[str, str]] = field(default_factory=list)
    orphan_cache: list[dict[str, str]] = field(default_factory=list)
    orphan_volumes: list[dict[str, str]] = field(default_factory=list)
    unexported_volumes: list[dict[str, Any]] = field(default_factory=list)
    orphan_reservations: list[dict[str, str]] = field(default_factory=list)
    orphan_addresses: list[dict[str, Any]] = field(default_factory=list)
    missing_addresses: list[dict[str, Any]] = field(default_factory=list)

    def extravars(self) -> dict[str, list]:
        return {f"cloud_{name}": value for name, value in vars(self).items()}

    def hosts(self) -> set[str]:
        keys = ("node", "sc", "cc")
        return {
            item[k] for items in vars(self).values() for item in items for k in keys if k in item
        }


class Reconciler(CloudService):
    def run(self, fix: bool = False, progress: ProgressCallback | None = None) -> list[Drift]:
        scan_started = utc_now()
        scan = run_playbook(
            self.settings,
            SCAN_PLAYBOOK,
            progress=progress,
            operation="reconcile-scan",
            journal=False,
        )
        found = {r.host: r.res for r in scan.task_results(TASK_SCAN) if r.status == "ok"}
        if not found and not scan.ok:
            scan.raise_for_failures()
        drifts = [
            Drift("unscanned-host", f.host, f.host, f"{f} (its resources are not compared)", "none")
            for f in scan.failures
        ]
        interfaces = {c.cc: c.public_interface for c in self.config.clusters.values()}
        plan = _Plan()
        with self.store.transaction() as tx:
            interrupted = journal.unfinished(tx)
            busy = _busy_resources(tx, scan_started, interrupted)
            drifts += _compare(tx, found, busy, interfaces, plan, fix)
            for entry in interrupted:
                drifts.append(
                    Drift(
                        "interrupted-operation",
                        entry["id"],
                        "",
                        f"{entry['operation']} started {entry['created'][:19]}, its cloudctl "
                        "process is gone",
                        "mark it reconciled",
                        fixed=fix,
                    )
                )
                if fix:
                    journal.close(tx, entry, "closed by cloudctl reconcile --fix")
        if fix and plan.hosts():
            result = run_playbook(
                self.settings,
                FIX_PLAYBOOK,
                extravars=plan.extravars(),
                limit=",".join(sorted(plan.hosts())),
                progress=progress,
                operation="reconcile-fix",
            )
            failed = {f.host: f for f in result.failures}
            for d in drifts:
                if d.host in failed:  # found again, and retried, by the next reconcile
                    d.fixed = False
                    d.detail += f" (fix failed: {failed[d.host]})"
        return drifts


def _busy_resources(tx, since: str, interrupted: Iterable[Mapping[str, Any]]) -> set[str]:
    """Ids an operation still works on: live journal entries, records changed since `since`."""
    gone = {e["id"] for e in interrupted}
    busy = {
        rid
        for e in tx.table(journal.TABLE).search(state=journal.RUNNING)
        if e["id"] not in gone
        for rid in e.get("resources", [])
    }
    for table in (INSTANCES, VOLUMES, ADDRESSES):
        busy |= {r["id"] for r in tx.table(table).all() if r.get("updated", "") > since}
    return busy


def _compare(
    tx,
    found: Mapping[str, Any],
    busy: set[str],
    interfaces: Mapping[str | None, str],
    plan: _Plan,
    fix: bool,
) -> list[Drift]:
    """The drifts between the state and the scanned hosts; with fix, the state's side of
    each repair is made in `tx` and the hosts' side added to `plan`."""
    drifts: list[Drift] = []

    def drift(kind: str, resource: str, host: str, detail: str, action: str) -> None:
        drifts.append(Drift(kind, resource, host, detail, action, fixed=fix))

    nodes = {h: r["nc"] for h, r in found.items() if r.get("nc")}
    storage = {h: r["sc"] for h, r in found.items() if r.get("sc")}
    clusters = {h: r["cc"] for h, r in found.items() if r.get("cc")}
    instances = tx.table(INSTANCES)
    addresses = tx.table(ADDRESSES)
    volumes = tx.table(VOLUMES)

    # --- instances: the state's view against each node's domains --------------------------
    live = {r["id"]: r for r in instances.all() if r["state"] in LIVE_INSTANCE}
    live_ids = set(live) | busy  # instances that may own things on the hosts
    ended: set[str] = set()  # lost or half-terminated: their things go with them
    for iid, r in live.items():
        if iid in busy or r["node"] not in nodes:
            continue
        domain = nodes[r["node"]]["domains"].get(iid)
        if r["state"] == _I.SHUTTING_DOWN or domain is None:
            if r["state"] == _I.SHUTTING_DOWN:
                kind, state, reason = "unfinished-terminate", _I.TERMINATED, ""
                detail = "terminate was interrupted"
            else:
                kind, state = "lost-instance", _I.FAILED
                detail = reason = f"{r['state']} in the state, no domain on {r['node']}"
            drift(kind, iid, r["node"], detail, f"mark it {state}, release its addresses")
            ended.add(iid)
            if fix:
                _end_instance(tx, r, state, reason, plan)
            continue
        actual = DOMAIN_TO_STATE.get(domain)
        if actual and actual != r["state"] and r["state"] != _I.STOPPING:
            drift(
                "state-mismatch",
                iid,
                r["node"],
                f"{r['state']} in the state, {domain} on {r['node']}",
                f"mark it {actual}",
            )
            if fix:
                instances.update(iid, state=actual.value, reason="")
    images = {i.get("sha256") for i in tx.table(IMAGES).all()}
    for node, res in nodes.items():
        leftovers = set(res["domains"]) | set(res["instance_dirs"]) | set(res["firewalls"])
        for iid in sorted(leftovers - live_ids):
            record = instances.get(iid)
            known = f"{record['state']} in the state" if record else "unknown to the state"
            drift(
                "orphan-instance",
                iid,
                node,
                f"{known}, still on {node}",
                "remove its domain, files and firewall",
            )
            plan.orphan_instances.append({"name": iid, "node": node})
        for sha in sorted(set(res["cache"]) - images):
            drift("orphan-cache", sha, node, "cache file of no registered image", "remove it")
            plan.orphan_cache.append({"sha256": sha, "node": node})

    # --- volumes: the state's view against each storage controller ------------------------
    for v in volumes.all():
        if v["id"] in busy or v["sc"] not in storage or v["state"] in GONE_VOLUME:
            continue
        res = storage[v["sc"]]
        stored, exported = v["id"] in res["stores"], v["id"] in res["targets"]
        if v["state"] in (_V.CREATING, _V.DELETING):
            end = _V.ERROR if v["state"] == _V.CREATING else _V.DELETED
            drift(
                f"unfinished-{'create' if end == _V.ERROR else 'delete'}",
                v["id"],
                v["sc"],
                f"{v['state']} was interrupted",
                f"remove it from {v['sc']}, mark it {end}",
            )
            plan.orphan_volumes.append({"name": v["id"], "sc": v["sc"]})
            if fix:
                volumes.update(
                    v["id"],
                    state=end.value,
                    attachment=None,
                    reason=f"{v['state']} was interrupted (cloudctl reconcile)",
                )
        elif v["state"] in (_V.AVAILABLE, _V.IN_USE) and not stored:
            detail = f"{v['state']} in the state, no backing store on {v['sc']}"
            drift("lost-volume", v["id"], v["sc"], detail, "mark it error")
            if fix:
                volumes.update(v["id"], state=_V.ERROR.value, reason=detail)
        elif v["state"] in (_V.AVAILABLE, _V.IN_USE) and not exported:
            drift(
                "unexported-volume",
                v["id"],
                v["sc"],
                f"no tgt target on {v['sc']}",
                "export it again",
            )
            plan.unexported_volumes.append(sc_view(v))
    kept = {v["id"] for v in volumes.all() if v["state"] not in GONE_VOLUME} | busy
    for sc, res in storage.items():
        for vid in sorted((set(res["targets"]) | set(res["stores"])) - kept):
            drift(
                "orphan-volume",
                vid,
                sc,
                "on the storage controller, not in the state",
                "remove its target and backing store",
            )
            plan.orphan_volumes.append({"name": vid, "sc": sc})

    # --- cluster controllers: DHCP reservations and elastic IPs ---------------------------
    for cc, res in clusters.items():
        for zone, names in res["reservations"].items():
            for iid in sorted(set(names) - live_ids):
                drift("orphan-reservation", iid, cc, f"DHCP reservation in {zone}", "remove it")
                plan.orphan_reservations.append({"name": iid, "cc": cc, "zone": zone})
    busy_ips = {a["public_ip"] for a in addresses.all() if a["id"] in busy}
    associated = {
        a["public_ip"]: a
        for a in addresses.all()
        if a.get("instance") in live
        and a["instance"] not in ended
        and a["public_ip"] not in busy_ips
    }
    for cc, res in clusters.items():
        rules = {e["public_ip"]: e for e in res["elastic_ips"] if e["public_ip"] not in busy_ips}
        for ip, rule in sorted(rules.items()):
            a = associated.get(ip)
            if a is None or a["private_ip"] != rule["private_ip"] or a["cc"] != cc:
                drift(
                    "orphan-address",
                    ip,
                    cc,
                    f"NAT to {rule['private_ip']} that the state does not associate",
                    "remove the NAT rules",
                )
                plan.orphan_addresses.append(
                    {"public_ip": ip, "cc": cc, "public_interface": interfaces.get(cc, "")}
                )
        for ip, a in sorted(associated.items()):
            if a["cc"] == cc and ip not in rules:
                drift(
                    "missing-address",
                    ip,
                    cc,
                    f"associated with {a['instance']} in the state, no NAT rule",
                    "restore the NAT rules",
                )
                plan.missing_addresses.append(address_view(a, associated=True))

    # --- the state alone: allocations whose owner is gone ---------------------------------
    owners = live_ids | {a["id"] for a in addresses.all()}
    for pool in tx.pools():
        for value, owner in sorted(tx.allocations(pool).items()):
            if owner not in owners:
                drift(
                    "orphan-allocation",
                    value,
                    "",
                    f"{pool} held by {owner}, which is gone",
                    "release it",
                )
                if fix:
                    tx.release(pool, value)
    return drifts


def _end_instance(
    tx, record: Mapping[str, Any], state: InstanceState, reason: str, plan: _Plan
) -> None:
    """Finish a lost or half-terminated instance: the state first, then the hosts (plan)."""
    iid = record["id"]
    end_instance(tx, record, state, reason=reason)
    plan.orphan_instances.append({"name": iid, "node": record["node"]})
    plan.orphan_reservations.append({"name": iid, "cc": record["cc"], "zone": record["zone"]})
