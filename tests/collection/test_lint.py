"""ansible-lint, production profile, over the project (the collection, inventory/, molecule/).

Configured in .ansible-lint (offline: Galaxy is out of reach; skips carry their reason).
About 40 s on 2 cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT

BIN = Path(sys.executable).parent


def test_ansible_lint_production_profile_passes():
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "NO_COLOR": "1"}
    proc = subprocess.run(
        [str(BIN / "ansible-lint"), "--profile", "production", "--nocolor"],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "Profile 'production' was required, and it passed." in output, output[-3000:]
