"""Instances: plan (node, IP, MAC), record, run the runtime play, record the outcome.

Table "instances". A record: id, reservation, launch_index, image_id, kernel_id, ramdisk_id,
type, vcpus, memory_mb, zone, node, cc, private_ip, mac, keypair, state, reason, event
(the short id of the operation that last changed it: `cloudctl event show`), owner fields.

Pools: "mac" (cloud-wide) and "ip:<zone>" (the zone's subnet minus the CC's gateway).
A launch records every instance `pending` and allocates its IP and MAC in ONE transaction,
then runs cloudctl.cloud.runtime.instance_run once for all of them. Instances whose host or
task failed are cleaned up on the hosts (instance_terminate.yml) and end `failed` with the
reason; they give their IP and MAC back only once that clean-up succeeded (if it failed, the
reason says so and `cloudctl reconcile --fix` finishes them later).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import netaddr

from cloudctl import cc_hosts, journal, keypairs, launches, quotas, usage, walrus
from cloudctl import groups as sg
from cloudctl import images as images_service
from cloudctl.addresses import TABLE as ADDRESSES
from cloudctl.addresses import address_view
from cloudctl.errors import (
    CapacityError,
    CloudError,
    HostFailed,
    IncorrectState,
    InputError,
    NotFound,
    PlaybookError,
)
from cloudctl.identity import Principal, acting_as, current_owner, shared, visible
from cloudctl.ids import InstanceState, new_id, parse_id, require_transition
from cloudctl.runner import PlayResult, ProgressCallback, run_playbook
from cloudctl.scheduler import free_resources, place
from cloudctl.services import CloudService, Recorded
from cloudctl.state import PoolExhausted

TABLE = "instances"
SCHEDULER = "scheduler"  # one record per zone: the node that got the last instance
MAC_POOL = "mac"
MAC_PREFIX = "d0:0d"  # as Eucalyptus
MAX_COUNT = 64
MAX_USER_DATA = 16 * 1024  # EC2's limit
URL_EXPIRY = 3600
RUN_PLAYBOOK = "cloudctl.cloud.runtime.instance_run"
TERMINATE_PLAYBOOK = "cloudctl.cloud.runtime.instance_terminate"
POWER_PLAYBOOK = "cloudctl.cloud.runtime.instance_power"
CONSOLE_PLAYBOOK = "cloudctl.cloud.runtime.instance_console"
PLAY_OPERATION = "instance-run"  # the journal's name of a launch round's play
REQUEST_OPERATION = "instance-run-request"  # ... of a launch request while it waits
# Task names the service reads results of (contract with the runtime playbooks).
TASK_START = "Start the instances"  # cloudctl.cloud.node_instances: one result per NC
TASK_REMOVE = "Remove the instances"  # the same, in instance_terminate.yml
TASK_POWER = "Set the power state"  # the same, in instance_power.yml
TASK_CONSOLE = "Read the console log"

_S = InstanceState


def ip_pool(zone: str) -> str:
    return f"ip:{zone}"


def ip_candidates(subnet: str, gateway: str) -> Iterable[netaddr.IPAddress]:
    """Every usable address of the subnet but the gateway, lowest first."""
    for address in netaddr.IPNetwork(subnet).iter_hosts():
        if str(address) != gateway:
            yield address


def mac_candidates() -> Iterable[str]:
    while True:
        tail = secrets.token_bytes(4)
        yield ":".join([MAC_PREFIX, *(f"{b:02x}" for b in tail)])


@dataclass
class LaunchResult:
    instances: list[dict[str, Any]]
    event: str
    cache: list[dict[str, Any]] = field(default_factory=list)  # per node and image: hit/miss
    check: PlayResult | None = None  # --check: what would change


class Instances(CloudService):
    # --- reads --------------------------------------------------------------------------

    def get(self, instance_id: str) -> dict[str, Any]:
        iid = parse_id(instance_id, "instance")
        record = self.store.get(TABLE, iid)
        if record is None or not visible(record):
            raise NotFound(f"instance {iid} does not exist")
        return record

    def list(self, state: str | None = None, zone: str | None = None) -> list[dict[str, Any]]:
        if state is not None and state not in {s.value for s in _S}:
            raise InputError(f"bad state {state!r}: one of {', '.join(s.value for s in _S)}")
        filters = {k: v for k, v in {"state": state, "zone": zone}.items() if v}
        records = [r for r in self.store.search(TABLE, **filters) if visible(r)]
        return sorted(records, key=lambda r: (r["created"], r.get("launch_index", 0)))

    # --- run ----------------------------------------------------------------------------

    def run(
        self,
        image_id: str,
        type_name: str,
        *,
        count: int = 1,
        zone: str | None = None,
        keypair: str | None = None,
        user_data: bytes | None = None,
        groups: Iterable[str] = (),
        check: bool = False,
        progress: ProgressCallback | None = None,
        on_recorded: Recorded | None = None,
    ) -> LaunchResult:
        """Launch `count` instances in one play. `on_recorded(records)` is called once they
        are recorded `pending`, before the play (the API answers then)."""
        config = self.config
        itype = config.instance_type(type_name)
        if not 1 <= count <= MAX_COUNT:
            raise InputError(f"bad count {count}: must be 1 to {MAX_COUNT}")
        zone = config.zone_or_default(zone)
        cluster = config.cluster(zone)
        if not cluster.ccs or not cluster.nodes:
            raise CapacityError(f"zone {zone} has no cluster controller or no node controller")
        user_text = _user_data_text(user_data)
        emi = self._machine_image(image_id)
        public_keys = [self._public_key(keypair)] if keypair else []

        owner = current_owner()
        reservation = f"r-{secrets.token_hex(4)}"
        try:
            with self.store.transaction() as tx:
                table = tx.table(TABLE)
                group_ids = sorted({sg.resolve(tx, g)["id"] for g in groups or [sg.DEFAULT]})
                rules_before = sg.all_effective_rules(tx)
                free = free_resources(cluster.nodes, table.all(), config.instance_types)
                sched = tx.table(SCHEDULER).get(zone) or {}
                nodes = place(free, itype, count, config.scheduling_policy, sched.get("last_node"))
                quotas.check(tx, owner, _instance_quota(itype, count))
                records = []
                for index, node in enumerate(nodes):
                    iid = new_id("instance")
                    ip = tx.allocate(
                        ip_pool(zone), ip_candidates(cluster.subnet, cluster.gateway), iid
                    )
                    mac = tx.allocate(MAC_POOL, mac_candidates(), iid)
                    records.append(
                        table.insert(
                            {
                                "id": iid,
                                "account": owner.account,
                                "user": owner.user,
                                "reservation": reservation,
                                "launch_index": index,
                                "image_id": emi["id"],
                                "kernel_id": emi.get("kernel_id"),
                                "ramdisk_id": emi.get("ramdisk_id"),
                                "type": itype.name,
                                "vcpus": itype.cpus,
                                "memory_mb": itype.memory_mb,
                                "disk_gb": itype.disk_gb,
                                "zone": zone,
                                "node": node,
                                "cc": cluster.cc,
                                "private_ip": str(ip),
                                "mac": mac,
                                "keypair": keypair,
                                "groups": group_ids,
                                "state": _S.PENDING.value,
                                "reason": "",
                            }
                        )
                    )
                # The new members may widen other instances' source-group rules.
                firewalls = sg.changed_firewalls(tx, rules_before, sg.all_effective_rules(tx))
                if check:
                    raise _Rollback(records, firewalls)
                _save_last_node(tx, zone, nodes[-1])
        except _Rollback as planned:
            records, firewalls = planned.records, planned.firewalls
        except PoolExhausted as exc:
            raise CapacityError(f"zone {zone}: no free private address ({exc})") from None

        if on_recorded is not None:
            on_recorded(records)
        extravars = self._run_vars(records, emi, public_keys, user_text, firewalls)
        zones = {zone: list(cluster.ccs)}
        hosts = sorted({*cluster.ccs, *(h["node"] for h in [*records, *firewalls])})
        if check:  # never coalesced: it changes nothing and answers for this request only
            result = run_playbook(
                self.settings,
                RUN_PLAYBOOK,
                extravars=extravars,
                limit=",".join(hosts),
                check=True,
                progress=progress,
                operation="instance-run-check",
            )
            result = cc_hosts.tolerate(result, zones)
            result.raise_for_failures()
            return LaunchResult(records, result.event_id, check=result)
        request = {"instances": [r["id"] for r in records], "vars": extravars,
                   "hosts": hosts, "zones": zones}  # fmt: skip
        outcome = self._launch(request, progress)
        final = [self.get(r["id"]) for r in records]
        if outcome.get("error"):
            raise PlaybookError(outcome["error"])
        return LaunchResult(final, outcome["event"], outcome.get("cache", []))

    def _launch(self, request: dict[str, Any], progress: ProgressCallback | None) -> dict:
        """Queue a launch request and wait for its outcome, playing launch rounds while
        nobody else does (cloudctl/launches.py). While it waits, the request is an operation
        of the journal (REQUEST_OPERATION): reconcile leaves its pending instances alone, and
        a round skips the request once its requester is gone (reconcile settles them)."""
        waiting = secrets.token_hex(4)
        journal.begin(self.settings, waiting, REQUEST_OPERATION, ",".join(request["hosts"]),
                      request["instances"])  # fmt: skip
        outcome: dict[str, Any] = {"error": "interrupted"}
        try:
            request_id = launches.submit(self.store, {**request, "journal": waiting})
            outcome = launches.await_outcome(
                self.store, request_id, lambda batch: self._play_round(batch, progress)
            )
        finally:
            journal.finish(self.settings, waiting, not outcome.get("error"), outcome["error"])
        return outcome

    def _play_round(
        self, batch: list[dict[str, Any]], progress: ProgressCallback | None
    ) -> dict[str, dict[str, Any]]:
        """ONE instance_run play for the requests of a launch round; each request's
        instances recorded as _record_launch records a launch; each request's outcome."""
        with self.store.snapshot() as snap:
            interrupted = journal.unfinished(snap)
            instances = snap.table(TABLE)
            pending = {
                req["id"]: [r for i in req["instances"] if (r := instances.get(i))
                            and r["state"] == _S.PENDING]
                for req in batch
            }  # fmt: skip
        # A round whose runner died may have left its play behind: end it before the same
        # instances are played again.
        claimed = {i for req in batch for i in req["instances"]}
        for entry in interrupted:
            if entry["operation"] == PLAY_OPERATION and claimed & set(entry["resources"]):
                journal.end_play(entry)
        gone = {entry["id"] for entry in interrupted}
        outcomes: dict[str, dict[str, Any]] = {}
        live = []
        for req in batch:
            if req["journal"] in gone:
                outcomes[req["id"]] = {"error": "its cloudctl is gone"}
            elif len(pending[req["id"]]) < len(req["instances"]):  # settled meanwhile
                outcomes[req["id"]] = {"event": "", "error": ""}
            else:
                live.append(req)
        if not live:
            return outcomes
        zones = {z: ccs for req in live for z, ccs in req["zones"].items()}
        result = run_playbook(
            self.settings,
            RUN_PLAYBOOK,
            extravars=launches.merge_vars([req["vars"] for req in live]),
            limit=",".join(sorted({h for req in live for h in req["hosts"]})),
            progress=progress,
            operation=PLAY_OPERATION,
        )
        result = cc_hosts.tolerate(result, zones)
        for req in live:
            with acting_as(Principal(req["account"], req["user"])):
                try:
                    launch = self._record_launch(pending[req["id"]], result, result.event_id, zones)
                except CloudError as exc:  # every instance of the request failed
                    outcomes[req["id"]] = {"event": result.event_id, "error": str(exc)}
                else:
                    outcomes[req["id"]] = {"event": launch.event, "cache": launch.cache,
                                           "error": ""}  # fmt: skip
        return outcomes

    def _record_launch(
        self,
        records: list[dict[str, Any]],
        result: PlayResult,
        event: str,
        zones: Mapping[str, tuple[str, ...]] | None = None,
    ) -> LaunchResult:
        outcomes = _instance_outcomes(result, TASK_START)
        failures = {f.host: f for f in result.failures}
        ccs_failed = {r["id"]: _first_failure(failures, *_ccs(zones, r)) for r in records}
        ok = [r for r in records if outcomes.get(r["id"]) == "" and not ccs_failed[r["id"]]]
        failed = [r for r in records if r not in ok]
        reasons = {}
        for r in failed:  # the instance's own reason, else its CC's or its NC's failure
            failure = outcomes.get(r["id"]) or ccs_failed[r["id"]] or failures.get(r["node"])
            reasons[r["id"]] = str(failure) if failure else (result.error or "launch failed")
        with self.store.transaction() as tx:
            table = tx.table(TABLE)
            rules_before = sg.all_effective_rules(tx)
            for r in ok:
                table.update(r["id"], state=_S.RUNNING.value, event=event)
                _record_started(tx, r)
            for r in failed:  # their IP and MAC are kept until the hosts are clean
                table.update(r["id"], state=_S.FAILED.value, reason=reasons[r["id"]], event=event)
            generation = sg.next_generation(tx) if failed else None
            rules_after = sg.all_effective_rules(tx)
            firewalls = sg.changed_firewalls(tx, rules_before, rules_after, generation)
        if failed:
            cleanup = self._cleanup_hosts(failed, firewalls, generation)
            with self.store.transaction() as tx:
                for r in failed:
                    problem = _host_failure(cleanup, *_ccs(zones, r), r["node"])
                    if not problem:
                        release_allocations(tx, r)
                        continue
                    tx.table(TABLE).update(
                        r["id"],
                        reason=f"{reasons[r['id']]}; its clean-up failed ({problem}): its IP and "
                        "MAC stay allocated until `cloudctl reconcile --fix` finishes it",
                    )
        final = [self.get(r["id"]) for r in records]
        cache = [
            {
                "node": t.host,
                "sha256": image.get("sha256", ""),
                "hit": bool(image.get("hit")),
                "bytes": image.get("downloaded_bytes", 0),
                "seconds": image.get("seconds", 0),
            }
            for t in result.task_results(TASK_START)
            for image in t.res.get("images") or []
        ]
        if failed and not ok:
            result.raise_for_failures()
        return LaunchResult(final, event, cache)

    def _cleanup_hosts(
        self, records: list[dict[str, Any]], firewalls: list[dict], generation: int | None
    ) -> PlayResult:
        """Remove whatever a failed launch left on the hosts."""
        ccs = cc_hosts.hosts(cc_hosts.zone_ccs(self.config, records))
        hosts = sorted({*ccs, *(h["node"] for h in [*records, *firewalls])})
        return run_playbook(
            self.settings,
            TERMINATE_PLAYBOOK,
            extravars={
                "cloud_instances": [{**_host_view(r), "generation": generation} for r in records],
                "cloud_firewalls": firewalls,
            },
            limit=",".join(hosts),
            operation="instance-cleanup",
        )

    def _run_vars(
        self,
        records: list[dict[str, Any]],
        emi: Mapping[str, Any],
        public_keys: list[str],
        user_data: str,
        firewalls: list[dict[str, Any]],
    ) -> dict[str, Any]:
        parts = {"image": emi}
        for kind, key in (("kernel", "kernel_id"), ("ramdisk", "ramdisk_id")):
            if emi.get(key):
                parts[kind] = self._image(emi[key])
        client = walrus.client(self.config.walrus)
        files = [
            {"role": kind, "sha256": img["sha256"], "size": img["size"]}
            for kind, img in parts.items()
        ]
        urls = {  # apart: the module's image_urls is no_log, its images are shown
            img["sha256"]: walrus.presigned_get(client, walrus.IMAGES, img["sha256"], URL_EXPIRY)
            for img in parts.values()
        }
        nodes: dict[str, dict[str, Any]] = {}
        for r in records:
            node = nodes.setdefault(r["node"], {"images": files, "instances": []})
            node["instances"].append(
                {
                    **_host_view(r),
                    "vcpus": r["vcpus"],
                    "memory_mb": r["memory_mb"],
                    "disk_gb": r["disk_gb"],
                    "image_sha256": emi["sha256"],
                    "image_format": emi.get("format", "raw"),
                    "kernel_sha256": parts["kernel"]["sha256"] if "kernel" in parts else "",
                    "ramdisk_sha256": parts["ramdisk"]["sha256"] if "ramdisk" in parts else "",
                    "public_keys": public_keys,
                }
            )
        return {
            "cloud_nodes": nodes,
            "cloud_image_urls": urls,
            # Apart from the instances (a task result shows its arguments); redacted in the
            # run directory's extravars.json like every field whose name says user_data.
            "cloud_user_data": {r["id"]: user_data for r in records} if user_data else {},
            "cloud_instances": [_host_view(r) for r in records],
            "cloud_firewalls": firewalls,  # applied before the new instances start
        }

    def _machine_image(self, image_id: str) -> dict[str, Any]:
        emi = self._image(parse_id(image_id, "image"))
        if emi.get("state", "available") != "available":
            raise InputError(f"image {emi['id']} is {emi['state']}")
        return emi

    def _image(self, image_id: str) -> dict[str, Any]:
        record = self.store.get(images_service.TABLE, image_id)
        if record is None or not shared(record):
            raise NotFound(f"image {image_id} does not exist")
        return record

    def _public_key(self, name: str) -> str:
        with self.store.snapshot() as snap:
            return keypairs.find(snap, name)["public_key"]

    # --- terminate, stop, start, reboot, console ----------------------------------------

    def terminate(
        self,
        instance_ids: Iterable[str],
        progress: ProgressCallback | None = None,
        on_recorded: Recorded | None = None,
    ) -> list[dict[str, Any]]:
        ids = [parse_id(i, "instance") for i in instance_ids]
        with self.store.transaction() as tx:
            table = tx.table(TABLE)
            rules_before = sg.all_effective_rules(tx)
            records = []
            for iid in ids:
                record = table.get(iid)
                if record is None or not visible(record):
                    raise NotFound(f"instance {iid} does not exist")
                if record["state"] == _S.TERMINATED:
                    continue
                if record["state"] == _S.PENDING:  # its launch play may still start it
                    raise IncorrectState(
                        f"instance {iid} is pending: terminate it once it is running (a launch "
                        "that was interrupted: `cloudctl reconcile --fix` ends it first)"
                    )
                require_transition("instance", record["state"], _S.SHUTTING_DOWN, iid)
                records.append(table.update(iid, state=_S.SHUTTING_DOWN.value))
            gone = {r["id"] for r in records}
            volumes = [
                v
                for v in tx.table("volumes").all()
                if (v.get("attachment") or {}).get("instance") in gone
            ]
            addresses = [a for a in tx.table(ADDRESSES).all() if a.get("instance") in gone]
            # Members leaving narrow other instances' source-group rules.
            generation = sg.next_generation(tx) if records else None
            rules_after = sg.all_effective_rules(tx)
            firewalls = sg.changed_firewalls(tx, rules_before, rules_after, generation)
        if on_recorded is not None:
            on_recorded([self.get(i) for i in ids])
        if not records:
            return [self.get(i) for i in ids]
        by_instance: dict[str, list[dict[str, Any]]] = {}
        for v in volumes:
            by_instance.setdefault(v["attachment"]["instance"], []).append(
                {"volume": v["id"], "node": v["attachment"]["node"]}
            )
        views = [
            {**_host_view(r), "volumes": by_instance.get(r["id"], []), "generation": generation}
            for r in records
        ]
        zones = cc_hosts.zone_ccs(self.config, [*records, *addresses])
        hosts = sorted({*cc_hosts.hosts(zones), *(h["node"] for h in [*records, *firewalls])})
        result = run_playbook(
            self.settings,
            TERMINATE_PLAYBOOK,
            extravars={
                "cloud_instances": views,
                "cloud_firewalls": firewalls,
                "cloud_addresses": [address_view(a) for a in addresses],
            },
            limit=",".join(hosts),
            progress=progress,
            operation="instance-terminate",
        )
        behind = {f.host for f in cc_hosts.out_of_sync(result, zones)}
        result = cc_hosts.tolerate(result, zones)
        event = result.event_id
        failed_hosts = {f.host: f for f in result.failures}
        removed = _instance_outcomes(result, TASK_REMOVE)
        with self.store.transaction() as tx:
            table = tx.table(TABLE)
            for r in records:
                # Its CCs released it and its node removed it (whatever happened to the
                # node's other instances); a node that did not report it: the node's outcome.
                failure = _first_failure(failed_hosts, *self.config.ccs_of(r))
                outcome = removed.get(r["id"])
                failure = failure or (failed_hosts.get(r["node"]) if outcome is None else outcome)
                if failure:  # still shutting-down: terminate again once the host is back
                    table.update(r["id"], reason=str(failure), event=event)
                    continue
                # A CC of the pair missed it: it may still hold the reservation, so the IP
                # and MAC stay allocated until reconcile --fix has removed it there.
                keep = behind.intersection(self.config.ccs_of(r))
                end_instance(tx, r, _S.TERMINATED, release=not keep, reason="", event=event)
        result.raise_for_failures()
        return [self.get(i) for i in ids]

    def power(
        self,
        instance_ids: Iterable[str],
        action: str,
        progress: ProgressCallback | None = None,
        on_recorded: Recorded | None = None,
    ) -> list[dict[str, Any]]:
        """stop, start or reboot instances (EC2's StopInstances, StartInstances, Reboot...)."""
        wanted = {"stop": _S.STOPPING, "start": _S.PENDING, "reboot": None}[action]
        ids = [parse_id(i, "instance") for i in instance_ids]
        records = [self.get(i) for i in ids]
        for r in records:
            if action == "reboot":
                if r["state"] != _S.RUNNING:
                    raise InputError(f"instance {r['id']} is {r['state']}: cannot reboot")
            else:
                require_transition("instance", r["state"], wanted, r["id"])
        module_state = {"stop": "stopped", "start": "running", "reboot": "rebooted"}[action]
        if wanted is not None:
            with self.store.transaction() as tx:
                if action == "start":
                    quotas.check(tx, current_owner(), {_ACTIVE_QUOTA: len(records)})
                for r in records:
                    tx.table(TABLE).update(r["id"], state=wanted.value)
        if on_recorded is not None:
            on_recorded([self.get(i) for i in ids])
        result = run_playbook(
            self.settings,
            POWER_PLAYBOOK,
            extravars={
                "cloud_instances": [_host_view(r) for r in records],
                "cloud_power_state": module_state,
            },
            limit=",".join(sorted({r["node"] for r in records})),
            progress=progress,
            operation=f"instance-{action}",
        )
        event = result.event_id
        failed_hosts = {f.host: f for f in result.failures}
        outcomes = _instance_outcomes(result, TASK_POWER)
        done = {"stop": _S.STOPPED, "start": _S.RUNNING, "reboot": _S.RUNNING}[action]
        with self.store.transaction() as tx:
            for r in records:
                # Its own outcome (a node changes each of its instances on its own), else
                # its node's.
                outcome = outcomes.get(r["id"])
                failure = failed_hosts.get(r["node"]) if outcome is None else outcome
                if failure:  # back to where it was, with the reason
                    tx.table(TABLE).update(r["id"], state=r["state"], reason=str(failure))
                else:
                    tx.table(TABLE).update(r["id"], state=done.value, reason="", event=event)
                    if action == "stop":
                        usage.record(tx, r, "instance", "stopped")
                    elif action == "start":
                        _record_started(tx, r)
        result.raise_for_failures()
        return [self.get(i) for i in ids]

    def console(self, instance_id: str) -> str:
        record = self.get(instance_id)
        if record["state"] in (_S.TERMINATED, _S.FAILED):
            raise InputError(f"instance {record['id']} is {record['state']}: no console")
        result = run_playbook(
            self.settings,
            CONSOLE_PLAYBOOK,
            extravars={"cloud_instance": _host_view(record)},
            limit=record["node"],
            operation="instance-console",
            journal=False,
        )
        result.raise_for_failures()
        for task in result.task_results(TASK_CONSOLE):
            if task.res.get("content"):
                return base64.b64decode(task.res["content"]).decode("utf-8", "replace")
        return ""


