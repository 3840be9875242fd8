"""The collection as users get it: built by ansible-galaxy, installed into an empty
collections path, and run from there, away from the source tree and the project's
ansible.cfg."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT

SOURCE = PROJECT / "collections/ansible_collections/cloudctl/cloud"
BIN = Path(sys.executable).parent
ZONE = {"subnet": "172.31.0.0/24", "bridge": "cloudbr0", "public_interface": ""}


def ansible(cmd: str, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / cmd), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """Build the tarball and install it into an empty collections path."""
    tmp = tmp_path_factory.mktemp("collection")
    # No ansible.cfg of the project, no other collections path: only the installed copy.
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(tmp),
        "ANSIBLE_CONFIG": str(tmp / "none.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(tmp / "installed"),
        "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
    }
    built = ansible(
        "ansible-galaxy",
        "collection",
        "build",
        str(SOURCE),
        "--output-path",
        str(tmp),
        env=env,
        cwd=tmp,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (tarball,) = tmp.glob("cloudctl-cloud-*.tar.gz")
    done = ansible(
        "ansible-galaxy",
        "collection",
        "install",
        "--offline",
        str(tarball),
        "-p",
        str(tmp / "installed"),
        env=env,
        cwd=tmp,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return {
        "tmp": tmp,
        "env": env,
        "tarball": tarball,
        "root": tmp / "installed/ansible_collections/cloudctl/cloud",
    }


def test_the_tarball_holds_the_collection_and_nothing_of_the_workshop(installed):
    galaxy = yaml.safe_load((SOURCE / "galaxy.yml").read_text())
    assert installed["tarball"].name == f"cloudctl-cloud-{galaxy['version']}.tar.gz"
    with tarfile.open(installed["tarball"]) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("MANIFEST.json"))
    assert manifest["collection_info"]["license"] == ["GPL-3.0-or-later"]
    for needed in (
        "LICENSE",
        "meta/runtime.yml",
        "plugins/modules/cloud_instance.py",
        "plugins/module_utils/cloud_net.py",
        "roles/nc/tasks/main.yml",
        "playbooks/site.yml",
        "playbooks/runtime/instance_run.yml",
    ):
        assert needed in names, needed
    leftovers = [n for n in names if "/molecule" in n or "__pycache__" in n or n.endswith(".pyc")]
    assert leftovers == []


def test_installed_copy_is_the_one_ansible_uses(installed):
    listed = ansible(
        "ansible-galaxy",
        "collection",
        "list",
        "--format",
        "json",
        env=installed["env"],
        cwd=installed["tmp"],
    )
    assert listed.returncode == 0, listed.stderr
    holders = [
        path for path, found in json.loads(listed.stdout).items() if "cloudctl.cloud" in found
    ]
    assert holders == [str(installed["tmp"] / "installed/ansible_collections")]
    doc = ansible(
        "ansible-doc", "cloudctl.cloud.bridge", env=installed["env"], cwd=installed["tmp"]
    )
    assert doc.returncode == 0, doc.stderr
    assert str(installed["root"] / "plugins/modules/bridge.py") in doc.stdout


def precheck(installed: dict, clusters: dict) -> subprocess.CompletedProcess:
    """The collection's precheck playbook, from the installed copy, on a cloud-in-a-box."""
    box = {"box": {"cloud_cluster": "zone-a"}}
    components = {g: {"hosts": box} for g in ("clc", "walrus", "cc", "sc", "nc")}
    inventory = {
        "all": {
            # The clc role installs cloudctl from a source checkout: an installed collection is
            # told where one is.
            "vars": {
                "ansible_connection": "local",
                "cloud_clusters": clusters,
                "clc_project_src": str(PROJECT),
            },
            "children": {"cloud": {"children": components}},
        }
    }
    path = installed["tmp"] / "inventory.yml"
    path.write_text(json.dumps(inventory))
    return ansible(
        "ansible-playbook",
        "-v",
        "-i",
        str(path),
        "cloudctl.cloud.precheck",
        env=installed["env"],
        cwd=installed["tmp"],
    )


def test_a_play_of_the_installed_collection_runs(installed):
    good = precheck(installed, {"zone-a": ZONE})
    assert good.returncode == 0, good.stdout + good.stderr
    assert "cloud ok: 1 cluster; zone-a (subnet 172.31.0.0/24" in good.stdout
    assert "failed=0" in good.stdout

    bad = precheck(installed, {"zone-a": {**ZONE, "subnet": "172.31.0.1/24"}})
    assert bad.returncode != 0
    assert "subnet '172.31.0.1/24' has host bits set" in bad.stdout + bad.stderr
