"""Placement of instances on nodes (cloudctl/scheduler.py)."""

from __future__ import annotations

import pytest

from cloudctl.cloudconfig import InstanceType, Node
from cloudctl.errors import CapacityError
from cloudctl.scheduler import capacity, free_resources, place

SMALL = InstanceType("m1.small", 1, 128, 2)
LARGE = InstanceType("m1.large", 2, 512, 10)
TYPES = {t.name: t for t in (SMALL, LARGE)}
NODES = [Node("nc1", 2, 1024), Node("nc2", 2, 1024), Node("nc3", 4, 256)]


def test_free_resources_count_only_instances_that_hold_resources():
    instances = [
        {"node": "nc1", "type": "m1.small", "state": "running"},
        {"node": "nc1", "type": "m1.small", "state": "stopped"},
        {"node": "nc2", "type": "m1.large", "state": "terminated"},
        {"node": "nc2", "type": "m1.large", "state": "failed"},
        {"node": "gone", "type": "m1.small", "state": "running"},
    ]
    free = free_resources(NODES, instances, TYPES)
    assert (free["nc1"].vcpus, free["nc1"].memory_mb) == (0, 768)
    assert (free["nc2"].vcpus, free["nc2"].memory_mb) == (2, 1024)


def test_roundrobin_spreads_and_continues_after_the_last_node():
    free = free_resources(NODES, [], TYPES)
    assert place(free, SMALL, 3) == ["nc1", "nc2", "nc3"]
    assert place(free, SMALL, 2, last_node="nc1") == ["nc2", "nc3"]


def test_greedy_fills_the_first_node_first():
    free = free_resources(NODES, [], TYPES)
    assert place(free, SMALL, 3, policy="greedy") == ["nc1", "nc1", "nc2"]


def test_nodes_without_room_are_skipped():
    free = free_resources(NODES, [], TYPES)
    # nc3 has CPUs but only 256 MB: no m1.large fits there.
    assert place(free, LARGE, 2) == ["nc1", "nc2"]


def test_not_enough_capacity_says_how_much_room_is_left():
    free = free_resources(NODES, [], TYPES)
    assert capacity(free["nc3"], SMALL) == 2
    with pytest.raises(CapacityError, match="room for 2"):
        place(free, LARGE, 3)


def test_unknown_policy():
    with pytest.raises(ValueError):
        place(free_resources(NODES, [], TYPES), SMALL, 1, policy="random")