class _Rollback(Exception):
    """Leaves a transaction without committing (check mode plans but records nothing)."""

    def __init__(self, records: list[dict[str, Any]], firewalls: list[dict[str, Any]]) -> None:
        self.records = records
        self.firewalls = firewalls
        super().__init__("check mode")


_ACTIVE_QUOTA = "ec2:quota-vminstanceactivenumber"


def _instance_quota(itype: Any, count: int) -> dict[str, int]:
    return {
        "ec2:quota-vminstancenumber": count,
        _ACTIVE_QUOTA: count,
        "ec2:quota-cputotalsize": count * itype.cpus,
        "ec2:quota-memorytotalsize": count * itype.memory_mb,
        "ec2:quota-disktotalsize": count * itype.disk_gb,
    }


def _record_started(tx, record: Mapping[str, Any]) -> None:
    usage.record(
        tx, record, "instance", "started", type=record["type"], vcpus=record["vcpus"],
        memory_mb=record["memory_mb"], disk_gb=record.get("disk_gb", 0),
    )  # fmt: skip


def _user_data_text(user_data: bytes | None) -> str:
    if not user_data:
        return ""
    if len(user_data) > MAX_USER_DATA:
        raise InputError(f"user data is {len(user_data)} bytes: at most {MAX_USER_DATA}")
    try:
        return user_data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("user data must be UTF-8 text") from None


