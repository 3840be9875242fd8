"""Offline stand-in for the get-pip.py that ansible-test downloads from its own CI host.

ansible-test creates each sanity test's virtualenv without pip and bootstraps pip with
`python get_pip_<version>.py [pip options] pip==<version> --no-setuptools --no-wheel`,
fetching that script from a host that is not reachable here. setup.sh copies this file to
~/.ansible/test/cache/get_pip_<version>.py, where ansible-test looks first. It does what
get-pip.py does with what is here: pip from the standard library's ensurepip, then the
requested packages from PyPI, and no setuptools/wheel left unless asked for.
"""

from __future__ import annotations

import subprocess
import sys

NO_SETUPTOOLS = "--no-setuptools"
NO_WHEEL = "--no-wheel"


def main() -> None:
    args = sys.argv[1:]
    pip_args = [arg for arg in args if arg not in (NO_SETUPTOOLS, NO_WHEEL)]
    python = sys.executable
    subprocess.run([python, "-m", "ensurepip", "--upgrade"], check=True)
    subprocess.run([python, "-m", "pip", "install", *pip_args], check=True)
    # ensurepip brings setuptools along; get-pip.py leaves it out when told so
    unwanted = [
        name for flag, name in ((NO_SETUPTOOLS, "setuptools"), (NO_WHEEL, "wheel")) if flag in args
    ]
    if unwanted:
        subprocess.run([python, "-m", "pip", "uninstall", "-q", "-y", *unwanted], check=True)


if __name__ == "__main__":
    main()
