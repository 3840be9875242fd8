"""Render records for the operator: one function for every command's output."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import click
import yaml

FORMATS = ("table", "json", "yaml")


def to_record(item: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return dataclasses.asdict(item)
    if isinstance(item, Mapping):
        return dict(item)
    raise TypeError(f"cannot render {type(item).__name__} as a record")


def render(records: Iterable[Any], fmt: str = "table", columns: Sequence[str] | None = None) -> str:
    """Records (dicts or dataclasses) as a table, a JSON list or a YAML list.

    `columns` selects and orders the fields; by default all fields of the first record.
    """
    rows = [to_record(r) for r in records]
    if columns is None:
        columns = list(rows[0]) if rows else []
    rows = [{c: row.get(c) for c in columns} for row in rows]
    if fmt == "json":
        return json.dumps(rows, indent=2, default=str)
    if fmt == "yaml":
        text = yaml.safe_dump(rows, sort_keys=False, default_flow_style=False, width=1000)
        return text.rstrip("\n")
    if fmt == "table":
        return _table(rows, columns)
    raise ValueError(f"unknown output format {fmt!r}")


def output_result(
    records: Iterable[Any], fmt: str = "table", columns: Sequence[str] | None = None
) -> None:
    text = render(records, fmt, columns)
    if text:
        click.echo(text)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value)
    return " ".join(str(value).split())  # one line per row


def _table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    if not columns:
        return ""
    header = [c.upper() for c in columns]
    body = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(cell) for cell in col) for col in zip(header, *body, strict=True)]
    lines = []
    for cells in [header, *body]:
        padded = [cell.ljust(w) for cell, w in zip(cells, widths, strict=True)]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)