def _host_view(record: Mapping[str, Any]) -> dict[str, Any]:
    """What the runtime playbooks need to know of an instance."""
    return {
        "name": record["id"],
        "hostname": record["id"],
        "node": record["node"],
        "cc": record["cc"],
        "zone": record["zone"],
        "mac": record["mac"],
        "ip": record["private_ip"],
        "tap": sg.tap_name(record["id"]),
    }


def _save_last_node(tx, zone: str, node: str) -> None:
    sched = tx.table(SCHEDULER)
    owner = current_owner()
    if sched.get(zone) is None:
        sched.insert({"id": zone, "account": owner.account, "user": owner.user, "last_node": node})
    else:
        sched.update(zone, last_node=node)


def release_allocations(tx, record: Mapping[str, Any]) -> None:
    # By owner: a value released earlier may belong to another instance by now.
    tx.release_owner(ip_pool(record["zone"]), record["id"])
    tx.release_owner(MAC_POOL, record["id"])


def _ccs(zones: Mapping[str, tuple[str, ...]] | None, record: Mapping[str, Any]) -> tuple:
    """The CCs of the record's zone in `zones`, else the record's own CC."""
    return (zones or {}).get(record["zone"]) or (record["cc"],)


def _first_failure(failures: Mapping[str, Any], *hosts: str) -> Any:
    """The failure of the first of `hosts` that failed, None when none did."""
    return next((failures[h] for h in hosts if h in failures), None)


