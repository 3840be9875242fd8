"""Usage reports (cloudctl/reports.py, `cloudctl report usage`) against a scripted scenario
with known durations, recorded through usage.record into a real state file."""

from __future__ import annotations

import csv
import html
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from cloudctl import reports, usage
from cloudctl.cli.main import cli
from cloudctl.errors import InputError
from cloudctl.identity import Principal, acting_as
from cloudctl.reports import Window, usage_report
from cloudctl.state import StateStore
from tests.unit.helpers import init_state

DAY = "2026-01-15"
FROM, TO = f"{DAY}T10:00:00Z", f"{DAY}T13:00:00Z"
GIB = 2**30
SMALL = {"type": "m1.small", "vcpus": 1, "memory_mb": 128, "disk_gb": 2}
MEDIUM = {"type": "c1.medium", "vcpus": 1, "memory_mb": 256, "disk_gb": 5}
LARGE = {"type": "m1.large", "vcpus": 2, "memory_mb": 512, "disk_gb": 10}

# (owner, resource id, kind, event, time (the day's unless dated), figures)
SCENARIO = [
    # dev/alice: m1.small 10:00:00 -> 12:30:00 (9000 s) and 11:00:00 -> still running (7200 s
    # up to --to); a third launched at --to itself (outside the window).
    ("dev/alice", "i-a1", "instance", "started", "10:00:00", SMALL),
    ("dev/alice", "i-a1", "instance", "stopped", "12:30:00", {}),
    ("dev/alice", "i-a2", "instance", "started", "11:00:00", SMALL),
    ("dev/alice", "i-a3", "instance", "started", "13:00:00", SMALL),
    # dev/bob: m1.large 12:00:00 -> 12:20:07 (1207 s)
    ("dev/bob", "i-b1", "instance", "started", "12:00:00", LARGE),
    ("dev/bob", "i-b1", "instance", "terminated", "12:20:07", {}),
    # ops/carol: c1.medium launched before the window, stopped 11:15:00 (4500 s in it),
    # restarted 12:00:00, terminated after it (3600 s in it); one run entirely before it.
    ("ops/carol", "i-c1", "instance", "started", "08:00:00", MEDIUM),
    ("ops/carol", "i-c1", "instance", "stopped", "11:15:00", {}),
    ("ops/carol", "i-c1", "instance", "started", "12:00:00", MEDIUM),
    ("ops/carol", "i-c1", "instance", "terminated", "13:30:00", {}),
    ("ops/carol", "i-c2", "instance", "started", "06:00:00", SMALL),
    ("ops/carol", "i-c2", "instance", "terminated", "07:00:00", {}),
    # volumes: 2 GB 09:00:00 -> 12:45:00 (9900 s in the window), attached 10:30:00 ->
    # 12:30:00; 5 GB from 11:00:00 (7200 s), attached from 12:00:00 (3600 s); 10 GB for 1 s.
    ("dev/alice", "vol-a1", "volume", "created", "09:00:00", {"size_gb": 2}),
    ("dev/alice", "vol-a1", "volume", "attached", "10:30:00", {"instance_id": "i-a1"}),
    ("dev/alice", "vol-a1", "volume", "detached", "12:30:00", {"instance_id": "i-a1"}),
    ("dev/alice", "vol-a1", "volume", "deleted", "12:45:00", {}),
    ("dev/alice", "vol-a2", "volume", "created", "11:00:00", {"size_gb": 5}),
    ("dev/alice", "vol-a2", "volume", "attached", "12:00:00", {"instance_id": "i-a2"}),
    ("ops/carol", "vol-c1", "volume", "created", "12:59:59", {"size_gb": 10}),
    # snapshots: 2 GB from 10:40:00 (8400 s); 3 GB from the day before to 11:00:00 (3600 s)
    (
        "dev/alice",
        "snap-a1",
        "snapshot",
        "created",
        "10:40:00",
        {"size_gb": 2, "volume_id": "vol-a1"},
    ),
    (
        "ops/carol",
        "snap-c1",
        "snapshot",
        "created",
        "2026-01-14T12:00:00",
        {"size_gb": 3, "volume_id": "vol-x"},
    ),
    ("ops/carol", "snap-c1", "snapshot", "deleted", "11:00:00", {}),
    # an address allocated before the window, released 12:15:15 (8115 s in it); associated
    # 10:00:00 -> 11:30:00 and 12:00:00 -> its release (5400 + 915 s)
    ("dev/bob", "eipalloc-b1", "address", "allocated", "09:30:00", {"public_ip": "198.51.100.7"}),
    ("dev/bob", "eipalloc-b1", "address", "associated", "10:00:00", {"instance_id": "i-b1"}),
    ("dev/bob", "eipalloc-b1", "address", "disassociated", "11:30:00", {}),
    ("dev/bob", "eipalloc-b1", "address", "associated", "12:00:00", {"instance_id": "i-b1"}),
    ("dev/bob", "eipalloc-b1", "address", "released", "12:15:15", {}),
    # buckets: photos 1 GiB (from before the window), 3 GiB from 11:00:00, 2.5 GiB from
    # 12:00:00; logs created 10:30:00, 4 GiB + 1 byte 11:30:00 -> deleted 12:15:00; a bucket
    # of ops deleted at --from exactly (no second in the window).
    ("dev/alice", "photos", "bucket", "created", "09:00:00", {"bucket": "photos"}),
    ("dev/alice", "photos", "bucket", "stored", "09:30:00", {"bytes": GIB}),
    ("dev/alice", "photos", "bucket", "stored", "11:00:00", {"bytes": 3 * GIB}),
    ("dev/alice", "photos", "bucket", "stored", "12:00:00", {"bytes": 5 * GIB // 2}),
    ("dev/alice", "logs", "bucket", "created", "10:30:00", {"bucket": "logs"}),
    ("dev/alice", "logs", "bucket", "stored", "11:30:00", {"bytes": 4 * GIB + 1}),
    ("dev/alice", "logs", "bucket", "deleted", "12:15:00", {}),
    ("ops/carol", "old", "bucket", "created", "2026-01-14T09:00:00", {"bucket": "old"}),
    ("ops/carol", "old", "bucket", "stored", "2026-01-14T09:00:01", {"bytes": 100}),
    ("ops/carol", "old", "bucket", "deleted", "10:00:00", {}),
]


def record_all(state: Path, events=SCENARIO) -> None:
    """The events through usage.record, in one transaction, in the given order."""
    with StateStore(state).transaction() as tx:
        for owner, resource_id, kind, event, time, figures in events:
            account, user = owner if isinstance(owner, tuple) else owner.split("/")
            resource = {"id": resource_id, "account": account, "user": user}
            at = time if "T" in time else f"{DAY}T{time}"
            usage.record(tx, resource, kind, event, at=at + "+00:00", **figures)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = init_state(tmp_path / "state.json")
    record_all(path, SCENARIO[::-1])  # out of time order: reports sort by time
    return path


@pytest.fixture
def docs(state: Path) -> list[dict]:
    return StateStore(state).all(usage.TABLE)


@pytest.fixture
def env(tmp_path: Path, state: Path, monkeypatch) -> Path:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("all: {}\n")
    monkeypatch.setenv("CLOUDCTL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CLOUDCTL_INVENTORY", str(inventory))
    monkeypatch.setenv("CLOUDCTL_STATE", str(state))
    monkeypatch.delenv("CLOUDCTL_PROJECT", raising=False)
    monkeypatch.delenv("CLOUDCTL_CLOUD", raising=False)
    return tmp_path


def run(*args: str):
    return CliRunner().invoke(cli, list(args), prog_name="cloudctl")


def cells(table: str) -> list[list[str]]:
    """The cells of a table's rows, after its title line and the blank line."""
    return [line.split() for line in table.splitlines()[2:]]


def report_usage(report_type: str, *args: str):
    return run("report", "usage", "--type", report_type, "--from", FROM, "--to", TO, *args)


def window(start: str = FROM, end: str = TO, now: str = "2026-02-01T00:00:00Z") -> Window:
    return Window.parse(start, end, reports.parse_time(now, "now"))


def rows(docs: list[dict], report_type: str, **kwargs) -> list[dict]:
    return usage_report(docs, report_type, kwargs.pop("window", window()), **kwargs).rows


# --- figures ---------------------------------------------------------------------------------


def test_instance_hours_by_type_launches_vcpu_and_memory(docs):
    assert rows(docs, "instance") == [
        {"account": "dev", "user": "alice", "type": "m1.small", "instances": 2, "launched": 2,
         "instance_seconds": 9000 + 7200, "vcpu_seconds": 16200,
         "memory_mb_seconds": 128 * 16200},
        {"account": "dev", "user": "bob", "type": "m1.large", "instances": 1, "launched": 1,
         "instance_seconds": 1207, "vcpu_seconds": 2 * 1207, "memory_mb_seconds": 512 * 1207},
        {"account": "ops", "user": "carol", "type": "c1.medium", "instances": 1, "launched": 0,
         "instance_seconds": 4500 + 3600, "vcpu_seconds": 8100,
         "memory_mb_seconds": 256 * 8100},
    ]  # fmt: skip


def test_volume_snapshot_address_and_bucket_figures(docs):
    assert rows(docs, "volume") == [
        {"account": "dev", "user": "alice", "volumes": 2, "created": 1, "deleted": 1,
         "gb_seconds": 2 * 9900 + 5 * 7200, "attached_seconds": 7200 + 3600},
        {"account": "ops", "user": "carol", "volumes": 1, "created": 1, "deleted": 0,
         "gb_seconds": 10, "attached_seconds": 0},
    ]  # fmt: skip
    assert rows(docs, "snapshot") == [
        {"account": "dev", "user": "alice", "snapshots": 1, "created": 1, "deleted": 0,
         "gb_seconds": 2 * 8400},
        {"account": "ops", "user": "carol", "snapshots": 1, "created": 0, "deleted": 1,
         "gb_seconds": 3 * 3600},
    ]  # fmt: skip
    assert rows(docs, "elastic-ip") == [
        {"account": "dev", "user": "bob", "addresses": 1, "allocated": 0, "released": 1,
         "address_seconds": 8115, "associated_seconds": 5400 + 915},
    ]  # fmt: skip
    photos = GIB * 3600 + 3 * GIB * 3600 + 5 * GIB // 2 * 3600
    logs = (4 * GIB + 1) * 2700
    assert rows(docs, "s3") == [
        {"account": "dev", "user": "alice", "buckets": 2, "created": 1, "deleted": 1,
         "byte_seconds": photos + logs, "max_bytes": 3 * GIB + 4 * GIB + 1},
        {"account": "ops", "user": "carol", "buckets": 0, "created": 0, "deleted": 1,
         "byte_seconds": 0, "max_bytes": 0},
    ]  # fmt: skip


# --- the command and its formats ---------------------------------------------------------------

TABLES = {
    "instance": [
        "ACCOUNT  USER   TYPE       INSTANCES  LAUNCHED  INSTANCE_HOURS  VCPU_HOURS  MEMORY_GB_HOURS",
        "dev      alice  m1.small   2          2         4.5000          4.5000      0.5625",
        "dev      bob    m1.large   1          1         0.3353          0.6706      0.1676",
        "ops      carol  c1.medium  1          0         2.2500          2.2500      0.5625",
    ],
    "volume": [
        "ACCOUNT  USER   VOLUMES  CREATED  DELETED  GB_HOURS  ATTACHED_HOURS",
        "dev      alice  2        1        1        15.5000   3.0000",
        "ops      carol  1        1        0        0.0028    0.0000",
    ],
    "snapshot": [
        "ACCOUNT  USER   SNAPSHOTS  CREATED  DELETED  GB_HOURS",
        "dev      alice  1          1        0        4.6667",
        "ops      carol  1          0        1        3.0000",
    ],
    "elastic-ip": [
        "ACCOUNT  USER  ADDRESSES  ALLOCATED  RELEASED  ADDRESS_HOURS  ASSOCIATED_HOURS",
        "dev      bob   1          0          1         2.2542         1.7542",
    ],
    "s3": [
        "ACCOUNT  USER   BUCKETS  CREATED  DELETED  GB_HOURS  MAX_BYTES",
        "dev      alice  2        1        1        9.5000    7516192769",
        "ops      carol  0        0        1        0.0000    0",
    ],
}


@pytest.mark.parametrize("report_type", list(TABLES))
def test_table(env, report_type):
    result = report_usage(report_type)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"{report_type} usage from {FROM} to {TO}",
        "",
        *TABLES[report_type],
    ]


def test_csv_has_a_header_and_the_table_figures(env):
    for report_type, table in TABLES.items():
        result = report_usage(report_type, "--format", "csv")
        assert result.exit_code == 0, result.output
        parsed = list(csv.reader(io.StringIO(result.stdout)))
        assert parsed == [
            [cell.lower() for cell in table[0].split()],
            *(line.split() for line in table[1:]),
        ]


def test_json_has_the_window_shown_and_exact_figures(env):
    result = report_usage("instance", "--format", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert (document["report"], document["from"], document["to"]) == ("instance", FROM, TO)
    assert document["columns"] == TABLES["instance"][0].lower().split()
    assert document["rows"][1] == {
        "account": "dev", "user": "bob", "type": "m1.large", "instances": 1, "launched": 1,
        "instance_hours": 0.3353, "vcpu_hours": 0.6706, "memory_gb_hours": 0.1676,
        "instance_seconds": 1207, "vcpu_seconds": 2414, "memory_mb_seconds": 512 * 1207,
    }  # fmt: skip
    result = report_usage("s3", "--format", "json")
    alice = json.loads(result.stdout)["rows"][0]
    assert alice["byte_seconds"] == 6 * GIB * 3600 + GIB // 2 * 3600 + (4 * GIB + 1) * 2700
    assert (alice["gb_hours"], alice["max_bytes"]) == (9.5, 7 * GIB + 1)
    result = run("-o", "json", "report", "usage", "--type", "s3", "--from", FROM, "--to", TO)
    assert json.loads(result.stdout)["rows"][0] == alice  # the global -o is the default


def test_html_page_and_output_file(env):
    page = env / "report.html"
    result = report_usage("instance", "--format", "html", "--output-file", str(page))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert f"written to {page}" in result.stderr
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "</html>" in text
    for external in ("<script", "<link", "src=", "href=", "@import", "url("):
        assert external not in text  # self-contained: nothing to fetch
    # one bar per account/user, lengths proportional to the hours (4.5 : 0.3353 : 2.25)
    bars = [int(b.split('width="')[1].split('"')[0]) for b in text.split("<rect")[1:]]
    assert bars == [reports.BAR_MAX, round(reports.BAR_MAX * 1207 / 16200), reports.BAR_MAX // 2]
    for line in TABLES["instance"][1:]:
        cells = "".join(f"<td>{c}</td>" for c in line.split()[:3])
        assert cells in text


# --- the window ----------------------------------------------------------------------------


def test_window_clips_spans_and_counts_only_its_events(docs):
    # i-a1 was launched before 11:00, i-b1 at 12:00 (the end: outside the window)
    assert rows(docs, "instance", window=window(f"{DAY}T11:00:00", f"{DAY}T12:00:00")) == [
        {"account": "dev", "user": "alice", "type": "m1.small", "instances": 2, "launched": 1,
         "instance_seconds": 3600 + 3600, "vcpu_seconds": 7200, "memory_mb_seconds": 128 * 7200},
        {"account": "ops", "user": "carol", "type": "c1.medium", "instances": 1, "launched": 0,
         "instance_seconds": 900, "vcpu_seconds": 900, "memory_mb_seconds": 256 * 900},
    ]  # fmt: skip
    # vol-c1 was created in the window's first second
    assert rows(docs, "volume", window=window(f"{DAY}T12:59:59", f"{DAY}T14:00:00")) == [
        {"account": "dev", "user": "alice", "volumes": 1, "created": 0, "deleted": 0,
         "gb_seconds": 5 * 3601, "attached_seconds": 3601},
        {"account": "ops", "user": "carol", "volumes": 1, "created": 1, "deleted": 0,
         "gb_seconds": 10 * 3601, "attached_seconds": 0},
    ]  # fmt: skip
    assert rows(docs, "instance", window=window("2026-01-16", "2026-01-17", now="2026-01-20")) == [
        {"account": "dev", "user": "alice", "type": "m1.small", "instances": 2, "launched": 0,
         "instance_seconds": 2 * 86400, "vcpu_seconds": 2 * 86400,
         "memory_mb_seconds": 128 * 2 * 86400},
    ]  # fmt: skip


def test_an_open_span_counts_up_to_now_when_to_is_in_the_future(docs):
    now = f"{DAY}T12:30:00Z"
    [alice, _, carol] = rows(docs, "instance", window=window(f"{DAY}T12:00:00", "2026-01-16", now))
    assert alice["instance_seconds"] == 1800 + 1800  # i-a1 stopped at 12:30, i-a2 runs
    assert carol["instance_seconds"] == 1800  # nothing counts after now, whatever is recorded


def test_window_parsing():
    now = datetime(2026, 1, 15, 10, 30, 15, 999999, tzinfo=UTC)
    assert Window.parse(None, None, now) == Window(
        reports.to_seconds(now) - 86400, reports.to_seconds(now), reports.to_seconds(now)
    )
    day = Window.parse("2026-01-15", "2026-01-16", now)
    assert (reports.iso(day.start), reports.iso(day.end)) == (
        "2026-01-15T00:00:00Z",
        "2026-01-16T00:00:00Z",
    )
    assert Window.parse(None, "2026-01-16", now).start == day.start  # 24 hours before --to
    # an offset is converted to UTC; a fraction of a second is dropped
    local = Window.parse("2026-01-15T12:00:00+02:00", "2026-01-15T11:00:00.7", now)
    assert (local.start, local.end) == (day.start + 36000, day.start + 36000 + 3600)
    for start, end, message in [
        ("2026-01-15", "2026-01-15", "--to 2026-01-15T00:00:00Z must be after --from"),
        ("2026-01-16", "2026-01-15", "must be after --from 2026-01-16T00:00:00Z"),
        ("2026-01-16", None, "--to 2026-01-15T10:30:15Z must be after"),  # the future
        ("yesterday", None, "--from 'yesterday' is not an ISO date"),
        (None, "2026-13-01", "--to '2026-13-01' is not an ISO date"),
    ]:
        with pytest.raises(InputError, match=message):
            Window.parse(start, end, now)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--from", TO, "--to", FROM], f"Error: --to {FROM} must be after --from {TO}"),
        (["--from", FROM, "--to", FROM], f"Error: --to {FROM} must be after --from {FROM}"),
        (["--from", "noon"], "Error: --from 'noon' is not an ISO date or date and time"),
        (["--type", "cpu"], "Error: Invalid value for '--type'"),
    ],
)
def test_bad_options_exit_2_with_one_line(env, args, message):
    result = run("report", "usage", "--type", "instance", *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(message)


# --- who sees what, untrusted names, odd records -------------------------------------------------


def test_account_filter(env):
    for report_type, table in TABLES.items():
        result = report_usage(report_type, "--account", "ops")
        assert result.exit_code == 0, result.output
        ops = [line.split() for line in table[1:] if line.startswith("ops ")]
        assert cells(result.stdout) == [table[0].split(), *ops]
    result = report_usage("instance", "--account", "nobody")
    assert cells(result.stdout) == [TABLES["instance"][0].split()]


def test_a_user_reports_on_their_own_account_only(env):
    with acting_as(Principal("ops", "carol")):
        result = report_usage("instance")
        assert result.exit_code == 0, result.output
        assert cells(result.stdout) == [
            TABLES["instance"][0].split(),
            TABLES["instance"][3].split(),
        ]
        result = report_usage("instance", "--account", "dev")
    assert result.exit_code == 2
    assert result.stderr == "Error: --account: ops/carol may report on account ops only\n"


HOSTILE_ACCOUNT = '<script>alert("pwned")</script>&amp;'
HOSTILE_USER = '=HYPERLINK("http://x")<img src=x onerror=alert(1)>'


def test_untrusted_names_are_escaped_in_html_and_defused_in_csv(tmp_path):
    state = init_state(tmp_path / "state.json")
    owner = (HOSTILE_ACCOUNT, HOSTILE_USER)
    record_all(state, [
        (owner, "i-h1", "instance", "started", "10:00:00", {**SMALL, "type": "<i>x</i>"}),
        (owner, "i-h1", "instance", "stopped", "12:00:00", {}),
        ("dev/alice", "i-a1", "instance", "started", "10:00:00", SMALL),
    ])  # fmt: skip
    report = usage_report(StateStore(state).all(usage.TABLE), "instance", window())
    page = reports.to_html(report)
    assert "<script" not in page and "<img" not in page and "<i>" not in page
    assert html.escape(HOSTILE_ACCOUNT) in page  # in the table
    assert html.escape(f"{HOSTILE_ACCOUNT}/{HOSTILE_USER}"[: reports.LABEL_CHARS - 1]) in page
    assert page.count("<rect") == 2
    hostile = list(csv.reader(io.StringIO(reports.to_csv(report))))[1]  # "<" sorts first
    assert hostile[:3] == [HOSTILE_ACCOUNT, "'" + HOSTILE_USER, "<i>x</i>"]
    assert hostile[5] == "2.0000"


def test_no_usage_recorded(env, tmp_path, monkeypatch):
    monkeypatch.setenv("CLOUDCTL_STATE", str(init_state(tmp_path / "empty.json")))
    result = report_usage("s3")
    assert result.exit_code == 0, result.output
    assert cells(result.stdout) == [TABLES["s3"][0].split()]
    result = report_usage("s3", "--format", "html")
    assert "No usage in this window." in result.stdout and "<rect" not in result.stdout


def test_repeated_and_unmatched_records_change_nothing(tmp_path):
    state = init_state(tmp_path / "state.json")
    record_all(state, [
        ("dev/alice", "i-a1", "instance", "stopped", "10:10:00", {}),  # never started
        ("dev/alice", "i-a1", "instance", "started", "10:20:00", SMALL),
        ("dev/alice", "i-a1", "instance", "started", "10:40:00", SMALL),  # repeated
        ("dev/alice", "i-a1", "instance", "stopped", "11:20:00", {}),
        ("dev/alice", "i-a1", "instance", "terminated", "11:30:00", {}),  # not running
        ("dev/alice", "photos", "bucket", "stored", "10:00:00", {"bytes": 10}),  # no "created"
        ("dev/alice", "photos", "bucket", "created", "10:30:00", {"bucket": "photos"}),
        ("dev/alice", "photos", "bucket", "stored", "11:00:00", {"bytes": 30}),
        # recorded in this order, but ordered by their microseconds: a run within 10:50:00
        ("dev/bob", "i-b1", "instance", "stopped", "10:50:00.900000", {}),
        ("dev/bob", "i-b1", "instance", "started", "10:50:00.100000", SMALL),
        # an address whose whole life was before the window: no row
        ("ops/dave", "eipalloc-d1", "address", "allocated", "09:00:00", {}),
        ("ops/dave", "eipalloc-d1", "address", "associated", "09:10:00", {}),
        ("ops/dave", "eipalloc-d1", "address", "released", "09:30:00", {}),
    ])  # fmt: skip
    docs = StateStore(state).all(usage.TABLE)
    [alice, bob] = rows(docs, "instance")
    assert (alice["instance_seconds"], alice["launched"]) == (3600, 1)
    assert (bob["instance_seconds"], bob["launched"], bob["instances"]) == (0, 1, 0)
    assert rows(docs, "elastic-ip") == []
    [bucket] = rows(docs, "s3")
    assert bucket["byte_seconds"] == 10 * 3600 + 30 * 7200
    assert (bucket["buckets"], bucket["created"], bucket["max_bytes"]) == (1, 1, 30)
