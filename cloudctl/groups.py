"""Security groups (EC2-Classic / Eucalyptus EDGE): named rule sets enforced per instance.

Table "groups": id sg-..., name (unique per owner), description, rules, owner fields. A rule:
{protocol: tcp|udp|icmp|all, from_port, to_port, icmp_type, icmp_code, cidr | source_group}.
Instances list their group ids in `groups`; every owner has a group named `default`
(created on first use) that, as in EC2-Classic, lets its members reach each other.

The NC enforces the *effective* rules of an instance (modules/instance_firewall.py): its
groups' rules with every source-group rule expanded to one /32 rule per live member.
A change (authorize, revoke, a launch or a termination that changes a group's members) is
applied to exactly the instances whose effective rules differ, in the same operation.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

import netaddr

from cloudctl import quotas
from cloudctl.errors import InputError, NotFound
from cloudctl.identity import current_owner, visible
from cloudctl.ids import new_id
from cloudctl.runner import ProgressCallback, run_playbook
from cloudctl.services import CloudService

TABLE = "groups"
DEFAULT = "default"
PROTOCOLS = ("tcp", "udp", "icmp", "all")
LIVE_STATES = frozenset({"pending", "running", "stopping", "stopped"})
FIREWALL_PLAYBOOK = "cloudctl.cloud.runtime.firewall_apply"
GENERATIONS = "generations"  # one record, "firewall": the last firewall generation handed out
_NAME = re.compile(r"^[A-Za-z0-9 ._\-:/()#,@\[\]+=&;{}!$*]{1,255}$")


class RuleExists(InputError):
    """Authorize: the group already has the rule."""


class NoSuchRule(InputError):
    """Revoke: the group has no such rule."""


class GroupInUse(InputError):
    """Delete: instances use the group, or rules of other groups name it as their source."""


def parse_rule(
    protocol: str,
    port: int | None = None,
    port_range: str | None = None,
    icmp_type: int | None = None,
    cidr: str | None = None,
    source_group: str | None = None,
) -> dict[str, Any]:
    """Validate the options of `group authorize/revoke` into one rule (InputError: one line)."""
    protocol = protocol.lower()
    if protocol not in PROTOCOLS:
        raise InputError(f"bad protocol {protocol!r}: one of {', '.join(PROTOCOLS)}")
    if (cidr is None) == (source_group is None):
        raise InputError("give exactly one of --cidr and --source-group")
    rule: dict[str, Any] = {"protocol": protocol}
    if protocol in ("tcp", "udp"):
        if port is not None and port_range is not None:
            raise InputError("give --port or --port-range, not both")
        if port is not None:
            low = high = port
        elif port_range is not None:
            low, high = _port_range(port_range)
        else:
            raise InputError(f"{protocol} rules need --port or --port-range")
        for value in (low, high):
            if not 0 <= value <= 65535:
                raise InputError(f"bad port {value}: must be 1 to 65535")
        if low > high:
            raise InputError(f"bad port range {low}-{high}: the first port is higher")
        if high == 0:  # nothing listens on port 0; a range may start there (0-65535: all)
            raise InputError("bad port 0: must be 1 to 65535")
        rule.update(from_port=low, to_port=high)
        if icmp_type is not None:
            raise InputError("--icmp-type is for icmp rules")
    elif protocol == "icmp":
        if port is not None or port_range is not None:
            raise InputError("icmp rules take --icmp-type, not ports")
        if icmp_type is not None and not -1 <= icmp_type <= 255:
            raise InputError(f"bad icmp type {icmp_type}: must be -1 (any) to 255")
        rule.update(icmp_type=-1 if icmp_type is None else icmp_type, icmp_code=-1)
    elif port is not None or port_range is not None or icmp_type is not None:
        raise InputError("protocol all takes no ports or icmp type")
    if cidr is not None:
        try:
            network = netaddr.IPNetwork(cidr, flags=netaddr.NOHOST)
        except (netaddr.AddrFormatError, ValueError, TypeError):
            raise InputError(f"bad CIDR {cidr!r}") from None
        if network.version != 4 or "/" not in cidr:
            raise InputError(f"bad CIDR {cidr!r}: an IPv4 network like 10.0.0.0/8")
        rule["cidr"] = str(network.cidr)
    else:
        rule["source_group"] = source_group
    return rule


def _port_range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    try:
        return int(low), int(high if sep else low)
    except ValueError:
        raise InputError(f"bad port range {text!r}: expected A-B") from None


def effective_rules(
    instance: Mapping[str, Any], groups: Mapping[str, Mapping], instances: Iterable[Mapping]
) -> list[dict[str, Any]]:
    """What the NC enforces for one instance: source groups expanded to member /32s."""
    members: dict[str, list[str]] = {}
    for other in instances:
        if other.get("state") in LIVE_STATES:
            for gid in other.get("groups") or []:
                members.setdefault(gid, []).append(other["private_ip"])
    rules = []
    for gid in instance.get("groups") or []:
        for rule in (groups.get(gid) or {}).get("rules", []):
            base = {k: v for k, v in rule.items() if k not in ("cidr", "source_group")}
            if "cidr" in rule:
                rules.append({**base, "cidr": rule["cidr"]})
            else:
                for ip in sorted(members.get(rule["source_group"], [])):
                    rules.append({**base, "cidr": f"{ip}/32"})
    unique = {tuple(sorted(r.items())): r for r in rules}
    return [unique[key] for key in sorted(unique, key=str)]


def all_effective_rules(tx) -> dict[str, list[dict[str, Any]]]:
    """instance id -> effective rules, for every live instance."""
    groups = {g["id"]: g for g in tx.table(TABLE).all()}
    instances = tx.table("instances").all()
    return {
        i["id"]: effective_rules(i, groups, instances)
        for i in instances
        if i.get("state") in LIVE_STATES
    }


def firewall_view(instance: Mapping[str, Any], rules: list[dict[str, Any]]) -> dict[str, Any]:
    """What the runtime playbooks pass to instance_firewall for one instance."""
    return {
        "name": instance["id"],
        "node": instance["node"],
        "tap": tap_name(instance["id"]),
        "mac": instance["mac"],
        "ip": instance["private_ip"],
        "rules": rules,
    }


def tap_name(instance_id: str) -> str:
    return "vn-" + instance_id.split("-", 1)[1]


def ensure_default(tx) -> dict[str, Any]:
    """The owner's `default` group, created with EC2-Classic's rule on first use."""
    owner = current_owner()
    table = tx.table(TABLE)
    for group in table.search(name=DEFAULT, account=owner.account):
        return group
    gid = new_id("group")
    return table.insert(
        {
            "id": gid,
            "account": owner.account,
            "user": owner.user,
            "name": DEFAULT,
            "description": "default group: members reach each other",
            "rules": [{"protocol": "all", "source_group": gid}],
        }
    )


def resolve(tx, ref: str) -> dict[str, Any]:
    """A group by id or name (the owner's)."""
    table = tx.table(TABLE)
    if ref.startswith("sg-"):
        group = table.get(ref)
        if group is not None and not visible(group):
            group = None
    else:
        if ref == DEFAULT:
            return ensure_default(tx)
        found = table.search(name=ref, account=current_owner().account)
        group = found[0] if found else None
    if group is None:
        raise NotFound(f"security group {ref!r} does not exist")
    return group


class Groups(CloudService):
    def list(self) -> list[dict[str, Any]]:
        with self.store.transaction() as tx:
            ensure_default(tx)
            groups = [g for g in tx.table(TABLE).all() if visible(g)]
        return sorted(groups, key=lambda g: (g["name"] != DEFAULT, g["name"]))

    def show(self, ref: str) -> dict[str, Any]:
        with self.store.transaction() as tx:
            group = resolve(tx, ref)
            group["instances"] = sorted(
                i["id"]
                for i in tx.table("instances").all()
                if group["id"] in (i.get("groups") or []) and i.get("state") in LIVE_STATES
            )
        return group

    def create(self, name: str, description: str = "") -> dict[str, Any]:
        if not _NAME.match(name) or name.startswith("sg-"):
            raise InputError(f"bad group name {name!r}: 1-255 characters, not starting with sg-")
        owner = current_owner()
        with self.store.transaction() as tx:
            ensure_default(tx)
            if tx.table(TABLE).search(name=name, account=owner.account):
                raise InputError(f"security group {name!r} already exists")
            quotas.check(tx, owner, {"ec2:quota-securitygroupnumber": 1})
            return tx.table(TABLE).insert(
                {
                    "id": new_id("group"),
                    "account": owner.account,
                    "user": owner.user,
                    "name": name,
                    "description": description,
                    "rules": [],
                }
            )

    def delete(self, ref: str) -> dict[str, Any]:
        with self.store.transaction() as tx:
            group = resolve(tx, ref)
            if group["name"] == DEFAULT:
                raise InputError("the default group cannot be deleted")
            users = [
                i["id"]
                for i in tx.table("instances").all()
                if group["id"] in (i.get("groups") or []) and i.get("state") != "terminated"
            ]
            if users:
                raise GroupInUse(
                    f"security group {group['name']} is used by {', '.join(sorted(users))}"
                )
            referrers = [
                g["name"]
                for g in tx.table(TABLE).all()
                if g["id"] != group["id"]
                and any(r.get("source_group") == group["id"] for r in g["rules"])
            ]
            if referrers:
                raise GroupInUse(
                    f"security group {group['name']} is a source of rules of "
                    f"{', '.join(sorted(referrers))}: revoke those first"
                )
            return tx.table(TABLE).remove(group["id"])

    def authorize(
        self, ref: str, *rules: dict[str, Any], progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        """Add rules to a group, all or none (RuleExists when it has one of them)."""
        return self._change_rules(ref, rules, add=True, progress=progress)

    def revoke(
        self, ref: str, *rules: dict[str, Any], progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        """Remove rules from a group, all or none (NoSuchRule when it lacks one of them)."""
        return self._change_rules(ref, rules, add=False, progress=progress)

    def _change_rules(
        self,
        ref: str,
        changes: Iterable[dict[str, Any]],
        add: bool,
        progress: ProgressCallback | None,
    ) -> dict[str, Any]:
        with self.store.transaction() as tx:
            group = resolve(tx, ref)
            rules = list(group["rules"])
            for rule in changes:
                if "source_group" in rule:
                    rule = {**rule, "source_group": resolve(tx, rule["source_group"])["id"]}
                if add:
                    if rule in rules:
                        raise RuleExists(f"security group {group['name']} already has this rule")
                    rules.append(rule)
                else:
                    if rule not in rules:
                        raise NoSuchRule(f"security group {group['name']} has no such rule")
                    rules.remove(rule)
            before = all_effective_rules(tx)
            tx.table(TABLE).update(group["id"], rules=rules)
            after = all_effective_rules(tx)
            changed = changed_firewalls(tx, before, after)
        if changed:
            # The rule is recorded; if a node fails, the error names it and the next change
            # (or `group authorize` again) re-applies: the module converges.
            result = run_playbook(
                self.settings,
                FIREWALL_PLAYBOOK,
                extravars={"cloud_firewalls": changed},
                limit=",".join(sorted({f["node"] for f in changed})),
                progress=progress,
                operation="group-apply",
            )
            result.raise_for_failures()
        return self.show(group["id"])


def changed_firewalls(
    tx, before: Mapping[str, list], after: Mapping[str, list], generation: int | None = None
) -> list[dict]:
    """firewall_view of every live instance whose effective rules differ, stamped with the
    transaction's generation (a new one unless given)."""
    table = tx.table("instances")
    changed = [
        firewall_view(table.get(iid), rules)
        for iid, rules in sorted(after.items())
        if before.get(iid) != rules
    ]
    if changed and generation is None:
        generation = next_generation(tx)
    return [{**view, "generation": generation} for view in changed]


def next_generation(tx) -> int:
    """A number above every one handed out before, for the firewall changes a transaction
    plans: operations at once run their plays side by side, and instance_firewall applies no
    change older than the last it applied to (or removed) an instance. Microseconds of the
    clock at least, so that the numbers keep growing over a new state file too (the NCs keep
    theirs until they reboot)."""
    table = tx.table(GENERATIONS)
    record = table.get("firewall")
    number = max((record or {}).get("value", 0) + 1, time.time_ns() // 1000)
    if record is None:
        owner = current_owner()
        record = {"id": "firewall", "account": owner.account, "user": owner.user}
        table.insert({**record, "value": number})
    else:
        table.update("firewall", value=number)
    return number
