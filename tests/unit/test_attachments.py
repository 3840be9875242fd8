"""Volume attachments are never released on a guess: an attach or detach whose outcome is
unknown keeps the volume in use, and reconcile settles attachments from the disks each domain
really has (plays and scans are synthetic here)."""

from __future__ import annotations

import pytest

from cloudctl.errors import CloudError, InputError
from cloudctl.reconcile import _compare_allocations, _compare_attachments, _Plan
from cloudctl.state import StateStore
from cloudctl.volumes import TASK_ATTACH, TASK_DETACH, TASK_EXPORT, Volumes
from tests.unit.helpers import host_event, play_result, stats_event, task_start

OWNER = {"account": "admin", "user": "admin"}
VOL, INST, OTHER = "vol-000000aa", "i-000000aa", "i-000000bb"


def store_with(tmp_path, attachment=None) -> StateStore:
    store = StateStore(tmp_path / "state.json")
    with store.transaction() as tx:
        for iid in (INST, OTHER):
            tx.table("instances").insert({"id": iid, **OWNER, "state": "running", "node": "nc1",
                                          "cc": "cc1", "zone": "zone-a"})  # fmt: skip
        tx.table("volumes").insert({
            "id": VOL, **OWNER, "size_gb": 1, "zone": "zone-a", "sc": "nc1",
            "state": "in-use" if attachment else "available", "reason": "", "chap_user": VOL,
            "chap_secret": "0123456789abcdef", "iqn": f"iqn.test:{VOL}", "lun": 1,
            "portal": {"address": "10.0.0.1", "port": 3260}, "attachment": attachment,
        })  # fmt: skip
    return store


def attachment(state: str, instance: str = INST) -> dict:
    return {"instance": instance, "node": "nc1", "device": "vdb", "state": state}


def run_dir(tmp_path):
    path = tmp_path / "20260101T000000Z-volume-attach-0a1b2c3d"
    path.mkdir(exist_ok=True)
    return path


def volume(store: StateStore) -> dict:
    with store.snapshot() as snap:
        return snap.table("volumes").get(VOL)


def events(
    task: str, last: str | None, res: dict | None = None, started: bool = True
) -> list[dict]:
    """The export on nc1 (the SC here too), then `task` started on nc1 and ended by `last`."""
    out = [task_start(TASK_EXPORT), host_event("runner_on_ok", "nc1", TASK_EXPORT, {}),
           task_start(task)]  # fmt: skip
    if started:
        out.append(host_event("runner_on_start", "nc1", task, {}))
    if last:
        out.append(host_event(last, "nc1", task, res or {}))
    return out


UNREACHABLE = ("runner_on_unreachable", {"msg": "Data could not be sent", "unreachable": True})
CRASHED = ("runner_on_failed", {"msg": "MODULE FAILURE", "module_stderr": "Killed"})
# as ansible-core 2.19 reports a module's fail_json: its arguments, and the call stack
CLEAN_FAILURE = ("runner_on_failed", {"msg": "attaching volume failed: no route",
                                      "invocation": {"module_args": {}}, "exception": "..."})  # fmt: skip


@pytest.mark.parametrize(
    ("last", "started", "status"),
    [
        (UNREACHABLE, True, ""),
        (CRASHED, True, ""),
        ((None, None), True, "failed"),
        ((None, None), True, "timeout"),
    ],
    ids=["unreachable", "module-crashed", "no-result", "timed-out"],
)
def test_attach_of_unknown_outcome_keeps_the_volume_and_refuses_another(
    tmp_path, settings, monkeypatch, last, started, status
):
    store = store_with(tmp_path)
    result = play_result(run_dir(tmp_path), events(TASK_ATTACH, last[0], last[1], started), status)
    monkeypatch.setattr(Volumes, "_play", lambda *a, **k: result)
    with pytest.raises(CloudError):
        Volumes(settings, store).attach(VOL, INST)
    v = volume(store)
    assert v["state"] == "in-use" and v["attachment"]["state"] == "attaching", v
    assert v["reason"].startswith("attach outcome unknown"), v["reason"]
    with pytest.raises(InputError, match=f"volume {VOL} is in-use \\(attaching to {INST}\\)"):
        Volumes(settings, store).attach(VOL, OTHER)


