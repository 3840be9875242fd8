from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import yaml

from cloudctl.cli.output import render


@dataclass
class Row:
    host: str
    status: str
    detail: str


ROWS = [Row("ciab", "healthy", "tgtd answers"), Row("node-1", "unhealthy", "no\nsocket")]


def test_table_aligns_columns_and_keeps_rows_on_one_line():
    assert render(ROWS, "table").splitlines() == [
        "HOST    STATUS     DETAIL",
        "ciab    healthy    tgtd answers",
        "node-1  unhealthy  no socket",
    ]


def test_columns_select_and_order_fields():
    text = render(ROWS, "table", ["status", "host"])
    assert text.splitlines()[0] == "STATUS     HOST"


def test_json_and_yaml_are_lists_of_records():
    records = [
        {"host": "ciab", "status": "healthy", "detail": "tgtd answers"},
        {"host": "node-1", "status": "unhealthy", "detail": "no\nsocket"},
    ]
    assert json.loads(render(ROWS, "json")) == records
    assert yaml.safe_load(render(ROWS, "yaml")) == records


def test_dicts_empty_lists_and_cells():
    assert render([], "json") == "[]"
    assert render([], "table", ["host"]) == "HOST"
    text = render([{"a": True, "b": None, "c": ["x", "y"]}], "table")
    assert text.splitlines()[1] == "yes     x, y"


def test_unknown_format():
    with pytest.raises(ValueError, match="unknown output format"):
        render(ROWS, "xml")
