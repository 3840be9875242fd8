"""Usage reports: figures per account and user from the usage record (cloudctl/usage.py).

    window = Window.parse("2026-01-15", "2026-01-16")
    report = usage_report(snap.table.row(usage.TABLE).all(), "instance", window)
    print(to_csv(report))

Semantics (every figure is computed in whole seconds, exactly, with integers):
- Times are UTC. An event's time counts to the second: its sub-second part is dropped; so are
  a --from/--to's. The window is [from, to): an event at `to` is outside it.
- Each resource's events are replayed in time order from the first one ever recorded, so a
  resource opened before `from` (an instance started, a volume created, an address allocated,
  a bucket's last "stored" sample) counts from `from` on: the window clips spans, it does not
  hide their beginning. Events after `to` change nothing in the window.
- A span opens at its opening event and closes at the next closing one: instance started ->
  stopped or terminated; volume created -> deleted; attachment attached -> detached or the
  volume's deletion; snapshot created -> deleted; address allocated -> released; association
  associated -> disassociated or released; bucket created -> deleted. An opening event while
  the span is open, or a closing event while it is closed, changes nothing (a repeated record).
- A span still open (no closing event yet) counts up to `to`, or up to now when `to` is in the
  future: nobody knows yet whether a running instance will still run at `to`. Nothing counts
  after now (a record stamped in the future by a skewed clock does not either).
- Hours are span seconds / 3600. GB-hours multiply by the size recorded at the opening event:
  volume and snapshot size_gb; instance memory_mb / 1024 (memory GB-hours); S3 bytes / 2^30
  (GB = GiB, as volume sizes and AWS's storage bills count them). vCPU-hours: vcpus x hours.
  Each run of an instance (started -> stopped) counts with the type, vcpus and memory_mb
  of its own "started" event.
- S3: a bucket holds 0 bytes from "created" until its first "stored" sample, then each
  sample's bytes (the bucket's total after a change) until the next sample; nothing after
  "deleted". A sample of a bucket with no "created" record opens it (the sample proves it
  exists). max_bytes is the largest total of a row's buckets at any instant of the window.
- Counts: `launched` is the number of instances whose first "started" event (the run) lies in
  the window (a restart after a stop is no launch); created/deleted/allocated/released count
  those events in the window; instances/volumes/snapshots/addresses/buckets count the
  resources that existed (instances: ran) for at least one second of the window.
- Rows: one per account and user (the resource's owner), and for instances per type too,
  for every owner with a resource or an event in the window.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from cloudctl.errors import InputError
from cloudctl.state import StateError

DEFAULT_SPAN = timedelta(hours=24)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOUR = 3600
GIB = 2**30
DECIMALS = Decimal("0.0001")  # 1 s is 0.000278 h: four decimals tell seconds apart
BAR_COLOUR = "#2f6db5"  # the chart's bars (tests/integration/test_report_html.py looks for it)


# --- the window ---------------------------------------------------------------------------


def parse_time(text: str, option: str) -> datetime:
    """An ISO 8601 date or date and time; UTC unless it names its offset."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(
            f"{option} {text!r} is not an ISO date or date and time "
            "(e.g. 2026-01-15 or 2026-01-15T10:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def to_seconds(moment: datetime) -> int:
    """Whole seconds since the epoch, rounded down (exact: no float on the way)."""
    return (moment - EPOCH) // timedelta(seconds=1)