@pytest.mark.parametrize(
    "play",
    [
        events(TASK_ATTACH, *CLEAN_FAILURE),
        [
            task_start(TASK_EXPORT),
            host_event(
                "runner_on_unreachable",
                "nc1",
                TASK_EXPORT,
                {"msg": "no route", "unreachable": True},
            ),
        ],
    ],
    ids=["module-failed", "never-started"],
)
def test_attach_that_surely_did_nothing_makes_the_volume_available(
    tmp_path, settings, monkeypatch, play
):
    store = store_with(tmp_path)
    monkeypatch.setattr(Volumes, "_play", lambda *a, **k: play_result(run_dir(tmp_path), play))
    with pytest.raises(CloudError):
        Volumes(settings, store).attach(VOL, INST)
    v = volume(store)
    assert (v["state"], v["attachment"]) == ("available", None), v


def test_attach_records_the_device_the_module_chose(tmp_path, settings, monkeypatch):
    store = store_with(tmp_path)
    play = events(TASK_ATTACH, "runner_on_ok", {"changed": True, "device": "vdc"})
    monkeypatch.setattr(Volumes, "_play", lambda *a, **k: play_result(run_dir(tmp_path), play))
    v = Volumes(settings, store).attach(VOL, INST, device="vdb")
    assert v["state"] == "in-use" and v["attachment"] == attachment("attached") | {"device": "vdc"}


def test_attach_that_worked_after_the_sc_exported_again_is_attached(
    tmp_path, settings, monkeypatch
):
    """The play's rescue: the hot-plug failed (tgtd had lost the target), the SC exported the
    volume again and the second hot-plug worked: the last result counts."""
    store = store_with(tmp_path)
    play = [
        task_start(TASK_ATTACH),
        host_event("runner_on_failed", "nc1", TASK_ATTACH, CLEAN_FAILURE[1]),
        task_start(TASK_EXPORT),
        host_event("runner_on_ok", "nc1", TASK_EXPORT, {"changed": True}),
        task_start(TASK_ATTACH),
        host_event("runner_on_ok", "nc1", TASK_ATTACH, {"changed": True, "device": "vdc"}),
        stats_event(ok={"nc1": 2}, changed={"nc1": 2}, rescued={"nc1": 1}),
    ]
    monkeypatch.setattr(Volumes, "_play", lambda *a, **k: play_result(run_dir(tmp_path), play))
    v = Volumes(settings, store).attach(VOL, INST)
    assert v["state"] == "in-use" and v["attachment"] == attachment("attached") | {"device": "vdc"}
    assert v["reason"] == ""


@pytest.mark.parametrize(
    ("last", "state"),
    [
        (UNREACHABLE, "detaching"),
        (CLEAN_FAILURE, "attached"),
        (("runner_on_ok", {"changed": True}), None),
    ],
    ids=["unknown", "failed", "done"],
)
def test_detach_releases_only_what_surely_went(tmp_path, settings, monkeypatch, last, state):
    store = store_with(tmp_path, attachment("attached"))
    play = events(TASK_DETACH, *last)[2:]  # no export in a detach
    monkeypatch.setattr(Volumes, "_play", lambda *a, **k: play_result(run_dir(tmp_path), play))
    if state is None:
        assert Volumes(settings, store).detach(VOL)["state"] == "available"
        return
    with pytest.raises(CloudError):
        Volumes(settings, store).detach(VOL)
    v = volume(store)
    assert v["state"] == "in-use" and v["attachment"]["state"] == state, v


# --- reconcile ------------------------------------------------------------------------------


def compare(store: StateStore, disks: dict, fix: bool, busy=(), live=(INST, OTHER)):
    """Attachment drifts against a node nc1 whose domains hold `disks` {instance: {vol: dev}}."""
    plan = _Plan()
    with store.transaction() as tx:
        found = _compare_attachments(
            tx.table("volumes"), {"nc1": {"volumes": disks}}, set(live), set(busy), plan, fix
        )
    return {(d.kind, d.resource, d.fixed) for d in found}, plan


