"""Print, as a JSON list, the pip download options that select wheels for this Python.

Run on the Cloud Controller by its own Python, so the controller can download wheels that
install there: same Python version and ABI, and every manylinux tag its glibc accepts.
"""

import json
import os
import platform
import sys

version = f"{sys.version_info.major}.{sys.version_info.minor}"
machine = platform.machine()
glibc_minor = int(os.confstr("CS_GNU_LIBC_VERSION").split()[1].split(".")[1])

options = [
    "--python-version",
    version,
    "--implementation",
    "cp",
    "--abi",
    f"cp{sys.version_info.major}{sys.version_info.minor}",
]
# manylinux_2_17 (alias manylinux2014) is the oldest tag current wheels still use.
for minor in range(glibc_minor, 16, -1):
    options += ["--platform", f"manylinux_2_{minor}_{machine}"]
options += ["--platform", f"manylinux2014_{machine}", "--platform", f"linux_{machine}"]
print(json.dumps(options))
