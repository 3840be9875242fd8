"""The collection passes the ecosystem's bar: every module's and filter's documentation
renders with ansible-doc, and `ansible-test sanity` (validate-modules, pylint, pep8, yamllint,
import, compile...) passes offline, with the virtualenvs scripts/setup.sh prepared."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT

COLLECTION = PROJECT / "collections/ansible_collections/cloudctl/cloud"
MODULES = sorted(path.stem for path in (COLLECTION / "plugins/modules").glob("*.py"))
BIN = Path(sys.executable).parent
PYTHON_VERSION = "{}.{}".format(*sys.version_info[:2])
ENV = {
    **os.environ,
    "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"),
    "ANSIBLE_NOCOLOR": "1",
    "PATH": f"{BIN}:{os.environ['PATH']}",
}


def ansible_doc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ansible-doc"), *args],
        check=False,
        env=ENV,
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def listed(plugin_type: str) -> dict[str, str]:
    """The collection's plugins of one type as ansible-doc -l lists them: name -> short
    description (UNDOCUMENTED when a plugin has none)."""
    done = ansible_doc("-t", plugin_type, "-l", "--json", "cloudctl.cloud")
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def short_description(module: str) -> str:
    source = (COLLECTION / "plugins/modules" / f"{module}.py").read_text()
    (documentation,) = [
        node.value.value
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "DOCUMENTATION"
    ]
    return yaml.safe_load(documentation)["short_description"]


def assert_renders(plugin_type: str, name: str) -> str:
    done = ansible_doc("-t", plugin_type, name)
    assert done.returncode == 0 and done.stderr == "", done.stdout + done.stderr
    assert done.stdout.startswith(f"> {plugin_type.upper()} {name} ("), done.stdout
    return done.stdout


@pytest.fixture(scope="module")
def listed_modules() -> dict[str, str]:
    return listed("module")


@pytest.mark.parametrize("module", MODULES)
def test_module_documentation_renders(module, listed_modules):
    text = assert_renders("module", f"cloudctl.cloud.{module}")
    for section in (
        "OPTIONS",
        "ATTRIBUTES:",
        "AUTHOR: cloudctl developers (@cloudctl)",
        "EXAMPLES:",
        "RETURN VALUES:",
    ):
        assert section in text, f"{module}: no {section}"
    assert f"cloudctl.cloud.{module}:" in text, f"{module}: EXAMPLES do not use its FQCN"
    assert listed_modules[f"cloudctl.cloud.{module}"] == short_description(module)


def test_every_filter_is_documented():
    filters = listed("filter")
    assert filters, "no filter found"
    assert [name for name, desc in filters.items() if desc == "UNDOCUMENTED"] == []
    for name in filters:
        assert "EXAMPLES:" in assert_renders("filter", name), name


def test_collection_licence_is_the_project_licence():
    assert not (COLLECTION / "LICENSE").is_symlink()  # sanity refuses links out of the tree
    assert (COLLECTION / "LICENSE").read_bytes() == (PROJECT / "LICENSE").read_bytes()


def test_ansible_test_sanity_passes():
    """Every sanity test ansible-test has for a collection, on this Python, offline."""
    done = subprocess.run(
        [str(BIN / "ansible-test"), "sanity", "--python", PYTHON_VERSION, "--color", "no"],
        check=False,
        env=ENV,
        cwd=COLLECTION,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    for test in (
        "validate-modules",
        "pylint",
        "pep8",
        "yamllint",
        "import",
        "compile",
        "ansible-doc",
    ):
        assert f'Running sanity test "{test}"' in output, f"{test} did not run:\n{output}"