@pytest.mark.parametrize(
    ("recorded", "disks", "kind", "after"),
    [
        (
            attachment("attaching"),
            {INST: {VOL: "vdd"}},
            "unfinished-attach",
            attachment("attached") | {"device": "vdd"},
        ),
        (attachment("attaching"), {}, "unfinished-attach", None),
        (
            attachment("detaching"),
            {INST: {VOL: "vdb"}},
            "unfinished-detach",
            attachment("attached"),
        ),
        (attachment("detaching"), {}, "unfinished-detach", None),
        (attachment("attached"), {}, "lost-attachment", None),
        (
            None,
            {OTHER: {VOL: "vdc"}},
            "unrecorded-attachment",
            attachment("attached", OTHER) | {"device": "vdc"},
        ),
        (
            attachment("attached"),
            {OTHER: {VOL: "vdc"}},
            "lost-attachment",
            attachment("attached", OTHER) | {"device": "vdc"},
        ),
    ],
)
def test_reconcile_settles_attachments_from_the_domains(tmp_path, recorded, disks, kind, after):
    store = store_with(tmp_path, recorded)
    before = (tmp_path / "state.json").read_bytes()
    assert compare(store, disks, fix=False)[0] == {(kind, VOL, False)}
    assert (tmp_path / "state.json").read_bytes() == before
    assert compare(store, disks, fix=True)[0] == {(kind, VOL, True)}
    v = volume(store)
    assert v["attachment"] == after and v["state"] == ("in-use" if after else "available")
    assert compare(store, disks, fix=False)[0] == set()  # converged


def test_a_second_domain_with_the_disk_is_unplugged(tmp_path):
    store = store_with(tmp_path, attachment("attached"))
    found, plan = compare(store, {INST: {VOL: "vdb"}, OTHER: {VOL: "vdb"}}, fix=True)
    assert found == {("extra-attachment", VOL, True)}
    assert plan.extra_attachments == [{"volume": VOL, "instance": OTHER, "node": "nc1"}]
    assert volume(store)["attachment"] == attachment("attached")


def test_never_available_while_a_domain_has_the_disk(tmp_path):
    """The recorded instance lacks the disk, but a domain the state does not count as live
    (an orphan, removed by the same fix) still has it: the volume stays in use."""
    store = store_with(tmp_path, attachment("attaching"))
    found, _ = compare(store, {"i-000000dd": {VOL: "vdb"}}, fix=True)
    assert found == {("unfinished-attach", VOL, False)}
    assert volume(store)["state"] == "in-use"


def test_busy_unscanned_and_unknown_volumes(tmp_path):
    store = store_with(tmp_path, attachment("attaching"))
    assert compare(store, {}, fix=True, busy={VOL})[0] == set()
    assert compare(store, {}, fix=True, busy={INST})[0] == set()
    with store.transaction() as tx:  # a node without the scan's volumes is not judged
        assert _compare_attachments(tx.table("volumes"), {"nc1": {}}, {INST}, set(), _Plan(),
                                    True) == []  # fmt: skip
    assert volume(store)["attachment"] == attachment("attaching")
    found, plan = compare(store, {INST: {VOL: "vdb"}, OTHER: {"vol-000000ff": "vdb"}}, fix=True)
    assert found == {("unfinished-attach", VOL, True), ("orphan-attachment", "vol-000000ff", False)}
    assert plan.extra_attachments == []


def test_addresses_of_a_gone_owner_wait_until_its_hosts_are_clean(tmp_path):
    store = StateStore(tmp_path / "state.json")
    with store.transaction() as tx:
        tx.table("instances").insert({"id": "i-000000cc", **OWNER, "state": "failed",
                                      "node": "nc1", "cc": "cc1", "zone": "zone-a"})  # fmt: skip
        tx.allocate("ip:zone-a", ["172.31.0.12"], "i-000000cc")
    node = {"domains": {}, "instance_dirs": [], "firewalls": []}
    cc = {"reservations": {"zone-a": ["i-000000cc"]}}
    for nodes, clusters in (({"nc1": node}, {"cc1": cc}),  # its reservation is still there
                            ({"nc1": node}, {})):  # its CC was not scanned  # fmt: skip
        with store.transaction() as tx:
            [d] = _compare_allocations(tx, set(), nodes, clusters, fix=True)
            assert d.kind == "orphan-allocation" and not d.fixed and "once" in d.detail
            assert tx.allocations("ip:zone-a") == {"172.31.0.12": "i-000000cc"}
    with store.transaction() as tx:
        clean = {"cc1": {"reservations": {"zone-a": []}}}
        [d] = _compare_allocations(tx, set(), {"nc1": node}, clean, fix=True)
        assert d.fixed and tx.allocations("ip:zone-a") == {}