def iso(seconds: int) -> str:
    return (EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Window:
    """[start, end) in whole seconds since the epoch; `now` ends spans still open."""

    start: int
    end: int
    now: int

    @classmethod
    def parse(cls, start: str | None, end: str | None, now: datetime | None = None) -> Window:
        """--from/--to as given (None: the 24 hours before --to, and now)."""
        now_s = to_seconds(now or datetime.now(UTC))
        end_s = to_seconds(parse_time(end, "--to")) if end else now_s
        start_s = (
            to_seconds(parse_time(start, "--from"))
            if start
            else end_s - int(DEFAULT_SPAN.total_seconds())
        )
        if end_s <= start_s:
            raise InputError(f"--to {iso(end_s)} must be after --from {iso(start_s)}")
        return cls(start_s, end_s, now_s)

    def overlap(self, start: int, end: int | None) -> int:
        """Seconds of the span [start, end) (end None: still open) inside the window, up to
        now at most."""
        stop = min(self.end, self.now) if end is None else min(end, self.end, self.now)
        return max(0, stop - max(start, self.start))

    def __contains__(self, moment: int) -> bool:
        return self.start <= moment < self.end


# --- spans from events ----------------------------------------------------------------------


@dataclass
class Event:
    at: int
    name: str
    doc: Mapping[str, Any]

    @property
    def owner(self) -> tuple[str, str]:
        return (str(self.doc["account"]), str(self.doc["user"]))


@dataclass
class Span:
    start: int
    end: int | None
    opening: Event


def spans(events: list[Event], opens: set[str], closes: set[str]) -> list[Span]:
    """[opening event, next closing event) spans of one resource; events in time order."""
    found: list[Span] = []
    current: Span | None = None
    for event in events:
        if event.name in opens and current is None:
            current = Span(event.at, None, event)
            found.append(current)
        elif event.name in closes and current is not None:
            current.end = event.at
            current = None
    return found


def events_by_resource(docs: Iterable[Mapping[str, Any]], kind: str) -> dict[str, list[Event]]:
    """The events of one kind per resource id, in time order to the microsecond (ties: in
    recorded order)."""
    timed: dict[str, list[tuple[datetime, Mapping[str, Any]]]] = defaultdict(list)
    for doc in docs:
        if doc.get("kind") != kind:
            continue
        try:
            at = parse_time(str(doc["at"]), "at")
        except (KeyError, InputError):
            raise StateError(f"usage record {doc.get('id')} has no valid time") from None
        timed[str(doc["resource_id"])].append((at, doc))
    return {
        resource_id: [
            Event(to_seconds(at), str(doc["event"]), doc)
            for at, doc in sorted(records, key=lambda record: record[0])  # stable sort
        ]
        for resource_id, records in timed.items()
    }


# --- figures per report type ----------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """A column: `name` as shown, computed from the exact integer field `source` / `per`."""

    name: str
    source: str = ""  # default: the name itself
    per: int = 1  # 1: a count or a byte figure, shown as the integer itself

    def shown(self, exact: int) -> int | Decimal:
        if self.per == 1:
            return exact
        return (Decimal(exact) / Decimal(self.per)).quantize(DECIMALS, ROUND_HALF_EVEN)

    @property
    def field(self) -> str:
        return self.source or self.name


@dataclass(frozen=True)
class Lifetime:
    """How a volume, snapshot or address is measured: its life and an optional second span
    (attached, associated) inside it."""

    noun: str  # the count of those that existed in the window: "volumes"
    opens: str
    closes: str
    size: str | None  # the opening event's figure that multiplies the seconds (size_gb)
    seconds: str  # the exact field of the life: "gb_seconds"
    inner: tuple[str, frozenset[str], str] | None = None  # opens, closes, exact field


class _Rows:
    """Rows keyed by owner (and type): the key fields and integer figures starting at 0."""

    def __init__(self, keys: tuple[str, ...], figures: Iterable[Figure]) -> None:
        self.keys = keys
        self.fields = tuple(f.field for f in figures)
        self.rows: dict[tuple[str, ...], dict[str, Any]] = {}
        self.seen: dict[tuple[tuple[str, ...], str], set[str]] = defaultdict(set)

    def row(self, key: tuple[str, ...]) -> dict[str, Any]:
        if key not in self.rows:
            self.rows[key] = {**dict(zip(self.keys, key, strict=True))}
            self.rows[key].update(dict.fromkeys(self.fields, 0))
        return self.rows[key]

    def count_once(self, key: tuple[str, ...], field_name: str, resource_id: str) -> None:
        """+1 on a row's field for a resource not counted there yet."""
        seen = self.seen[(key, field_name)]
        if resource_id not in seen:
            seen.add(resource_id)
            self.row(key)[field_name] += 1

    def count_events(self, events: list[Event], window: Window, names: Iterable[str]) -> None:
        """+1 on field `name` of the event's owner for each event of these names in the window."""
        for event in events:
            if event.name in names and event.at in window:
                self.row(event.owner)[event.name] += 1

    def sorted(self) -> list[dict[str, Any]]:
        return [self.rows[key] for key in sorted(self.rows)]


def _instance_rows(
    by_resource: dict[str, list[Event]], window: Window, table: _Rows
) -> list[dict[str, Any]]:
    for resource_id, events in by_resource.items():
        starts = [e for e in events if e.name == "started"]
        if starts and starts[0].at in window:
            table.row((*starts[0].owner, str(starts[0].doc.get("type", ""))))["launched"] += 1
        for span in spans(events, {"started"}, {"stopped", "terminated"}):
            seconds = window.overlap(span.start, span.end)
            if seconds:
                doc = span.opening.doc
                key = (*span.opening.owner, str(doc.get("type", "")))
                row = table.row(key)
                row["instance_seconds"] += seconds
                row["vcpu_seconds"] += int(doc.get("vcpus", 0)) * seconds
                row["memory_mb_seconds"] += int(doc.get("memory_mb", 0)) * seconds
                table.count_once(key, "instances", resource_id)
    return table.sorted()


def _lifetime_rows(
    life: Lifetime, by_resource: dict[str, list[Event]], window: Window, table: _Rows
) -> list[dict[str, Any]]:
    for resource_id, events in by_resource.items():
        table.count_events(events, window, (life.opens, life.closes))
        for span in spans(events, {life.opens}, {life.closes}):
            seconds = window.overlap(span.start, span.end)
            if seconds:
                size = int(span.opening.doc.get(life.size, 0)) if life.size else 1
                table.row(span.opening.owner)[life.seconds] += size * seconds
                table.count_once(span.opening.owner, life.noun, resource_id)
        if life.inner:
            opens, closes, inner_field = life.inner
            for span in spans(events, {opens}, closes):
                seconds = window.overlap(span.start, span.end)
                if seconds:
                    table.row(span.opening.owner)[inner_field] += seconds
    return table.sorted()


def _bucket_rows(
    by_resource: dict[str, list[Event]], window: Window, table: _Rows
) -> list[dict[str, Any]]:
    changes: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)  # (time, +-bytes)
    for resource_id, events in by_resource.items():
        table.count_events(events, window, ("created", "deleted"))
        for start, end, stored, owner in _bucket_steps(events):
            seconds = window.overlap(start, end)
            if seconds:
                table.count_once(owner, "buckets", resource_id)
                table.row(owner)["byte_seconds"] += stored * seconds
                clipped = max(start, window.start)
                changes[owner] += [(clipped, stored), (clipped + seconds, -stored)]
    for owner, owner_changes in changes.items():
        total = peak = 0
        for _, change in sorted(owner_changes):  # at one instant, decreases come first
            total += change
            peak = max(peak, total)
        table.row(owner)["max_bytes"] = peak
    return table.sorted()


