# SPDX-License-Identifier: GPL-3.0-or-later
"""Read the JSON files the roles write for the runtime modules (nc: node.json, sc: sc.json)."""

from __future__ import annotations

import json
from collections.abc import Iterable


class RoleConfigError(Exception):
    """The role's file is missing, unreadable or lacks a key (one line, for fail_json)."""


def read_role_config(path: str, role: str, required: Iterable[str] = ()) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            conf = json.load(f)
    except (OSError, ValueError) as exc:
        raise RoleConfigError(
            f"cannot read {path} (written by the {role} role: is it deployed?): {exc}"
        ) from None
    if not isinstance(conf, dict):
        raise RoleConfigError(f"{path} is not a JSON object")
    missing = [key for key in required if conf.get(key) in (None, "")]
    if missing:
        raise RoleConfigError(f"{path} lacks {', '.join(missing)}")
    return conf
