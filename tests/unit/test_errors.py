from __future__ import annotations

from cloudctl.errors import (
    CloudError,
    ConfigError,
    HostFailed,
    HostUnreachable,
    InputError,
    PlaybookError,
    error_lines,
    exit_code_for,
)


def test_exit_codes_come_from_one_mapping():
    assert exit_code_for(CloudError("x")) == 1
    assert exit_code_for(InputError("x")) == 2
    assert exit_code_for(ConfigError("x")) == 3
    assert exit_code_for(HostFailed("h", "t", "m")) == 1
    assert exit_code_for(HostUnreachable("h", "m")) == 1
    assert exit_code_for(PlaybookError("x")) == 1
    assert exit_code_for(RuntimeError("boom")) == 1


def test_host_errors_name_host_task_and_message():
    err = HostFailed("node1", "Start libvirtd", "unit not found")
    assert (err.host, err.task, err.message) == ("node1", "Start libvirtd", "unit not found")
    assert str(err) == "node1: task 'Start libvirtd' failed: unit not found"
    assert str(HostUnreachable("node2", "ssh: timeout")) == "node2: unreachable: ssh: timeout"


def test_error_lines_one_per_failed_host_and_always_one_line():
    failures = [HostFailed("a", "t1", "bad\nthing"), HostUnreachable("b", "gone")]
    err = PlaybookError("2 host(s) failed", failures=failures)
    assert error_lines(err) == ["a: task 't1' failed: bad thing", "b: unreachable: gone"]
    assert error_lines(ConfigError("no\n  inventory")) == ["no inventory"]
    assert error_lines(KeyError("k")) == ["KeyError: 'k'"]