def _bucket_steps(events: list[Event]) -> list[tuple[int, int | None, int, tuple[str, str]]]:
    """(start, end or None, bytes held, owner) steps of one bucket's stored bytes."""
    steps: list[tuple[int, int | None, int, tuple[str, str]]] = []
    held: tuple[int, int, tuple[str, str]] | None = None  # since, bytes, owner
    for event in events:
        if event.name == "created" and held is not None:
            continue  # a repeated record
        if held is not None:
            steps.append((held[0], event.at, held[1], held[2]))
        if event.name == "created":
            held = (event.at, 0, event.owner)
        elif event.name == "stored":
            held = (event.at, int(event.doc.get("bytes", 0)), event.owner)
        elif event.name == "deleted":
            held = None
    if held is not None:
        steps.append((held[0], None, held[1], held[2]))
    return steps


OWNER = ("account", "user")
TYPED_OWNER = ("account", "user", "type")
RowsFunction = Callable[[dict[str, list[Event]], Window, _Rows], list[dict[str, Any]]]


@dataclass(frozen=True)
class ReportType:
    kind: str  # the usage record's kind
    keys: tuple[str, ...]
    figures: tuple[Figure, ...]
    main: str  # the chart's figure
    rows: RowsFunction

    def figure(self, name: str) -> Figure:
        return next(f for f in self.figures if f.name == name)


def _lifetime(life: Lifetime) -> RowsFunction:
    return lambda by_resource, window, table: _lifetime_rows(life, by_resource, window, table)


