"""Bad input, table-driven: every command group refuses what it cannot do with one line.

Each case runs cloudctl's command line in this process (tests/integration/cloud_client.py's
cloudctl_here: as a new process would run it, without a new interpreter's imports for each
of the hundred cases) in a fresh CLOUDCTL_HOME whose state file is seeded with resources in the states the cases need (records shaped as the services write
them), against a cloud.yml of two zones whose hosts do not exist. Every case must:
exit non-zero; print exactly one stderr line, "Error: ..." naming what is wrong; print no
traceback; leave the state file byte for byte; start no Ansible run (no new directory under
CLOUDCTL_HOME/runs): bad input is refused before anything reaches a host.

The inventory the cases get (CLOUDCTL_INVENTORY) names the config's hosts with an address
that refuses connections, so a case that wrongly reaches Ansible fails fast, on no real host.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from cloudctl.state import StateStore
from tests.integration.cloud_client import cloudctl_here

OWNER = {"account": "admin", "user": "admin"}
UNKNOWN = "0000dead"  # the hex part of every unknown id
CLOUD_ID = "cloud-0badc0de0badc0de"

CLOUD = {
    "cloud_name": "badinput",
    "cloud_id": CLOUD_ID,
    "clusters": {
        zone: {
            "subnet": f"172.31.{n}.0/24",
            "bridge": f"cloudbr{n}",
            "gateway": f"172.31.{n}.1",
            "public_interface": "pub0",
            "public_ips": f"198.51.100.{16 * (n + 1)}/28",
            "cc": f"nowhere-cc-{z}",
            "sc": [f"nowhere-sc-{z}"],
            "nc": [f"nowhere-nc-{z}"],
            "nodes": {f"nowhere-nc-{z}": {"vcpus": 4, "memory_mb": 4096}},
        }
        for n, (zone, z) in enumerate((("zone-a", "a"), ("zone-b", "b")))
    },
    "instance_types": [{"name": "m1.small", "cpus": 1, "memory_mb": 256, "disk_gb": 2}],
    "scheduling_policy": "roundrobin",
    "walrus": {"endpoint": "http://127.0.0.1:9", "access_key": "AK", "secret_key": "SK"},
}

# Seeded resources. Zone a: one instance per state that matters, volumes, an elastic IP.
RUNNING_A, STOPPED_A, STOPPING_A = "i-0a000001", "i-0a000002", "i-0a000004"
TERMINATED_A, RUNNING_B = "i-0a000003", "i-0b000001"
VOL_A, VOL_A_DELETED = "vol-0a000001", "vol-0a000003"
VOL_B, VOL_B_IN_USE = "vol-0b000001", "vol-0b000002"
SNAP_PENDING = "snap-0a000001"
EMI, EKI = "emi-0a000001", "eki-0a000002"
SG_DEFAULT, SG_WEB = "sg-0d000001", "sg-0a000001"
EIP, EIP_IP = "eipalloc-0a000001", "198.51.100.17"
KEYPAIR = "ops"


def _seed(store: StateStore, public_key: str) -> None:
    with store.transaction() as tx:
        tx.table("images").insert({**OWNER, "id": EKI, "name": "vmlinuz", "kind": "kernel",
                                   "format": "raw", "size": 1024, "sha256": "1" * 64,
                                   "kernel_id": None, "ramdisk_id": None, "description": "",
                                   "state": "available"})  # fmt: skip
        tx.table("images").insert({**OWNER, "id": EMI, "name": "tiny", "kind": "machine",
                                   "format": "qcow2", "size": 2048, "sha256": "2" * 64,
                                   "kernel_id": EKI, "ramdisk_id": None, "description": "",
                                   "state": "available"})  # fmt: skip
        tx.table("keypairs").insert({**OWNER, "id": KEYPAIR, "name": KEYPAIR,
                                     "type": "ssh-ed25519", "fingerprint": "SHA256:x",
                                     "public_key": public_key})  # fmt: skip
        tx.table("groups").insert({**OWNER, "id": SG_DEFAULT, "name": "default",
                                   "description": "default group: members reach each other",
                                   "rules": [{"protocol": "all",
                                              "source_group": SG_DEFAULT}]})  # fmt: skip
        tx.table("groups").insert({**OWNER, "id": SG_WEB, "name": "web", "description": "",
                                   "rules": [{"protocol": "tcp", "from_port": 22, "to_port": 22,
                                              "cidr": "0.0.0.0/0"}]})  # fmt: skip
        instances = [(RUNNING_A, "zone-a", "running"), (STOPPED_A, "zone-a", "stopped"),
                     (TERMINATED_A, "zone-a", "terminated"), (STOPPING_A, "zone-a", "stopping"),
                     (RUNNING_B, "zone-b", "running")]  # fmt: skip
        for n, (iid, zone, state) in enumerate(instances, start=2):
            z, subnet = zone[-1], CLOUD["clusters"][zone]["subnet"]
            ip, mac = subnet.replace(".0/24", f".{n}"), f"d0:0d:00:00:00:{n:02x}"
            if state != "terminated":  # a terminated instance gave its IP and MAC back
                tx.allocate(f"ip:{zone}", [ip], iid)
                tx.allocate("mac", [mac], iid)
            tx.table("instances").insert({
                **OWNER, "id": iid, "reservation": "r-0a0b0c0d", "launch_index": 0,
                "image_id": EMI, "kernel_id": EKI, "ramdisk_id": None, "type": "m1.small",
                "vcpus": 1, "memory_mb": 256, "disk_gb": 2, "zone": zone,
                "node": f"nowhere-nc-{z}", "cc": f"nowhere-cc-{z}", "private_ip": ip, "mac": mac,
                "keypair": KEYPAIR, "groups": [SG_WEB if iid == RUNNING_A else SG_DEFAULT],
                "state": state, "reason": "", "event": "0a0b0c0d",
            })  # fmt: skip
        volumes = [(VOL_A, "zone-a", "available", None), (VOL_A_DELETED, "zone-a", "deleted", None),
                   (VOL_B, "zone-b", "available", None),
                   (VOL_B_IN_USE, "zone-b", "in-use", {"instance": RUNNING_B,
                    "node": "nowhere-nc-b", "device": "vdb", "state": "attached"})]  # fmt: skip
        for vid, zone, state, attachment in volumes:
            tx.table("volumes").insert({
                **OWNER, "id": vid, "size_gb": 1, "zone": zone, "sc": f"nowhere-sc-{zone[-1]}",
                "state": state, "reason": "", "snapshot_id": None, "chap_user": vid,
                "chap_secret": "s" * 16, "attachment": attachment,
                "iqn": f"iqn.2010-01.cloud:{vid}", "lun": 1,
                "portal": {"address": "192.0.2.1", "port": 3260}, "event": "0a0b0c0d",
            })  # fmt: skip
        tx.table("snapshots").insert({**OWNER, "id": SNAP_PENDING, "volume_id": VOL_A,
                                      "size_gb": 1, "state": "pending", "reason": ""})  # fmt: skip
        tx.allocate("eip:zone-a", [EIP_IP], EIP)
        tx.table("addresses").insert({**OWNER, "id": EIP, "public_ip": EIP_IP, "zone": "zone-a",
                                      "cc": "nowhere-cc-a", "public_interface": "pub0",
                                      "instance": None, "private_ip": None})  # fmt: skip


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]  # "{d}" stands for the directory of the files below
    expect: str  # a substring of the one error line
    env: dict[str, str] = field(default_factory=dict)


def case(id_: str, args: str, expect: str, **env: str) -> Case:
    return Case(id_, tuple(args.split()), expect, env)


def rule(group: str, options: str) -> str:
    return f"group authorize {group} {options}"


CASES = [
    # --- global options, configuration, inventory ---------------------------------------
    case("config-missing", "zone list", "cannot read the cloud configuration /nonexistent",
         CLOUDCTL_CONFIG="/nonexistent/cloud.yml"),
    case("config-not-yaml", "zone list", "is not YAML", CLOUDCTL_CONFIG="{d}/not-yaml.yml"),
    case("config-no-walrus", "volume create --size 1", "'walrus'",
         CLOUDCTL_CONFIG="{d}/no-walrus.yml"),
    case("config-no-subnet", "instance run --image " + EMI, "'subnet'",
         CLOUDCTL_CONFIG="{d}/no-subnet.yml"),
    case("config-not-a-mapping", "address allocate", "is not a mapping",
         CLOUDCTL_CONFIG="{d}/list.yml"),
    case("config-bad-pool", "zone list", "public_ips", CLOUDCTL_CONFIG="{d}/bad-pool.yml"),
    case("inventory-missing-option", "--inventory /nonexistent/inv instance list",
         "inventory /nonexistent/inv does not exist"),
    case("inventory-missing-env", "service status", "inventory /nonexistent/inv does not exist",
         CLOUDCTL_INVENTORY="/nonexistent/inv"),
    case("inventory-broken-service", "--inventory {d}/broken-inventory.yml service status",
         "broken-inventory.yml has no hosts (Failed to parse"),
    case("inventory-broken-deploy", "--inventory {d}/broken-inventory.yml deploy",
         "broken-inventory.yml has no hosts (Failed to parse"),
    case("inventory-broken-group-vars", "--inventory {d}/inventory-dir deploy --check",
         "inventory-dir cannot be read: YAML parsing failed"),
    case("inventory-no-hosts-deploy", "--inventory {d}/empty-inventory.yml deploy",
         "has no hosts"),
    case("output-format-global", "-o xml instance list", "'xml' is not one of"),
    case("output-format-command", "volume list -o csv", "'csv' is not one of"),
    # --- instance -----------------------------------------------------------------------
    case("instance-unknown", f"instance show i-{UNKNOWN}", f"instance i-{UNKNOWN} does not exist"),
    case("instance-malformed", "instance show i-zz", "bad instance id 'i-zz'"),
    case("instance-terminate-unknown", f"instance terminate {RUNNING_A} i-{UNKNOWN}",
         f"instance i-{UNKNOWN} does not exist"),
    case("instance-type-unknown", f"instance run --image {EMI} --type m9.huge",
         "unknown instance type 'm9.huge'"),
    case("instance-zone-unknown", f"instance run --image {EMI} --zone zone-x",
         "unknown zone 'zone-x'"),
    case("instance-count-0", f"instance run --image {EMI} --count 0", "bad count 0"),
    case("instance-count-huge", f"instance run --image {EMI} --count 1000", "bad count 1000"),
    case("instance-count-nan", f"instance run --image {EMI} --count two", "'two'"),
    case("instance-image-unknown", f"instance run --image emi-{UNKNOWN}",
         f"image emi-{UNKNOWN} does not exist"),
    case("instance-image-malformed", "instance run --image ami-1234", "bad image id 'ami-1234'"),
    case("instance-keypair-unknown", f"instance run --image {EMI} --keypair nosuch",
         "key pair 'nosuch' does not exist"),
    case("instance-group-unknown", f"instance run --image {EMI} --group nosuch",
         "security group 'nosuch' does not exist"),
    case("instance-user-data-missing", f"instance run --image {EMI} --user-data-file /nonexistent",
         "cannot read /nonexistent"),
    case("instance-stop-terminated", f"instance stop {TERMINATED_A}",
         f"instance {TERMINATED_A} is terminated"),
    case("instance-start-running", f"instance start {RUNNING_A}", f"{RUNNING_A} is running"),
    case("instance-reboot-stopped", f"instance reboot {STOPPED_A}", f"{STOPPED_A} is stopped"),
    case("instance-console-terminated", f"instance console {TERMINATED_A}", "no console"),
    case("instance-list-bad-state", "instance list --state bogus", "bad state 'bogus'"),
    # --- volume -------------------------------------------------------------------------
    case("volume-size-0", "volume create --size 0", "bad size 0 GiB"),
    case("volume-size-negative", "volume create --size -5", "bad size -5 GiB"),
    case("volume-size-huge", "volume create --size 99999999999999999999",
         "bad size 99999999999999999999 GiB"),
    case("volume-size-nan", "volume create --size ten", "'ten' is not a valid integer"),
    case("volume-no-size", "volume create", "give --size or --snapshot"),
    case("volume-zone-unknown", "volume create --size 1 --zone zone-x", "unknown zone 'zone-x'"),
    case("volume-snapshot-unknown", f"volume create --snapshot snap-{UNKNOWN}",
         f"snapshot snap-{UNKNOWN} does not exist"),
    case("volume-snapshot-pending", f"volume create --snapshot {SNAP_PENDING}",
         f"snapshot {SNAP_PENDING} is pending"),
    case("volume-unknown", f"volume show vol-{UNKNOWN}", f"volume vol-{UNKNOWN} does not exist"),
    case("volume-malformed", "volume show vol-12", "bad volume id 'vol-12'"),
    case("attach-terminated-instance", f"volume attach {VOL_A} --instance {TERMINATED_A}",
         f"instance {TERMINATED_A} is terminated: cannot attach"),
    case("attach-stopping-instance", f"volume attach {VOL_A} --instance {STOPPING_A}",
         f"instance {STOPPING_A} is stopping: cannot attach"),
    case("attach-other-zone", f"volume attach {VOL_B} --instance {RUNNING_A}",
         "attaches only within its zone"),
    case("attach-in-use", f"volume attach {VOL_B_IN_USE} --instance {RUNNING_B}",
         f"volume {VOL_B_IN_USE} is in-use (attached to {RUNNING_B}): cannot attach"),
    case("attach-instance-unknown", f"volume attach {VOL_A} --instance i-{UNKNOWN}",
         f"instance i-{UNKNOWN} does not exist"),
    case("attach-bad-device", f"volume attach {VOL_A} --instance {RUNNING_A} --device sda",
         "bad device 'sda'"),
    case("detach-available", f"volume detach {VOL_A}", f"volume {VOL_A} is not attached"),
    case("delete-in-use", f"volume delete {VOL_B_IN_USE}", f"attached to {RUNNING_B}"),
    case("delete-unknown", f"volume delete vol-{UNKNOWN}", f"volume vol-{UNKNOWN} does not exist"),
    # --- snapshot -----------------------------------------------------------------------
    case("snapshot-volume-unknown", f"snapshot create vol-{UNKNOWN}",
         f"volume vol-{UNKNOWN} does not exist"),
    case("snapshot-volume-deleted", f"snapshot create {VOL_A_DELETED}",
         f"volume {VOL_A_DELETED} is deleted: cannot snapshot"),
    case("snapshot-unknown", f"snapshot show snap-{UNKNOWN}",
         f"snapshot snap-{UNKNOWN} does not exist"),
    case("snapshot-malformed", "snapshot show snap-xyz", "bad snapshot id 'snap-xyz'"),
    case("snapshot-delete-unknown", f"snapshot delete snap-{UNKNOWN}",
         f"snapshot snap-{UNKNOWN} does not exist"),
    # --- image --------------------------------------------------------------------------
    case("image-file-missing", "image register new --file /nonexistent/root.img",
         "cannot read /nonexistent/root.img"),
    case("image-file-empty", "image register new --file {d}/empty.img", "is empty"),
    case("image-file-directory", "image register new --file {d}", "is a directory"),
    case("image-kernel-missing",
         "image register new --file {d}/root.img --kernel /nonexistent/vmlinuz",
         "cannot read /nonexistent/vmlinuz"),
    case("image-name-taken", "image register tiny --file {d}/root.img",
         "image name 'tiny' is already taken"),
    case("image-name-is-an-id", "image register emi-12345678 --file {d}/root.img",
         "looks like a resource id"),
    case("image-unknown", f"image show emi-{UNKNOWN}", f"image 'emi-{UNKNOWN}' does not exist"),
    case("image-deregister-unknown", f"image deregister emi-{UNKNOWN}",
         f"image 'emi-{UNKNOWN}' does not exist"),
    case("image-deregister-malformed", "image deregister emi-1", "bad image id 'emi-1'"),
    case("image-deregister-kernel-in-use", f"image deregister {EKI}", f"is used by {EMI}"),
    case("image-list-bad-kind", "image list --kind floppy", "'floppy' is not one of"),
    # --- keypair ------------------------------------------------------------------------
    case("keypair-create-duplicate", f"keypair create {KEYPAIR}",
         f"key pair '{KEYPAIR}' already exists"),
    case("keypair-import-duplicate", f"keypair import {KEYPAIR} --public-key-file {{d}}/ok.pub",
         f"key pair '{KEYPAIR}' already exists"),
    case("keypair-import-one-word", "keypair import new --public-key-file {d}/one-word.pub",
         "not an OpenSSH public key line"),
    case("keypair-import-key-type", "keypair import new --public-key-file {d}/garbage.pub",
         "key type 'this' not supported"),
    case("keypair-import-truncated", "keypair import new --public-key-file {d}/truncated.pub",
         "truncated or malformed"),
    case("keypair-import-private-key", "keypair import new --public-key-file {d}/private.pem",
         "expected one OpenSSH public key line"),
    case("keypair-import-weak-rsa", "keypair import new --public-key-file {d}/weak.pub",
         "too weak"),
    case("keypair-import-file-missing", "keypair import new --public-key-file /nonexistent.pub",
         "cannot read /nonexistent.pub"),
    case("keypair-show-unknown", "keypair show nosuch", "key pair 'nosuch' does not exist"),
    case("keypair-delete-unknown", "keypair delete nosuch", "key pair 'nosuch' does not exist"),
    # --- group --------------------------------------------------------------------------
    case("group-create-duplicate", "group create web", "security group 'web' already exists"),
    case("group-create-id-like-name", "group create sg-web", "bad group name 'sg-web'"),
    case("group-delete-in-use", "group delete web", f"used by {RUNNING_A}"),
    case("group-delete-default", "group delete default", "default group cannot be deleted"),
    case("group-show-unknown", "group show nosuch", "security group 'nosuch' does not exist"),
    case("group-delete-unknown", f"group delete sg-{UNKNOWN}",
         f"security group 'sg-{UNKNOWN}' does not exist"),
    case("rule-group-unknown", rule("nosuch", "--protocol tcp --port 22 --cidr 10.0.0.0/8"),
         "security group 'nosuch' does not exist"),
    case("rule-cidr-prefix", rule("web", "--protocol tcp --port 22 --cidr 10.0.0.0/33"),
         "bad CIDR '10.0.0.0/33'"),
    case("rule-cidr-garbage", rule("web", "--protocol tcp --port 22 --cidr ten.0.0.0/8"),
         "bad CIDR 'ten.0.0.0/8'"),
    case("rule-cidr-no-prefix", rule("web", "--protocol tcp --port 22 --cidr 10.0.0.1"),
         "bad CIDR '10.0.0.1'"),
    case("rule-cidr-ipv6", rule("web", "--protocol tcp --port 22 --cidr 2001:db8::/32"),
         "an IPv4 network"),
    case("rule-port-0", rule("web", "--protocol tcp --port 0 --cidr 10.0.0.0/8"), "bad port 0"),
    case("rule-port-70000", rule("web", "--protocol udp --port 70000 --cidr 10.0.0.0/8"),
         "bad port 70000"),
    case("rule-port-nan", rule("web", "--protocol tcp --port ssh --cidr 10.0.0.0/8"), "'ssh'"),
    case("rule-range-reversed", rule("web", "--protocol tcp --port-range 20-10 --cidr 10.0.0.0/8"),
         "bad port range 20-10"),
    case("rule-range-letters", rule("web", "--protocol tcp --port-range a-b --cidr 10.0.0.0/8"),
         "bad port range 'a-b'"),
    case("rule-range-0-0", rule("web", "--protocol tcp --port-range 0-0 --cidr 10.0.0.0/8"),
         "bad port 0"),
    case("rule-tcp-no-port", rule("web", "--protocol tcp --cidr 10.0.0.0/8"),
         "tcp rules need --port or --port-range"),
    case("rule-icmp-type-range", rule("web", "--protocol icmp --icmp-type 300 --cidr 10.0.0.0/8"),
         "bad icmp type 300"),
    case("rule-icmp-with-port", rule("web", "--protocol icmp --port 22 --cidr 10.0.0.0/8"),
         "icmp rules take --icmp-type, not ports"),
    case("rule-protocol-unknown", rule("web", "--protocol sctp --port 22 --cidr 10.0.0.0/8"),
         "bad protocol 'sctp'"),
    case("rule-two-sources",
         rule("web", "--protocol tcp --port 22 --cidr 10.0.0.0/8 --source-group web"),
         "exactly one of --cidr and --source-group"),
    case("rule-source-group-unknown", rule("web", "--protocol tcp --port 22 --source-group nosuch"),
         "security group 'nosuch' does not exist"),
    case("rule-duplicate", rule("web", "--protocol tcp --port 22 --cidr 0.0.0.0/0"),
         "already has this rule"),
    case("revoke-absent-rule", "group revoke web --protocol tcp --port 80 --cidr 0.0.0.0/0",
         "has no such rule"),
    # --- address ------------------------------------------------------------------------
    case("address-not-allocated", f"address associate 203.0.113.5 --instance {RUNNING_A}",
         "address '203.0.113.5' is not allocated"),
    case("address-id-unknown", f"address associate eipalloc-{UNKNOWN} --instance {RUNNING_A}",
         f"address 'eipalloc-{UNKNOWN}' is not allocated"),
    case("address-id-malformed", f"address associate eipalloc-zz --instance {RUNNING_A}",
         "bad address id 'eipalloc-zz'"),
    case("address-instance-unknown", f"address associate {EIP} --instance i-{UNKNOWN}",
         f"instance i-{UNKNOWN} does not exist"),
    case("address-instance-malformed", f"address associate {EIP} --instance web1",
         "bad instance id 'web1'"),
    case("address-instance-terminated", f"address associate {EIP} --instance {TERMINATED_A}",
         f"instance {TERMINATED_A} is terminated: cannot associate"),
    case("address-other-zone", f"address associate {EIP_IP} --instance {RUNNING_B}",
         f"instance {RUNNING_B} in zone zone-b"),
    case("address-disassociate-free", f"address disassociate {EIP}",
         f"address {EIP_IP} is not associated"),
    case("address-release-unknown", "address release 203.0.113.5",
         "address '203.0.113.5' is not allocated"),
    case("address-zone-unknown", "address allocate --zone zone-x", "unknown zone 'zone-x'"),
    # --- zone ---------------------------------------------------------------------------
    case("zone-config-bad-type", "zone list --verbose",
         "instance_types.m1.small.memory_mb 'lots' is not a whole number",
         CLOUDCTL_CONFIG="{d}/bad-type.yml"),
    case("zone-unknown-option", "zone list --zone zone-a", "No such option '--zone'"),
    # --- event --------------------------------------------------------------------------
    case("event-unknown", f"event show {UNKNOWN}", f"event {UNKNOWN} does not exist"),
    # --- the state, named clouds, reconcile ---------------------------------------------
    case("state-missing", "instance list", "no state at /nonexistent/state.json",
         CLOUDCTL_STATE="/nonexistent/state.json"),
    case("state-of-another-cloud", "volume list",
         f"is of cloud {CLOUD_ID}, not of this cloud cloud-ffffffffffffffff",
         CLOUDCTL_CONFIG="{d}/other-cloud.yml"),
    case("cloud-unknown", "--cloud nosuch instance list", "no cloud named 'nosuch'",
         CLOUDCTL_CLOUDS="{d}/clouds.yaml"),
    case("cloud-add-bad-name", "cloud add a/b --inventory {d}", "cloud name 'a/b'",
         CLOUDCTL_CLOUDS="{d}/clouds.yaml"),
    case("cloud-remove-unknown", "cloud remove nosuch", "no cloud named 'nosuch'",
         CLOUDCTL_CLOUDS="{d}/clouds.yaml"),
    case("reconcile-delete-orphans-alone", "reconcile --delete-orphans",
         "--delete-orphans works with --fix"),
    case("reconcile-delete-orphans-unasked", "reconcile --fix --delete-orphans",
         "give --yes when no one can answer"),
    case("event-malformed", "event show 12-34", "bad event id '12-34'"),
    case("event-limit-0", "event list --limit 0", "0 is not in the range"),
    # --- service ------------------------------------------------------------------------
    case("service-unknown-verb", "service restart", "No such command 'restart'"),
    # --- deploy -------------------------------------------------------------------------
    case("deploy-extra-var", "deploy -e cloud_name",
         "extra variable 'cloud_name' is not KEY=VALUE"),
    case("deploy-inventory-missing", "--inventory /nonexistent/inv deploy",
         "inventory /nonexistent/inv does not exist"),
]  # fmt: skip


def _params():
    for c in CASES:
        yield pytest.param(c, id=c.id)


def _write_files(d: Path) -> None:
    d.mkdir()
    (d / "cloud.yml").write_text(yaml.safe_dump(CLOUD))
    broken = {
        "no-walrus": lambda c: c.pop("walrus"),
        "no-subnet": lambda c: c["clusters"]["zone-a"].pop("subnet"),
        "bad-pool": lambda c: c["clusters"]["zone-b"].update(public_ips="198.51.100.300/28"),
        "bad-type": lambda c: c["instance_types"][0].update(memory_mb="lots"),
        "other-cloud": lambda c: c.update(cloud_id="cloud-ffffffffffffffff"),
    }
    for name, edit in broken.items():
        data = yaml.safe_load(yaml.safe_dump(CLOUD))
        edit(data)
        (d / f"{name}.yml").write_text(yaml.safe_dump(data))
    (d / "not-yaml.yml").write_text("clusters: [zone-a\nwalrus: {\n")
    (d / "list.yml").write_text("- zone-a\n- zone-b\n")
    # The hosts of cloud.yml in their groups, at an address that refuses connections at once.
    unreachable = {"ansible_host": "127.0.0.1", "ansible_port": 1}
    groups = {
        group: {"hosts": {h: unreachable for spec in CLOUD["clusters"].values() for h in
                          ([spec["cc"]] if group == "cc" else spec[group])}}
        for group in ("cc", "sc", "nc")
    }  # fmt: skip
    inventory = {"all": {"children": {"cloud": {"children": groups}}}}
    (d / "inventory.yml").write_text(yaml.safe_dump(inventory))
    (d / "broken-inventory.yml").write_text("all:\n  hosts:\n    - [nowhere\n")
    (d / "inventory-dir" / "group_vars").mkdir(parents=True)
    (d / "inventory-dir" / "hosts.yml").write_text((d / "inventory.yml").read_text())
    (d / "inventory-dir" / "group_vars" / "all.yml").write_text("cloud_clusters: [\n")
    (d / "empty-inventory.yml").write_text("all:\n  children:\n    nc: {}\n")
    (d / "root.img").write_bytes(b"\0" * 4096)
    (d / "empty.img").write_bytes(b"")
    ed = ed25519.Ed25519PrivateKey.generate()
    public = (
        ed.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    (d / "ok.pub").write_text(public + " me@host\n")
    (d / "garbage.pub").write_text("this is not a key\n")
    (d / "one-word.pub").write_text("AAAAC3NzaC1lZDI1NTE5\n")
    (d / "truncated.pub").write_text(public[: len(public) - 12] + "\n")
    (d / "private.pem").write_bytes(ed.private_bytes(serialization.Encoding.PEM,
                                                     serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))  # fmt: skip
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    (d / "weak.pub").write_bytes(weak.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """The files the cases refer to ({d}) and a seeded state file to copy."""
    root = tmp_path_factory.mktemp("bad-input")
    _write_files(root / "files")
    public = (root / "files" / "ok.pub").read_text().strip()
    store = StateStore(root / "state.json")
    store.initialize(CLOUD_ID, "badinput")
    _seed(store, public)
    return root


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _runs(home: Path) -> list[str]:
    runs = home / "runs"
    return sorted(os.listdir(runs)) if runs.is_dir() else []


@pytest.mark.parametrize("c", list(_params()))
def test_bad_input_is_refused_with_one_line_and_no_change(
    c: Case, world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    files = world / "files"
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    state = home / "state.json"
    shutil.copy2(world / "state.json", state)
    before, runs_before = _digest(state), _runs(home)
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CLOUDCTL_")}
    env.update(
        CLOUDCTL_HOME=str(home),
        CLOUDCTL_CONFIG=str(files / "cloud.yml"),
        CLOUDCTL_INVENTORY=str(files / "inventory.yml"),
    )
    env.update({k: v.format(d=files) for k, v in c.env.items()})
    args = [a.format(d=files) for a in c.args]

    monkeypatch.chdir(tmp_path)
    proc = cloudctl_here(args, env)

    report = f"cloudctl {' '.join(args)}\nrc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stdout + proc.stderr, report
    assert proc.returncode != 0, report
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, report
    assert lines[0].startswith("Error: ") and lines[0][len("Error: ") :].strip(), report
    assert c.expect in lines[0], report
    assert _digest(state) == before, f"the state file changed\n{report}"
    assert _runs(home) == runs_before, f"an Ansible run was started\n{report}"
