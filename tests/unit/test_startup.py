"""cloudctl's start-up imports only what the command needs (a fresh interpreter each)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
import click
from cloudctl.cli.main import cli
cli.get_command(click.Context(cli), "volume")
print(json.dumps(sorted(sys.modules)))
"""


def test_a_command_loads_its_own_module_and_no_etcd_client():
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out))
    assert "cloudctl.cli.volume" in loaded
    # other commands' modules, and etcd3gw + requests (half of the start-up before: only an
    # etcd-backed state needs them) wait until they are used
    assert not {"cloudctl.cli.report", "cloudctl.cli.api", "etcd3gw", "requests"} & loaded