REPORTS: dict[str, ReportType] = {
    "instance": ReportType(
        "instance",
        TYPED_OWNER,
        (
            Figure("instances"),
            Figure("launched"),
            Figure("instance_hours", "instance_seconds", HOUR),
            Figure("vcpu_hours", "vcpu_seconds", HOUR),
            Figure("memory_gb_hours", "memory_mb_seconds", 1024 * HOUR),
        ),
        "instance_hours",
        _instance_rows,
    ),
    "volume": ReportType(
        "volume",
        OWNER,
        (
            Figure("volumes"),
            Figure("created"),
            Figure("deleted"),
            Figure("gb_hours", "gb_seconds", HOUR),
            Figure("attached_hours", "attached_seconds", HOUR),
        ),
        "gb_hours",
        _lifetime(
            Lifetime(
                noun="volumes",
                opens="created",
                closes="deleted",
                size="size_gb",
                seconds="gb_seconds",
                inner=("attached", frozenset({"detached", "deleted"}), "attached_seconds"),
            )
        ),
    ),
    "snapshot": ReportType(
        "snapshot",
        OWNER,
        (
            Figure("snapshots"),
            Figure("created"),
            Figure("deleted"),
            Figure("gb_hours", "gb_seconds", HOUR),
        ),
        "gb_hours",
        _lifetime(
            Lifetime(
                noun="snapshots",
                opens="created",
                closes="deleted",
                size="size_gb",
                seconds="gb_seconds",
            )
        ),
    ),
    "elastic-ip": ReportType(
        "address",
        OWNER,
        (
            Figure("addresses"),
            Figure("allocated"),
            Figure("released"),
            Figure("address_hours", "address_seconds", HOUR),
            Figure("associated_hours", "associated_seconds", HOUR),
        ),
        "address_hours",
        _lifetime(
            Lifetime(
                noun="addresses",
                opens="allocated",
                closes="released",
                size=None,
                seconds="address_seconds",
                inner=(
                    "associated",
                    frozenset({"disassociated", "released"}),
                    "associated_seconds",
                ),
            )
        ),
    ),
    "s3": ReportType(
        "bucket",
        OWNER,
        (
            Figure("buckets"),
            Figure("created"),
            Figure("deleted"),
            Figure("gb_hours", "byte_seconds", GIB * HOUR),
            Figure("max_bytes"),
        ),
        "gb_hours",
        _bucket_rows,
    ),
}
REPORT_TYPES = tuple(REPORTS)


@dataclass
class Report:
    type: str
    window: Window
    rows: list[dict[str, Any]]  # key fields and exact integer figures

    @property
    def spec(self) -> ReportType:
        return REPORTS[self.type]

    @property
    def columns(self) -> list[str]:
        return [*self.spec.keys, *(f.name for f in self.spec.figures)]

    def shown_rows(self) -> list[dict[str, Any]]:
        """Rows as shown: keys, counts, bytes, and hour figures to four decimals."""
        return [
            {
                **{key: row[key] for key in self.spec.keys},
                **{f.name: f.shown(row[f.field]) for f in self.spec.figures},
            }
            for row in self.rows
        ]

    def per_owner(self) -> list[tuple[str, str, int]]:
        """(account, user, exact main figure) summed over a row's types: the chart's bars."""
        source = self.spec.figure(self.spec.main).field
        totals: dict[tuple[str, str], int] = defaultdict(int)
        for row in self.rows:
            totals[(row["account"], row["user"])] += row[source]
        return [(account, user, total) for (account, user), total in totals.items()]

    def document(self) -> dict[str, Any]:
        """The report as data: the window and every row with its shown figures and the exact
        integer ones they come from (seconds, GB-seconds, MB-seconds, byte-seconds)."""
        exact = [f.source for f in self.spec.figures if f.per != 1]
        return {
            "report": self.type,
            "from": iso(self.window.start),
            "to": iso(self.window.end),
            "columns": self.columns,
            "rows": [
                {**_plain(shown), **{name: row[name] for name in exact}}
                for shown, row in zip(self.shown_rows(), self.rows, strict=True)
            ],
        }


def _plain(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: float(v) if isinstance(v, Decimal) else v for k, v in row.items()}


def usage_report(
    docs: Iterable[Mapping[str, Any]], report_type: str, window: Window, account: str | None = None
) -> Report:
    """The report of one type over `window` from usage documents (see the module's doc);
    with `account`, of that account only."""
    spec = REPORTS.get(report_type)
    if spec is None:
        raise InputError(f"unknown report type {report_type!r} (one of {', '.join(REPORTS)})")
    if account is not None:
        docs = [doc for doc in docs if doc.get("account") == account]
    table = _Rows(spec.keys, spec.figures)
    return Report(
        report_type, window, spec.rows(events_by_resource(docs, spec.kind), window, table)
    )


