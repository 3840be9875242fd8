"""Test-only callback: write the result of each task to $MODULE_RESULT_FILE as JSON lines.

Used by tests/modules/modhelpers.py, so that a test reads exactly what the module returned
(ok, changed or failed) without an extra task.
"""

from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: module_result
type: aggregate
short_description: write each task result to $MODULE_RESULT_FILE (tests only)
description: Writes one JSON line per task result to the file named by MODULE_RESULT_FILE.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "module_result"
    CALLBACK_NEEDS_ENABLED = True

    def _write(self, result, failed: bool) -> None:
        path = os.environ.get("MODULE_RESULT_FILE")
        if not path:
            return
        data = dict(result._result)
        data["failed"] = failed or bool(data.get("failed"))
        data["_task"] = result._task.get_name()
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(data, default=str) + "\n")

    def v2_runner_on_ok(self, result):
        self._write(result, False)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._write(result, True)

    def v2_runner_on_unreachable(self, result):
        self._write(result, True)
