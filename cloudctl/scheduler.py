"""Placement of instances on the Node Controllers of a zone (pure functions, no I/O).

Two policies, as Eucalyptus' CC offers them (SCHEDPOLICY):
- roundrobin: the next node after the one that got the last instance, skipping full ones;
- greedy: the first node (in name order) with room, so nodes fill up one by one.
A node has room for an instance type when its free vCPUs and free memory both suffice;
the free amounts subtract every instance that holds resources there (not terminated/failed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cloudctl.cloudconfig import InstanceType, Node
from cloudctl.errors import CapacityError

POLICIES = ("roundrobin", "greedy")
# Instances in these states hold vCPUs and memory on their node.
HOLDING_STATES = frozenset({"pending", "running", "stopping", "stopped", "shutting-down"})


@dataclass
class Free:
    vcpus: int
    memory_mb: int

    def fits(self, itype: InstanceType) -> bool:
        return self.vcpus >= itype.cpus and self.memory_mb >= itype.memory_mb

    def take(self, itype: InstanceType) -> None:
        self.vcpus -= itype.cpus
        self.memory_mb -= itype.memory_mb


def free_resources(
    nodes: Iterable[Node], instances: Iterable[Mapping], types: Mapping[str, InstanceType]
) -> dict[str, Free]:
    """Free vCPUs and memory of each node, given the instance records of the cloud."""
    free = {n.name: Free(n.vcpus, n.memory_mb) for n in nodes}
    for inst in instances:
        node = free.get(inst.get("node", ""))
        itype = types.get(inst.get("type", ""))
        if node is not None and itype is not None and inst.get("state") in HOLDING_STATES:
            node.take(itype)
    return free


def place(
    free: Mapping[str, Free],
    itype: InstanceType,
    count: int,
    policy: str = "roundrobin",
    last_node: str | None = None,
) -> list[str]:
    """The node of each of `count` new instances; CapacityError when they do not all fit."""
    if policy not in POLICIES:
        raise ValueError(f"unknown scheduling policy {policy!r}")
    names = sorted(free)
    left = {name: Free(f.vcpus, f.memory_mb) for name, f in free.items()}
    placed: list[str] = []
    cursor = names.index(last_node) + 1 if last_node in names else 0
    for _ in range(count):
        order = names if policy == "greedy" else names[cursor:] + names[:cursor]
        node = next((n for n in order if left[n].fits(itype)), None)
        if node is None:
            room = sum(capacity(f, itype) for f in free.values())
            raise CapacityError(
                f"not enough capacity for {count} x {itype.name} "
                f"({itype.cpus} vCPU, {itype.memory_mb} MB): room for {room}"
            )
        left[node].take(itype)
        placed.append(node)
        cursor = (names.index(node) + 1) % len(names)
    return placed


def capacity(free: Free, itype: InstanceType) -> int:
    """How many more instances of a type fit in the free resources."""
    return max(0, min(free.vcpus // max(itype.cpus, 1), free.memory_mb // max(itype.memory_mb, 1)))