def _host_failure(result: PlayResult, *hosts: str) -> str:
    """Why a play failed on any of these hosts ("" when it did its work there)."""
    failures = {f.host: f for f in result.failures}
    for host in hosts:
        if host in failures:
            return str(failures[host])
    if result.status != "successful" and not failures:  # e.g. a syntax error: nothing ran
        return result.error or f"the play ended {result.status}"
    return ""


def end_instance(
    tx, record: Mapping[str, Any], state: InstanceState, release: bool = True, **fields: Any
) -> None:
    """Record an instance gone from its hosts (terminated, or lost: failed) in `state`: its IP
    and MAC released (unless `release` is false: its remains are still to be removed), its
    volumes available again, its elastic IP disassociated."""
    iid = record["id"]
    before = tx.table(TABLE).get(iid)
    tx.table(TABLE).update(iid, state=state.value, **fields)
    if before is not None and before["state"] not in (_S.TERMINATED, _S.FAILED):
        usage.record(tx, before, "instance", "terminated")
    if release:
        release_allocations(tx, record)
    for v in tx.table("volumes").all():
        if (v.get("attachment") or {}).get("instance") == iid:
            tx.table("volumes").update(v["id"], state="available", attachment=None)
            usage.record(tx, v, "volume", "detached", instance_id=iid)
    for a in tx.table(ADDRESSES).search(instance=iid):
        tx.table(ADDRESSES).update(a["id"], instance=None, private_ip=None)
        usage.record(tx, a, "address", "disassociated")


def _instance_outcomes(result: PlayResult, task: str) -> dict[str, str]:
    """Instance id -> "" when the node_instances task named `task` did its part for it,
    else why not (naming the host and the failing step); instances it did not report on are
    missing."""
    outcomes = {}
    for t in result.task_results(task):
        for item in t.res.get("instances") or []:
            if isinstance(item, Mapping) and item.get("name"):
                why = str(HostFailed(t.host, task, item.get("msg") or "failed"))
                outcomes[item["name"]] = why if item.get("failed") else ""
    return outcomes
