from __future__ import annotations

import itertools
import re

import pytest

from cloudctl.errors import InputError
from cloudctl.ids import (
    INSTANCE_TRANSITIONS,
    PREFIXES,
    VOLUME_TRANSITIONS,
    InstanceState,
    VolumeState,
    can_transition,
    kind_of,
    new_id,
    parse_id,
    require_transition,
)


@pytest.mark.parametrize("kind", sorted(PREFIXES))
def test_new_id_has_the_prefix_and_8_lowercase_hex(kind):
    ident = new_id(kind)
    assert re.fullmatch(rf"{PREFIXES[kind]}-[0-9a-f]{{8}}", ident)
    assert kind_of(ident) == kind
    assert parse_id(ident, kind) == ident


def test_prefixes_are_those_of_ec2():
    assert [new_id(k).split("-")[0] for k in ("image", "kernel", "ramdisk")] == [
        "emi",
        "eki",
        "eri",
    ]
    assert new_id("instance").startswith("i-")
    assert new_id("volume").startswith("vol-")
    assert new_id("snapshot").startswith("snap-")
    assert new_id("group").startswith("sg-")
    assert new_id("address").startswith("eipalloc-")


def test_new_ids_do_not_repeat():
    ids = {new_id("instance") for _ in range(2000)}
    assert len(ids) == 2000


def test_unknown_kind_is_a_programming_error():
    with pytest.raises(ValueError):
        new_id("bucket")
    with pytest.raises(ValueError):
        parse_id("i-00000000", "bucket")


def test_parse_id_normalizes_case_and_whitespace():
    assert parse_id(" i-0A1B2C3D\n", "instance") == "i-0a1b2c3d"
    assert parse_id("eki-deadbeef", ["image", "kernel", "ramdisk"]) == "eki-deadbeef"


@pytest.mark.parametrize(
    "text",
    ["x-123", "i-123", "i-0a1b2c3d4", "i-0a1b2c3g", "vol-0a1b2c3d", "i_0a1b2c3d", "", "i-"],
)
def test_bad_instance_id_is_one_clear_line(text):
    with pytest.raises(InputError) as info:
        parse_id(text, "instance")
    assert str(info.value) == f"bad instance id {text!r}: expected i-XXXXXXXX"
    assert info.value.exit_code == 2


def test_bad_image_id_names_every_accepted_prefix():
    with pytest.raises(
        InputError,
        match="bad image id 'i-0a1b2c3d': expected emi-XXXXXXXX, eki-XXXXXXXX or eri-XXXXXXXX",
    ):
        parse_id("i-0a1b2c3d", ["image", "kernel", "ramdisk"])
    with pytest.raises(InputError, match="bad volume id"):
        parse_id("snap-0a1b2c3d", "volume")


def test_kind_of_rejects_malformed_and_unknown_prefixes():
    assert kind_of("ami-0a1b2c3d") is None
    assert kind_of("I-0A1B2C3D") is None
    assert kind_of("snap-0a1b2c3d") == "snapshot"


def test_states_have_the_ec2_names():
    assert {s.value for s in InstanceState} == {
        "pending",
        "running",
        "stopping",
        "stopped",
        "shutting-down",
        "terminated",
        "failed",  # not EC2: a launch that failed says so (DESIGN.md)
    }
    assert {s.value for s in VolumeState} == {
        "creating",
        "available",
        "in-use",
        "deleting",
        "deleted",
        "error",
    }
    assert InstanceState("shutting-down") is InstanceState.SHUTTING_DOWN
    assert set(INSTANCE_TRANSITIONS) == set(InstanceState)
    assert set(VOLUME_TRANSITIONS) == set(VolumeState)


def test_transitions_follow_the_lifecycle():
    path = [
        "pending",
        "running",
        "stopping",
        "stopped",
        "pending",
        "running",
        "shutting-down",
        "terminated",
    ]
    for current, new in itertools.pairwise(path):
        assert can_transition("instance", current, new), (current, new)
    assert not can_transition("instance", "terminated", "running")
    assert not can_transition("instance", "stopped", "running")
    assert can_transition("volume", "available", "in-use")
    assert not can_transition("volume", "in-use", "deleting")  # attached: refuse delete
    assert can_transition("attachment", "attaching", "attached")
    assert can_transition("snapshot", "pending", "error")
    assert not can_transition("snapshot", "completed", "pending")


def test_require_transition_names_resource_and_states():
    require_transition("volume", "creating", "available", "vol-0a1b2c3d")
    with pytest.raises(InputError) as info:
        require_transition("instance", "terminated", "running", "i-0a1b2c3d")
    assert str(info.value) == "instance i-0a1b2c3d is terminated: cannot move to running"