# --- renderers ------------------------------------------------------------------------------


def to_json(report: Report) -> str:
    return json.dumps(report.document(), indent=2)


def to_csv(report: Report) -> str:
    """A header row and one row per account and user (and type). Text cells that a
    spreadsheet would take for a formula (=, +, -, @) get a leading ' (user names may)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(report.columns)
    for row in report.shown_rows():
        writer.writerow([_csv_cell(row[c]) for c in report.columns])
    return out.getvalue().rstrip("\n")


def _csv_cell(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value


# --- HTML -----------------------------------------------------------------------------------

TITLES = {
    "instance": "Instance usage",
    "volume": "Volume usage",
    "snapshot": "Snapshot usage",
    "elastic-ip": "Elastic IP usage",
    "s3": "S3 (Walrus) usage",
}
# The chart: one bar per account and user, its length proportional to the main figure.
LABEL_WIDTH, BAR_MAX, VALUE_WIDTH = 260, 440, 110
ROW_HEIGHT, BAR_HEIGHT, LABEL_CHARS = 30, 20, 34

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #1a1a1a; background: #ffffff; }}
h1 {{ font-size: 20px; margin: 0 0 4px; }}
h2 {{ font-size: 15px; margin: 20px 0 8px; }}
p {{ margin: 0; color: #555555; }}
svg text {{ font-size: 13px; fill: #1a1a1a; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ padding: 4px 10px; border-bottom: 1px solid #dddddd; text-align: left; }}
th {{ background: #f2f2f2; }}
td.number {{ text-align: right; font-variant-numeric: tabular-nums; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>From {start} to {end} (UTC), per account and user. Made by cloudctl report usage.</p>
<h2>{main} per account/user</h2>
{chart}
<h2>Figures</h2>
{table}
</body>
</html>
"""


def to_html(report: Report) -> str:
    """A self-contained page (inline CSS and SVG, nothing fetched): a bar chart of the main
    figure per account and user, and the table. Every text from the state is escaped."""
    e = html.escape
    return PAGE.format(
        title=e(TITLES[report.type]),
        start=e(iso(report.window.start)),
        end=e(iso(report.window.end)),
        main=e(report.spec.main),
        chart=_svg_chart(report),
        table=_html_table(report),
    )


def _svg_chart(report: Report) -> str:
    bars = report.per_owner()
    if not bars:
        return "<p>No usage in this window.</p>"
    figure = report.spec.figure(report.spec.main)
    largest = max(total for _, _, total in bars) or 1
    width = LABEL_WIDTH + BAR_MAX + VALUE_WIDTH
    height = ROW_HEIGHT * len(bars)
    lines = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        + f'aria-label="{html.escape(figure.name)} per account and user">'
    ]
    for index, (account, user, total) in enumerate(bars):
        label = f"{account}/{user}"
        if len(label) > LABEL_CHARS:
            label = label[: LABEL_CHARS - 1] + "…"
        top = index * ROW_HEIGHT
        length = round(BAR_MAX * total / largest)
        middle = top + BAR_HEIGHT // 2 + 5
        label_x, value_x = LABEL_WIDTH - 10, LABEL_WIDTH + length + 6
        bar = f'x="{LABEL_WIDTH}" y="{top}" width="{length}" height="{BAR_HEIGHT}"'
        lines += [
            f'<text x="{label_x}" y="{middle}" text-anchor="end">{html.escape(label)}</text>',
            f'<rect {bar} fill="{BAR_COLOUR}"/>',
            f'<text x="{value_x}" y="{middle}">{figure.shown(total)}</text>',
        ]
    lines.append("</svg>")
    return "\n".join(lines)


def _html_table(report: Report) -> str:
    keys = set(report.spec.keys)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in report.columns)
    body = []
    for row in report.shown_rows():
        cells = "".join(
            f"<td>{html.escape(str(row[c]))}</td>"
            if c in keys
            else f'<td class="number">{row[c]}</td>'
            for c in report.columns
        )
        body.append(f"<tr>{cells}</tr>")
    return "<table>\n<tr>{}</tr>\n{}\n</table>".format(head, "\n".join(body))
