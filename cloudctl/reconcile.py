"""cloudctl reconcile: compare the state with what the hosts hold, report every drift, and
with fix=True repair it.

One read-only play (cloudctl.cloud.runtime.reconcile_scan, module cloud_resources) lists
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

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cloudctl import journal
from cloudctl.addresses import TABLE as ADDRESSES
from cloudctl.addresses import address_view
from cloudctl.ids import AttachmentState, InstanceState, VolumeState
from cloudctl.images import TABLE as IMAGES
from cloudctl.instances import TABLE as INSTANCES
from cloudctl.instances import end_instance, release_allocations
from cloudctl.runner import ProgressCallback, run_playbook
from cloudctl.services import CloudService
from cloudctl.state import utc_now
from cloudctl.volumes import TABLE as VOLUMES
from cloudctl.volumes import sc_view

SCAN_PLAYBOOK = "cloudctl.cloud.runtime.reconcile_scan"
FIX_PLAYBOOK = "cloudctl.cloud.runtime.reconcile_fix"
TASK_SCAN = "Find what the cloud made on the host"  # contract with reconcile_scan.yml

_I, _V, _A = InstanceState, VolumeState, AttachmentState
LIVE_INSTANCE = {_I.PENDING, _I.RUNNING, _I.STOPPING, _I.STOPPED, _I.SHUTTING_DOWN}
GONE_VOLUME = {_V.DELETED}
# The fix of an orphan the state never knew, reported but not done without --delete-orphans.
UNKNOWN_ONLY = " (unknown to the state: only with --delete-orphans)"
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
    owner: str = ""  # an allocation's instance


@dataclass
class _Plan:
    """What a fix changes on the hosts: the extra vars of reconcile_fix.yml."""

    orphan_instances: list[dict[str, str]] = field(default_factory=list)
    orphan_cache: list[dict[str, str]] = field(default_factory=list)
    orphan_volumes: list[dict[str, str]] = field(default_factory=list)
    unexported_volumes: list[dict[str, Any]] = field(default_factory=list)
    orphan_reservations: list[dict[str, str]] = field(default_factory=list)
    missing_reservations: list[dict[str, str]] = field(default_factory=list)
    orphan_addresses: list[dict[str, Any]] = field(default_factory=list)
    missing_addresses: list[dict[str, Any]] = field(default_factory=list)
    extra_attachments: list[dict[str, str]] = field(default_factory=list)

    def extravars(self) -> dict[str, list]:
        return {f"cloud_{name}": value for name, value in vars(self).items()}

    def hosts(self) -> set[str]:
        keys = ("node", "sc", "cc")
        return {
            item[k] for items in vars(self).values() for item in items for k in keys if k in item
        }


class Reconciler(CloudService):
    def run(
        self,
        fix: bool = False,
        progress: ProgressCallback | None = None,
        delete_orphans: bool = False,
        confirm: Callable[[list[Drift]], bool] = lambda orphans: False,
    ) -> list[Drift]:
        """Compare (and with `fix`, repair). Orphans the state never knew are removed only
        with `delete_orphans` and when `confirm` (given their drifts) says yes."""
        drifts = self._leftover_plays(fix)  # before anything is judged
        running = {d.resource for d in drifts if not d.fixed}
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
        drifts += [
            Drift("unscanned-host", f.host, f.host, f"{f} (its resources are not compared)", "none")
            for f in scan.failures
        ]
        cloud_id = self.config.cloud_id  # reading the config also checks the state's cloud
        for host, res in sorted(found.items()):
            if res.get("cloud_id", "") != cloud_id:  # never judge another cloud's resources
                del found[host]
                detail = f"belongs to cloud {res.get('cloud_id') or '(none)'}, not {cloud_id}"
                drifts.append(Drift("foreign-host", host, host, detail, "none"))
        clusters = self.config.clusters.values()
        interfaces = {cc: c.public_interface for c in clusters for cc in c.ccs}
        zones = {c.zone: c.ccs for c in clusters}
        plan, unknown = _Plan(), _Plan()
        with self.store.transaction() as tx:
            # An operation whose play still runs stays `running`: its resources are busy.
            interrupted = [e for e in journal.unfinished(tx) if e["id"] not in running]
            busy = _busy_resources(tx, scan_started, interrupted)
            drifts += _compare(tx, found, busy, interfaces, plan, fix, unknown, zones)
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
        strangers = [d for d in drifts if d.fix.endswith(UNKNOWN_ONLY)]
        if fix and delete_orphans and strangers and confirm(strangers):
            for d in strangers:
                d.fix, d.fixed = d.fix.removesuffix(UNKNOWN_ONLY), True
            for name, items in vars(unknown).items():
                getattr(plan, name).extend(items)
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
            released = self._release_cleaned(plan, set(failed))
            for d in drifts:  # held by remains that the fix removed: released now
                if d.kind == "orphan-allocation" and d.owner in released:
                    d.fixed = True
        return drifts

    def _release_cleaned(self, plan: _Plan, failed: set[str]) -> set[str]:
        """The IP and MAC of ended instances whose remains the fix removed from their node and
        CC: only now may a new instance get them (its reservation is gone). The instances
        whose allocations went."""
        cleaned = {i["name"] for i in plan.orphan_instances if i["node"] not in failed}
        cleaned -= {r["name"] for r in plan.orphan_reservations if r["cc"] in failed}
        with self.store.transaction() as tx:
            released = set()
            for iid in sorted(cleaned):
                record = tx.table(INSTANCES).get(iid)
                if record and record["state"] not in LIVE_INSTANCE:
                    release_allocations(tx, record)
                    released.add(iid)
        return released

    def _leftover_plays(self, fix: bool) -> list[Drift]:
        """Interrupted operations whose play still has processes. cloudctl/playguard.py ends
        a play within seconds of its cloudctl's death; whatever is left is ended here with
        fix (SIGTERM, then SIGKILL); a play that still runs keeps its operation's resources
        out of the comparison."""
        with self.store.snapshot() as view:
            interrupted = journal.unfinished(view)
        drifts = []
        for entry in interrupted:
            pids = journal.play_processes(entry)
            if not pids:
                continue
            left = journal.end_play(entry) if fix else pids
            detail = f"{entry['operation']}: {len(pids)} process(es) of its play still ran"
            if left:
                detail += f", {len(left)} still run (its resources are not compared)"
            drifts.append(
                Drift(
                    "leftover-play",
                    entry["id"],
                    "",
                    detail,
                    "end them (SIGTERM, then SIGKILL)",
                    fixed=not left,
                )
            )
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
    unknown: _Plan,
    zones: Mapping[str, Iterable[str]] | None = None,
) -> list[Drift]:
    """The drifts between the state and the scanned hosts; with fix, the state's side of
    each repair is made in `tx` and the hosts' side added to `plan`; what would remove
    things the state never knew goes to `unknown` instead. `zones`: zone -> its CCs (every
    CC of a zone must hold the zone's reservations and elastic-IP rules)."""
    drifts: list[Drift] = []

    def ccs_of(record: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple((zones or {}).get(record.get("zone", "")) or ()) or _own_cc(record)

    def drift(kind: str, resource: str, host: str, detail: str, action: str) -> None:
        drifts.append(Drift(kind, resource, host, detail, action, fixed=fix))

    def orphan(kind: str, resource: str, host: str, detail: str, action: str,
               known: bool, plan_field: str, item: dict[str, Any]) -> None:  # fmt: skip
        """Something on a host that the state does not own. --fix removes it when the state
        knows what it was; what the state never heard of may be the data of a cloud whose
        state is lost: only --delete-orphans removes it (after a confirmation)."""
        if known:
            drift(kind, resource, host, detail, action)
            getattr(plan, plan_field).append(item)
            return
        drifts.append(Drift(kind, resource, host, detail, f"{action}{UNKNOWN_ONLY}"))
        getattr(unknown, plan_field).append(item)

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
                _end_instance(tx, r, state, reason, plan, ccs_of(r))
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
        strangers = False  # an instance unknown to the state: its disk may use cache files
        for iid in sorted(leftovers - live_ids):
            record = instances.get(iid)
            strangers |= record is None
            known = f"{record['state']} in the state" if record else "unknown to the state"
            orphan(
                "orphan-instance",
                iid,
                node,
                f"{known}, still on {node}",
                "remove its domain, files and firewall",
                record is not None,
                "orphan_instances",
                {"name": iid, "node": node},
            )
        for sha in sorted(set(res["cache"]) - images):
            detail = "cache file of no registered image" + (
                ", maybe under an instance unknown to the state" if strangers else ""
            )
            orphan(
                "orphan-cache",
                sha,
                node,
                detail,
                "remove it",
                not strangers,
                "orphan_cache",
                {"sha256": sha, "node": node},
            )

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
            record = volumes.get(vid)
            orphan(
                "orphan-volume",
                vid,
                sc,
                f"{record['state']} in the state" if record else "unknown to the state",
                "remove its target and backing store",
                record is not None,
                "orphan_volumes",
                {"name": vid, "sc": sc},
            )

    drifts += _compare_attachments(volumes, nodes, set(live) - ended, busy | ended, plan, fix)

    # --- cluster controllers: DHCP reservations and elastic IPs ---------------------------
    # Every CC of a zone holds all its reservations and rules (a CC of a pair that was down
    # during an operation misses them until this fix).
    for cc, res in clusters.items():
        for zone, names in res["reservations"].items():
            for iid, r in sorted(live.items()):
                if r["zone"] != zone or iid in names or iid in busy | ended:
                    continue
                if cc not in ccs_of(r):
                    continue
                drift("missing-reservation", iid, cc, f"no DHCP reservation in {zone}", "add it")
                plan.missing_reservations.append(
                    {"name": iid, "hostname": iid, "mac": r["mac"], "ip": r["private_ip"],
                     "cc": cc, "zone": zone}
                )  # fmt: skip
            for iid in sorted(set(names) - live_ids):
                orphan(
                    "orphan-reservation",
                    iid,
                    cc,
                    f"DHCP reservation in {zone}",
                    "remove it",
                    instances.get(iid) is not None,
                    "orphan_reservations",
                    {"name": iid, "cc": cc, "zone": zone},
                )
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
            if a is None or a["private_ip"] != rule["private_ip"] or cc not in ccs_of(a):
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
            if cc in ccs_of(a) and ip not in rules:
                drift(
                    "missing-address",
                    ip,
                    cc,
                    f"associated with {a['instance']} in the state, no NAT rule",
                    "restore the NAT rules",
                )
                plan.missing_addresses.append({**address_view(a, associated=True), "cc": cc})

    # --- the state alone: allocations whose owner is gone ---------------------------------
    owners = live_ids | {a["id"] for a in addresses.all()}
    drifts += _compare_allocations(tx, owners, nodes, clusters, fix, ccs_of)
    return drifts


def _compare_allocations(
    tx,
    owners: set[str],
    nodes: Mapping[str, Any],
    clusters: Mapping[str, Any],
    fix: bool,
    ccs_of: Callable[[Mapping[str, Any]], tuple[str, ...]] | None = None,
) -> list[Drift]:
    """Pool values (IPs, MACs) whose owner is gone. A value goes back to its pool only once
    the owner's hosts were scanned and hold nothing of it (a failed launch whose clean-up
    failed): else a new instance could get an address whose reservation or domain is still
    there. This run's fix removes those; the next reconcile releases."""
    drifts: list[Drift] = []
    on_hosts = {
        i for r in nodes.values() for i in (*r["domains"], *r["instance_dirs"], *r["firewalls"])
    }
    on_hosts |= {i for r in clusters.values() for n in r["reservations"].values() for i in n}
    for pool in tx.pools():
        for value, owner in sorted(tx.allocations(pool).items()):
            if owner in owners:
                continue
            record = tx.table(INSTANCES).get(owner) or {}
            ccs = (ccs_of or _own_cc)(record) if record else ()
            held = owner in on_hosts or bool(
                (record.get("node") and record["node"] not in nodes)
                or any(cc not in clusters for cc in ccs)
            )
            detail = f"{pool} held by {owner}, which is gone"
            if held:
                detail += " (released once its hosts hold nothing of it)"
            drifts.append(
                Drift(
                    "orphan-allocation",
                    value,
                    "",
                    detail,
                    "release it",
                    fixed=fix and not held,
                    owner=owner,
                )
            )
            if fix and not held:
                tx.release(pool, value)
    return drifts


def _own_cc(record: Mapping[str, Any]) -> tuple[str, ...]:
    return (record["cc"],) if record.get("cc") else ()


def _compare_attachments(
    volumes, nodes: Mapping[str, Any], live: set[str], busy: set[str], plan: _Plan, fix: bool
) -> list[Drift]:
    """The volumes' attachments in the state against the iSCSI disks of the scanned domains
    (found by serial, the volume id). Where they disagree the domain is the truth: a disk on
    a live instance's domain is recorded as its attachment; an attachment is dropped (the
    volume made available) only when no scanned domain has the disk. An attach or detach
    whose outcome was unknown is settled the same way. A disk on a second domain is
    detached from it (one writer); the disk of a volume the state does not know is only
    reported."""
    drifts: list[Drift] = []

    def drift(kind: str, vid: str, host: str, detail: str, action: str, done: bool) -> None:
        drifts.append(Drift(kind, vid, host, detail, action, fixed=done))

    disks = {node: res["volumes"] for node, res in nodes.items() if "volumes" in res}
    holders: dict[str, list[tuple[str, str, str]]] = {}  # volume -> [(node, instance, device)]
    for node, domains in sorted(disks.items()):
        for iid, serials in sorted(domains.items()):
            if iid not in busy:
                for vid, dev in serials.items():
                    holders.setdefault(vid, []).append((node, iid, dev))
    for v in volumes.all():
        vid, att = v["id"], v.get("attachment")
        if v["state"] in GONE_VOLUME:
            continue  # a domain holding it is reported below
        held = holders.pop(vid, [])
        if vid in busy or (att and (att["node"] not in disks or att["instance"] in busy)):
            continue  # an operation works on it, or its node was not scanned
        usable = [h for h in held if h[1] in live]  # an orphan domain goes with its instance
        mine = [h for h in usable if att and h[:2] == (att["node"], att["instance"])]
        if not usable:
            if att:
                kind = "lost-attachment" if att["state"] == _A.ATTACHED else _unfinished(att)
                detail = f"{att['state']} to {att['instance']} in the state, no disk on it"
                if held:  # never available while a domain has the disk
                    detail += f"; still on {held[0][1]} (available once that is removed)"
                drift(kind, vid, att["node"], detail, "mark it available", fix and not held)
                if fix and not held:
                    state = _V.AVAILABLE.value if v["state"] == _V.IN_USE else v["state"]
                    volumes.update(vid, state=state, attachment=None, reason="")
            continue
        node, iid, dev = (mine or usable)[0]
        if not mine or att["state"] != _A.ATTACHED:
            if mine:
                kind, detail = _unfinished(att), f"{att['state']} to {iid}, its disk is there"
            elif att:
                kind = "lost-attachment"
                detail = f"{att['state']} to {att['instance']} in the state, its disk is on {iid}"
            else:
                kind, detail = "unrecorded-attachment", f"{v['state']}, its disk is on {iid}"
            drift(kind, vid, node, detail, f"record it attached to {iid}", fix)
            if fix:
                state = _V.IN_USE.value if v["state"] == _V.AVAILABLE else v["state"]
                attachment = {"instance": iid, "node": node, "device": dev, "state": "attached"}
                volumes.update(vid, state=state, attachment=attachment, reason="")
        for other_node, other, _ in usable:
            if other != iid:
                detail = f"attached to {iid}, its disk is also on {other}"
                drift("extra-attachment", vid, other_node, detail, f"detach it from {other}", fix)
                plan.extra_attachments.append(
                    {"volume": vid, "instance": other, "node": other_node}
                )
    for vid, held in sorted(holders.items()):
        for node, iid, _ in held:
            if iid in live:
                detail = f"disk of {iid}, a volume the state does not know (or deleted)"
                drift("orphan-attachment", vid, node, detail, "none", False)
    return drifts


def _unfinished(attachment: Mapping[str, Any]) -> str:
    return "unfinished-attach" if attachment["state"] == _A.ATTACHING else "unfinished-detach"


def _end_instance(
    tx,
    record: Mapping[str, Any],
    state: InstanceState,
    reason: str,
    plan: _Plan,
    ccs: Iterable[str],
) -> None:
    """Finish a lost or half-terminated instance: the state first, then the hosts (plan):
    its domain on its node, its reservation on every CC of its zone."""
    iid = record["id"]
    # Its IP and MAC go back once the fix removed its reservation (Reconciler.run).
    end_instance(tx, record, state, release=False, reason=reason)
    plan.orphan_instances.append({"name": iid, "node": record["node"]})
    for cc in ccs:
        plan.orphan_reservations.append({"name": iid, "cc": cc, "zone": record["zone"]})
