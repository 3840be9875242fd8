"""Untrusted text is data: a canary through every text input of every command.

The canary is a Jinja template and shell syntax that would each create a marker file if
anything evaluated them, on the controller (Ansible templates and lookups run there) or on the
cloud host (a shell). Every text option and argument of every cloudctl command gets it in
turn (the list of them is read from the click commands, so a new option without a case here
fails the test), the others valid. Each command must either refuse it with one error line, or
take it as data: the value arrives byte for byte where it is kept (the state, the clouds file,
a file name) and, for user data, in the guest. No marker may ever appear.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import click
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from cloudctl.cli.main import cli
from cloudctl.config import load_clouds
from tests.integration.cloud_client import cloudctl_here, in_host

pytestmark = pytest.mark.integration
MARKS = Path(f"/tmp/cloudctl-canary-{uuid.uuid4().hex[:8]}")


def canary(mark: Path = MARKS) -> str:
    """Text that leaves a file in `mark` wherever Jinja or a shell evaluates it."""
    return (
        f"{{{{ lookup('pipe', 'touch {mark}/jinja') }}}}{{% if true %}}{{{{ 7 * 191 }}}}"
        f"{{% endif %}} $(touch {mark}/subst) `touch {mark}/backtick`; touch {mark}/semicolon #"
    )


CANARY = canary()
# For the names that allow only EC2's characters (no quotes, no '%'): still a template.
NARROW = "{{ 7*191 }}$(id);id"
# For a file name (no '/'): the path must be used as given.
FILE_NAME = "{{ 7*191 }}$(id)`id`;id"
USER_DATA = f"#!/bin/sh\n## template: jinja\n# {CANARY}\necho {{{{ v1.local_hostname }}}}\r\n"

# What is given where: (command path, parameter name) -> the arguments of the case, with
# "{C}" for the canary, "{N}" for NARROW, "{F}" for a path whose file name is FILE_NAME,
# "{EMI}" for the test image, "{PUB}" for a public key file whose comment is the canary,
# "{UD}" for a user data file. Each case's other arguments are valid.
REFUSED_ID = {  # ids and references: looked up, never found
    ("instance", "show", "instance_id"): "instance show {C}",
    ("instance", "terminate", "instance_ids"): "instance terminate {C}",
    ("instance", "stop", "instance_ids"): "instance stop {C}",
    ("instance", "start", "instance_ids"): "instance start {C}",
    ("instance", "reboot", "instance_ids"): "instance reboot {C}",
    ("instance", "console", "instance_id"): "instance console {C}",
    ("instance", "run", "image_id"): "instance run --image {C}",
    ("instance", "run", "type_name"): "instance run --image {EMI} --type {C}",
    ("zone", "network", "zone_name"): "zone network {C}",
    ("instance", "run", "zone"): "instance run --image {EMI} --zone {C}",
    ("instance", "run", "keypair"): "instance run --image {EMI} --keypair {C}",
    ("instance", "run", "groups"): "instance run --image {EMI} --group {C}",
    ("volume", "create", "zone"): "volume create --size 1 --zone {C}",
    ("volume", "create", "snapshot_id"): "volume create --snapshot {C}",
    ("volume", "show", "volume_id"): "volume show {C}",
    ("volume", "delete", "volume_id"): "volume delete {C}",
    ("volume", "attach", "volume_id"): "volume attach {C} --instance i-0000dead",
    ("volume", "attach", "instance_id"): "volume attach vol-0000dead --instance {C}",
    ("volume", "attach", "device"): "volume attach vol-0000dead --instance i-0000dead --device {C}",
    ("volume", "detach", "volume_id"): "volume detach {C}",
    ("snapshot", "create", "volume_id"): "snapshot create {C}",
    ("snapshot", "show", "snapshot_id"): "snapshot show {C}",
    ("snapshot", "delete", "snapshot_id"): "snapshot delete {C}",
    ("keypair", "show", "name"): "keypair show {C}",
    ("keypair", "delete", "names"): "keypair delete {C}",
    ("group", "show", "ref"): "group show {C}",
    ("group", "delete", "ref"): "group delete {C}",
    ("group", "authorize", "ref"): "group authorize {C} --protocol tcp --port 22",
    ("group", "authorize", "protocol"): "group authorize default --protocol {C} --port 22",
    ("group", "authorize", "port_range"): "group authorize default --protocol tcp --port-range {C}",
    ("group", "authorize", "cidr"): "group authorize default --protocol tcp --port 22 --cidr {C}",
    ("group", "authorize", "source_group"): "group authorize default --protocol tcp --port 22 --source-group {C}",
    ("group", "revoke", "ref"): "group revoke {C} --protocol tcp --port 22",
    ("group", "revoke", "protocol"): "group revoke default --protocol {C} --port 22",
    ("group", "revoke", "port_range"): "group revoke default --protocol tcp --port-range {C}",
    ("group", "revoke", "cidr"): "group revoke default --protocol tcp --port 22 --cidr {C}",
    ("group", "revoke", "source_group"): "group revoke default --protocol tcp --port 22 --source-group {C}",
    ("address", "allocate", "zone"): "address allocate --zone {C}",
    ("address", "associate", "ref"): "address associate {C} --instance i-0000dead",
    ("address", "associate", "instance_id"): "address associate 198.51.100.99 --instance {C}",
    ("address", "disassociate", "ref"): "address disassociate {C}",
    ("address", "release", "ref"): "address release {C}",
    ("image", "show", "image_ref"): "image show {C}",
    ("image", "deregister", "image_id"): "image deregister {C}",
    ("event", "show", "event_id"): "event show {C}",
    ("cloud", "remove", "name"): "cloud remove {C}",
    ("cloud", "add", "name"): "cloud add {C} --inventory {INV}",
    ("host", "trust", "hosts"): "host trust {C}",
    ("account", "create", "name"): "account create {C}",
    ("account", "show", "name"): "account show {C}",
    ("account", "delete", "name"): "account delete {C}",
    ("user", "create", "name"): "user create {C}",
    ("user", "delete", "name"): "user delete {C}",
    ("user", "credentials", "name"): "user credentials {C} --output-dir {OUT}",
    ("user", "credentials", "output_dir"): "user credentials admin/nobody --output-dir {OUT}",
    ("user", "key", "create", "name"): "user key create {C}",
    ("user", "key", "list", "name"): "user key list {C}",
    ("user", "key", "activate", "key_id"): "user key activate {C}",
    ("user", "key", "deactivate", "key_id"): "user key deactivate {C}",
    ("user", "key", "delete", "key_id"): "user key delete {C}",
    ("quota", "set", "target"): "quota set {C} ec2:quota-volumenumber 1",
    ("quota", "set", "limit"): "quota set admin ec2:quota-volumenumber {C}",
    ("quota", "show", "target"): "quota show {C}",
    ("tag", "set", "resource_id"): "tag set {C} a=b",
    ("tag", "unset", "resource_id"): "tag unset {C} a",
    ("tag", "unset", "keys"): "tag unset {SG} {C}",  # longer than a tag key may be
    ("report", "usage", "start"): "report usage --type instance --from {C}",
    ("report", "usage", "end"): "report usage --type instance --to {C}",
    ("api", "serve", "bind"): "api serve --bind {C}",
    ("api", "serve", "certfile"): "api serve --bind 127.0.0.1:1 --certfile {C} --keyfile {F}",
    ("api", "serve", "keyfile"): "api serve --bind 127.0.0.1:1 --certfile {F} --keyfile {C}",
    ("state", "migrate", "endpoints"): "state migrate --endpoints {C}",
    ("state", "migrate", "prefix"): "state migrate --endpoints http://127.0.0.1:9 --prefix {C}",
    ("state", "migrate", "ca_file"): "state migrate --endpoints http://127.0.0.1:9 --ca-file {C}",
    ("state", "migrate", "cert_file"): "state migrate --endpoints http://127.0.0.1:9 --cert-file {C} --key-file {F}",
    ("state", "migrate", "key_file"): "state migrate --endpoints http://127.0.0.1:9 --cert-file {F} --key-file {C}",
}  # fmt: skip
FILTERS = {  # patterns and filters: they select nothing, keep nothing
    ("deploy", "limit"): "deploy --check --limit {C}",
    ("deploy", "tags"): "deploy --check --tags {C}",
    ("service", "status", "limit"): "service status --limit {C}",
    ("instance", "list", "state"): "instance list --state {C}",
    ("instance", "list", "zone"): "instance list --zone {C}",
    ("volume", "list", "state"): "volume list --state {C}",
    ("volume", "list", "zone"): "volume list --zone {C}",
    ("event", "list", "operation"): "event list --operation {C}",
    ("user", "list", "account_name"): "-o json user list --account {C}",
    ("report", "usage", "account"): "-o json report usage --type instance --account {C}",
}  # fmt: skip
IMAGES = "deregister the images the case registered"
# Kept as data: (arguments, the commands that remove what the case made).
KEPT = {
    ("deploy", "extra_vars"): ("deploy --check --tags none-of-ours -e canary={C}", []),
    ("keypair", "create", "name"): ("keypair create {C}", ["keypair delete {C}"]),
    ("keypair", "create", "output_file"): (
        "keypair create canary-out --output-file {OUT}", ["keypair delete canary-out"]),
    ("keypair", "import", "name"): ("keypair import {C} --public-key-file {PUB}",
                                    ["keypair delete {C}"]),
    ("keypair", "import", "public_key_file"): (
        "keypair import canary-pub --public-key-file {PUB}", ["keypair delete canary-pub"]),
    ("group", "create", "name"): ("group create {N}", ["group delete {N}"]),
    ("group", "create", "description"): ("group create canary-g --description {C}",
                                         ["group delete canary-g"]),
    ("image", "register", "name"): ("image register {C} --file {DISK}", [IMAGES]),
    ("image", "register", "file"): ("image register canary-f --file {F}", [IMAGES]),
    ("image", "register", "kernel"): ("image register canary-k --file {DISK} --kernel {F}",
                                      [IMAGES]),
    ("image", "register", "ramdisk"): (
        "image register canary-r --file {DISK} --kernel {DISK} --ramdisk {F}", [IMAGES]),
    ("image", "register", "description"): (
        "image register canary-d --file {DISK} --description {C}", [IMAGES]),
    ("cloud", "add", "inventory"): ("cloud add canary --inventory {F}", []),
    ("cloud", "add", "home"): ("cloud add canary-h --inventory {INV} --home {F}", []),
    ("cloud", "add", "state"): ("cloud add canary-s --inventory {INV} --state {F}", []),
    ("tag", "set", "tags"): ("tag set {SG} canary={C}", ["tag unset {SG} canary"]),
    ("report", "usage", "output_file"): (
        "report usage --type instance --format html --output-file {OUT}", []),
}  # fmt: skip
USER_DATA_CASE = ("instance", "run", "user_data_file")


def text_inputs() -> set[tuple[str, ...]]:
    """(command path..., parameter) of every string or path option and argument."""
    found: set[tuple[str, ...]] = set()

    def walk(command: click.Command, path: tuple[str, ...]) -> None:
        if isinstance(command, click.Group):  # cloudctl's group loads its commands on demand
            ctx = click.Context(command)
            for name in command.list_commands(ctx):
                walk(command.get_command(ctx, name), (*path, name))
            return
        for param in command.params:
            if isinstance(param.type, click.types.StringParamType | click.Path):
                found.add((*path, param.name))

    walk(cli, ())
    return found


def test_every_text_input_has_a_canary_case():
    covered = set(REFUSED_ID) | set(FILTERS) | set(KEPT) | {USER_DATA_CASE}
    assert text_inputs() - covered == set(), "a text input without a canary case"
    assert covered - text_inputs() == set(), "a canary case of an input that is gone"


def _strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


@pytest.fixture(scope="module")
def canary_files(tmp_path_factory, ops_cloud):
    work = tmp_path_factory.mktemp("canary")
    weird = work / FILE_NAME
    weird.write_bytes(os.urandom(4096))  # its sha256 in the state tells the file was read
    disk = work / "disk.raw"
    disk.write_bytes(os.urandom(4096))
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    pub = work / "canary.pub"
    pub.write_text(f"{line.decode()} {CANARY}\n")
    user_data = work / "user-data"
    user_data.write_bytes(USER_DATA.encode())
    return {"F": weird, "OUT": work / f"out-{FILE_NAME}", "DISK": disk, "PUB": pub, "UD": user_data, "INV": ops_cloud.inventory,
            "EMI": ops_cloud.ids["emi"], "C": CANARY, "N": NARROW, "work": work,
            "SG": ops_cloud.json("group", "show", "default")[0]["id"]}  # fmt: skip


def _argv(template: str, files: dict) -> list[str]:
    """Split on spaces first: a placeholder's value (the canary has spaces) stays in one
    argument."""
    fill = re.compile(r"\{([A-Z]+)\}")
    return [fill.sub(lambda m: str(files[m[1]]), part) for part in template.split(" ")]


def _run(cloud, files, template: str) -> subprocess.CompletedProcess:
    """cloudctl in this process (a new interpreter per case cost 0.5-2 s x 100 cases)."""
    proc = cloudctl_here(
        ["--inventory", str(cloud.inventory), *_argv(template, files)],
        {"CLOUDCTL_HOME": str(cloud.home), "CLOUDCTL_CLOUDS": str(files["work"] / "clouds.yaml")},
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def _markers(cloud) -> list[str]:
    here = sorted(p.name for p in MARKS.iterdir())
    there = in_host(cloud.host, "ls", "-A", str(MARKS)).stdout.split()
    return here + [f"{cloud.host}:{name}" for name in there]


@pytest.fixture(scope="module")
def marks(ops_cloud):
    MARKS.mkdir()
    assert in_host(ops_cloud.host, "mkdir", "-p", str(MARKS)).returncode == 0
    yield
    assert _markers(ops_cloud) == [], "the canary was evaluated"
    for p in MARKS.iterdir():
        p.unlink()
    MARKS.rmdir()


@pytest.mark.parametrize("case", sorted(REFUSED_ID), ids=" ".join)
def test_ids_and_references_are_refused(ops_cloud, canary_files, marks, case):
    proc = _run(ops_cloud, canary_files, REFUSED_ID[case])
    assert proc.returncode != 0 and proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert line.startswith("Error: ")
    assert _markers(ops_cloud) == []


@pytest.mark.parametrize("case", sorted(FILTERS), ids=" ".join)
def test_patterns_and_filters_select_nothing(ops_cloud, canary_files, marks, case):
    proc = _run(ops_cloud, canary_files, FILTERS[case])
    if proc.returncode == 0:
        # Nothing selected, or (deploy --tags) only the precheck, tagged always: no change.
        rows = proc.stdout.strip().splitlines()[1:]
        if proc.stdout.startswith("{"):  # a report: no rows
            assert json.loads(proc.stdout)["rows"] == []
        else:
            assert proc.stdout.strip() in ("", "[]") or all(row.split()[2] == "0" for row in rows)
    else:
        assert proc.stderr.startswith("Error: ")
    assert _markers(ops_cloud) == []


@pytest.mark.parametrize("case", sorted(KEPT), ids=" ".join)
def test_text_is_kept_as_data(ops_cloud, canary_files, marks, case):
    command, cleanups = KEPT[case]
    state = ops_cloud.home / "state.json"
    images_before = {i["id"] for i in ops_cloud.json("image", "list")}
    proc = _run(ops_cloud, canary_files, command)
    try:
        assert proc.returncode == 0, proc.stderr
        given = NARROW if "{N}" in command else CANARY
        if "{F}" in command:  # the file was read: its content's digest is recorded
            given = hashlib.sha256(canary_files["F"].read_bytes()).hexdigest()
        if case == ("keypair", "import", "public_key_file"):  # the line, comment and all
            given = canary_files["PUB"].read_text().strip()
        if case[0] == "cloud":
            _, clouds = load_clouds(canary_files["work"] / "clouds.yaml")
            kept = [str(p) for c in clouds.values() for p in (c.inventory, c.home, c.state)]
            assert str(canary_files["F"]) in kept
        elif case == ("report", "usage", "output_file"):
            assert canary_files["OUT"].read_text().startswith("<!DOCTYPE html>")
            canary_files["OUT"].unlink()
        elif case == ("keypair", "create", "output_file"):
            assert canary_files["OUT"].read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY")
            canary_files["OUT"].unlink()
        elif case == ("deploy", "extra_vars"):  # what the play got (the audit copy of it)
            [run] = sorted((ops_cloud.home / "runs").glob("*-deploy-check-*"))[-1:]
            assert json.loads((run / "extravars.json").read_text()) == {"canary": CANARY}
        else:
            assert given in set(_strings(json.loads(state.read_text()))), "not kept verbatim"
    finally:
        for cleanup in cleanups if proc.returncode == 0 else []:
            if cleanup == IMAGES:
                made = {i["id"] for i in ops_cloud.json("image", "list")} - images_before
                for image in sorted(made, key=lambda i: not i.startswith("emi-")):  # users first
                    ops_cloud.cloudctl("image", "deregister", image)
            else:
                assert _run(ops_cloud, canary_files, cleanup).returncode == 0, cleanup
    assert _markers(ops_cloud) == []


def test_user_data_reaches_the_guest_unchanged(ops_cloud, canary_files, marks):
    """cloud-init's `## template: jinja` user data and shell syntax: evaluated by nothing of
    ours, the guest's /run/user-data (the test image keeps the script there) is the file."""
    c = ops_cloud
    proc = _run(
        c, canary_files, "-o json instance run --image {EMI} --keypair ops --user-data-file {UD}"
    )
    assert proc.returncode == 0, proc.stderr
    [instance] = json.loads(proc.stdout)
    try:
        assert _markers(c) == []
        got = c.guest(c.host, instance["private_ip"], "sha256sum /run/user-data")
        assert got.split()[0] == hashlib.sha256(USER_DATA.encode()).hexdigest()
    finally:
        c.cloudctl("instance", "terminate", instance["id"])
    assert _markers(c) == []
