"""cloud_precheck: table-driven checks of its validation, plus real ansible-playbook runs of
the play documented in its EXAMPLES against a real inventory."""

from __future__ import annotations

import ast
import copy
import json
import os
import subprocess

import pytest
from modhelpers import ANSIBLE_PLAYBOOK, HERE, PLUGINS, ROOT, load_module_source, run_module

precheck = load_module_source("cloud_precheck")

GOOD_GROUPS = {
    "all": ["clc1", "cc1", "cc2", "nc1", "nc2", "nc3"],
    "ungrouped": [],
    "clc": ["clc1"],
    "walrus": ["clc1"],
    "cc": ["cc1", "cc2"],
    "sc": ["cc1", "cc2"],
    "nc": ["nc1", "nc2", "nc3"],
}
GOOD_HOSTS = {
    "clc1": {"cloud_cluster": None},
    "cc1": {"cloud_cluster": "zone-a"},
    "cc2": {"cloud_cluster": "zone-b"},
    "nc1": {"cloud_cluster": "zone-a"},
    "nc2": {"cloud_cluster": "zone-a"},
    "nc3": {"cloud_cluster": "zone-b"},
}
GOOD_CLUSTERS = {
    "zone-a": {"subnet": "172.31.0.0/24", "bridge": "cloudbr0", "public_interface": ""},
    "zone-b": {"subnet": "172.31.1.0/24", "bridge": "cloudbr0", "public_interface": "eth0"},
}


def case(groups=None, hosts=None, clusters=None):
    """The good description with the given parts changed (callables edit a deep copy)."""
    parts = []
    for good, change in ((GOOD_GROUPS, groups), (GOOD_HOSTS, hosts), (GOOD_CLUSTERS, clusters)):
        part = copy.deepcopy(good)
        if callable(change):
            change(part)
        elif change is not None:
            part = change
        parts.append(part)
    return parts


# (id, description, exact error lines expected)
FAILURES = [
    (
        "nc host without cloud_cluster",
        case(hosts=lambda h: h["nc2"].pop("cloud_cluster")),
        ["host nc2: cloud_cluster is not set (every host in cc, sc and nc needs it)"],
    ),
    (
        "host missing from hosts",
        case(hosts=lambda h: h.pop("nc3")),
        [
            "host nc3: cloud_cluster is not set (every host in cc, sc and nc needs it)",
        ],
    ),
    (
        "sc host with empty cloud_cluster",
        case(hosts=lambda h: h["cc1"].update(cloud_cluster="")),
        [
            "host cc1: cloud_cluster is not set (every host in cc, sc and nc needs it)",
            (
                "cluster zone-a: no host in group cc has it as cloud_cluster; a cluster with node "
                "controllers needs one cluster controller (or two, a CC pair)"
            ),
            (
                "cluster zone-a: no host in group sc has it as cloud_cluster; a cluster with node "
                "controllers needs a storage controller"
            ),
        ],
    ),
    (
        "unknown cluster",
        case(hosts=lambda h: h["nc3"].update(cloud_cluster="zone-x")),
        [
            (
                "host nc3: cloud_cluster 'zone-x' is not defined in cloud_clusters "
                "(defined: zone-a, zone-b)"
            )
        ],
    ),
    (
        "invalid CIDR",
        case(clusters=lambda c: c["zone-a"].update(subnet="172.31.0.0/33")),
        [
            (
                "cluster zone-a: cloud_clusters.zone-a.subnet '172.31.0.0/33' is not an IPv4 CIDR "
                "network (like 172.31.0.0/24)"
            )
        ],
    ),
    (
        "not an address",
        case(clusters=lambda c: c["zone-a"].update(subnet="zone-a-net/24")),
        [
            (
                "cluster zone-a: cloud_clusters.zone-a.subnet 'zone-a-net/24' is not an IPv4 CIDR "
                "network (like 172.31.0.0/24)"
            )
        ],
    ),
    (
        "no prefix length",
        case(clusters=lambda c: c["zone-a"].update(subnet="172.31.0.0")),
        [
            (
                "cluster zone-a: cloud_clusters.zone-a.subnet '172.31.0.0' has no prefix length "
                "(write it like 172.31.0.0/24)"
            )
        ],
    ),
    (
        "host bits set",
        case(clusters=lambda c: c["zone-a"].update(subnet="172.31.0.1/24")),
        [
            (
                "cluster zone-a: cloud_clusters.zone-a.subnet '172.31.0.1/24' has host bits set "
                "(the network is 172.31.0.0/24)"
            )
        ],
    ),
    (
        "IPv6 subnet",
        case(clusters=lambda c: c["zone-a"].update(subnet="fd00::/64")),
        [
            (
                "cluster zone-a: cloud_clusters.zone-a.subnet 'fd00::/64' is not IPv4 "
                "(instance subnets are IPv4)"
            )
        ],
    ),
    (
        "subnet too small",
        case(clusters=lambda c: c["zone-a"].update(subnet="172.31.0.0/30")),
        [
            (
                "cluster zone-a: cloud_clusters.zone-a.subnet 172.31.0.0/30 is too small (at least "
                "a /29: the gateway and the instances need addresses)"
            )
        ],
    ),
    (
        "subnet missing",
        case(clusters=lambda c: c["zone-b"].pop("subnet")),
        ["cluster zone-b: cloud_clusters.zone-b.subnet is not set"],
    ),
    (
        "overlapping subnets",
        case(clusters=lambda c: c["zone-b"].update(subnet="172.31.0.0/16")),
        [
            (
                "clusters zone-a and zone-b: cloud_clusters.zone-a.subnet 172.31.0.0/24 overlaps "
                "cloud_clusters.zone-b.subnet 172.31.0.0/16"
            )
        ],
    ),
    (
        "no walrus host",
        case(groups=lambda g: g.update(walrus=[])),
        ["no host in group walrus: the cloud needs a Walrus host"],
    ),
    (
        "no clc group at all",
        case(groups=lambda g: g.pop("clc")),
        ["no host in group clc: the cloud needs a Cloud Controller host"],
    ),
    (
        "bridge name too long",
        case(clusters=lambda c: c["zone-a"].update(bridge="cloudbridge-zone-a")),
        [
            (
                "cluster zone-a: cloud_clusters.zone-a.bridge 'cloudbridge-zone-a' is 18 characters "
                "(Linux interface names have at most 15)"
            )
        ],
    ),
    (
        "bridge name with a space",
        case(clusters=lambda c: c["zone-a"].update(bridge="cloud br0")),
        [
            (
                "cluster zone-a: cloud_clusters.zone-a.bridge 'cloud br0' contains ' ' "
                "(not allowed in an interface name)"
            )
        ],
    ),
    (
        "bridge missing",
        case(clusters=lambda c: c["zone-a"].pop("bridge")),
        ["cluster zone-a: cloud_clusters.zone-a.bridge is not set"],
    ),
    (
        "bad public interface",
        case(clusters=lambda c: c["zone-b"].update(public_interface="eth0:1")),
        [
            (
                "cluster zone-b: cloud_clusters.zone-b.public_interface 'eth0:1' contains ':' "
                "(not allowed in an interface name)"
            )
        ],
    ),
    (
        "elastic IP pool without public_interface",
        case(clusters=lambda c: c["zone-a"].update(public_ips="198.51.100.0/28")),
        [
            (
                "cluster zone-a: cloud_clusters.zone-a.public_ips '198.51.100.0/28' needs "
                "public_interface (the CC holds the elastic IPs on it)"
            )
        ],
    ),
    (
        "elastic IP pool not an address",
        case(clusters=lambda c: c["zone-b"].update(public_ips="public")),
        [
            (
                "cluster zone-b: cloud_clusters.zone-b.public_ips 'public' is not an IPv4 CIDR "
                "(like 198.51.100.0/28) or range (like 198.51.100.10-198.51.100.20)"
            )
        ],
    ),
    (
        "elastic IP pool IPv6",
        case(clusters=lambda c: c["zone-b"].update(public_ips="2001:db8::/64")),
        [
            (
                "cluster zone-b: cloud_clusters.zone-b.public_ips '2001:db8::/64' is not an IPv4 "
                "CIDR (like 198.51.100.0/28) or range (like 198.51.100.10-198.51.100.20)"
            )
        ],
    ),
    (
        "elastic IP pool with host bits",
        case(clusters=lambda c: c["zone-b"].update(public_ips="198.51.100.5/28")),
        [
            (
                "cluster zone-b: cloud_clusters.zone-b.public_ips '198.51.100.5/28' has host bits "
                "set (the network is 198.51.100.0/28)"
            )
        ],
    ),
    (
        "elastic IP range backwards",
        case(clusters=lambda c: c["zone-b"].update(public_ips="198.51.100.9-198.51.100.2")),
        [
            (
                "cluster zone-b: cloud_clusters.zone-b.public_ips '198.51.100.9-198.51.100.2' "
                "ends before it starts"
            )
        ],
    ),
    (
        "elastic IP pool inside a cluster subnet",
        case(clusters=lambda c: c["zone-b"].update(public_ips="172.31.0.200-172.31.0.210")),
        [
            (
                "cluster zone-b: cloud_clusters.zone-b.public_ips '172.31.0.200-172.31.0.210' "
                "overlaps cloud_clusters.zone-a.subnet 172.31.0.0/24 (elastic IPs are public "
                "addresses)"
            )
        ],
    ),
    (
        "elastic IP pools of two zones overlap",
        case(
            clusters=lambda c: (
                c["zone-a"].update(public_interface="eth0", public_ips="198.51.100.0/28"),
                c["zone-b"].update(public_ips="198.51.100.14-198.51.100.20"),
            )
        ),
        [
            (
                "clusters zone-a and zone-b: cloud_clusters.zone-a.public_ips '198.51.100.0/28' "
                "overlaps cloud_clusters.zone-b.public_ips '198.51.100.14-198.51.100.20'"
            )
        ],
    ),
    (
        "three CCs in one cluster",
        case(
            groups=lambda g: g["cc"].append("nc1"),
            hosts=lambda h: h["cc2"].update(cloud_cluster="zone-a"),
        ),
        [
            (
                "cluster zone-a: 3 hosts in group cc have it (cc1, cc2, nc1) as cloud_cluster; a "
                "cluster with node controllers needs one cluster controller (or two, a CC pair)"
            ),
            (
                "cluster zone-b: no host in group cc has it as cloud_cluster; a cluster with node "
                "controllers needs one cluster controller (or two, a CC pair)"
            ),
            (
                "cluster zone-b: no host in group sc has it as cloud_cluster; a cluster with node "
                "controllers needs a storage controller"
            ),
        ],
    ),
    (
        "no clusters",
        case(clusters={}),
        [
            "cloud_clusters is empty: define at least one cluster (docs/conventions.md)",
            "host cc1: cloud_cluster 'zone-a' is not defined in cloud_clusters (defined: none)",
            "host cc2: cloud_cluster 'zone-b' is not defined in cloud_clusters (defined: none)",
            "host nc1: cloud_cluster 'zone-a' is not defined in cloud_clusters (defined: none)",
            "host nc2: cloud_cluster 'zone-a' is not defined in cloud_clusters (defined: none)",
            "host nc3: cloud_cluster 'zone-b' is not defined in cloud_clusters (defined: none)",
        ],
    ),
    (
        "cluster not a dict",
        case(clusters=lambda c: c.update({"zone-b": "172.31.1.0/24"})),
        ["cluster zone-b: cloud_clusters.zone-b must be a dict with subnet and bridge"],
    ),
]


def test_good_description():
    errors, warnings, summary = precheck.check_cloud(*case())
    assert errors == []
    assert warnings == []
    assert summary == {
        "zone-a": {
            "subnet": "172.31.0.0/24",
            "gateway": "172.31.0.1",
            "bridge": "cloudbr0",
            "cc": ["cc1"],
            "sc": ["cc1"],
            "nc": ["nc1", "nc2"],
        },
        "zone-b": {
            "subnet": "172.31.1.0/24",
            "gateway": "172.31.1.1",
            "bridge": "cloudbr0",
            "cc": ["cc2"],
            "sc": ["cc2"],
            "nc": ["nc3"],
        },
    }


def test_cloud_in_a_box():
    """One host in every group, a /29 subnet (the smallest allowed)."""
    groups = {g: ["box"] for g in ("all", "clc", "walrus", "cc", "sc", "nc")}
    hosts = {"box": {"cloud_cluster": "zone-a"}}
    clusters = {"zone-a": {"subnet": "192.168.77.0/29", "bridge": "cloudbr0"}}
    errors, _, summary = precheck.check_cloud(groups, hosts, clusters)
    assert errors == []
    assert summary["zone-a"]["cc"] == summary["zone-a"]["nc"] == ["box"]


def test_elastic_ip_pools():
    """Pools as CIDR or range, adjacent but not overlapping, beside zones without a pool."""
    groups, hosts, clusters = case()
    clusters["zone-a"].update(public_interface="eth1", public_ips="198.51.100.0/28")
    clusters["zone-b"]["public_ips"] = "198.51.100.15-198.51.100.40"  # .15 is /28's broadcast
    assert precheck.check_cloud(groups, hosts, clusters)[0] == []
    clusters["zone-b"]["public_ips"] = "198.51.100.14-198.51.100.40"
    assert precheck.check_cloud(groups, hosts, clusters)[0] == [
        (
            "clusters zone-a and zone-b: cloud_clusters.zone-a.public_ips '198.51.100.0/28' "
            "overlaps cloud_clusters.zone-b.public_ips '198.51.100.14-198.51.100.40'"
        )
    ]


def test_cluster_without_nc_is_a_warning():
    groups, hosts, clusters = case()
    clusters["zone-c"] = {"subnet": "172.31.2.0/24", "bridge": "cloudbr2"}
    groups["cc"].append("cc3")
    groups["sc"].append("cc3")
    hosts["cc3"] = {"cloud_cluster": "zone-c"}
    errors, warnings, _ = precheck.check_cloud(groups, hosts, clusters)
    assert errors == []
    assert warnings == ["cluster zone-c has no node controller (no host in nc has it)"]


@pytest.mark.parametrize(
    ("description", "expected"), [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES]
)
def test_failures(description, expected):
    errors, _, _ = precheck.check_cloud(*description)
    assert errors == expected
    for line in errors:
        assert "\n" not in line


# --- real runs through ansible-playbook ---------------------------------------------------


def test_module_ok_through_ansible(tmp_path):
    groups, hosts, clusters = case()
    res = run_module(
        tmp_path, "cloud_precheck", {"groups": groups, "hosts": hosts, "clusters": clusters}
    )
    assert not res.get("failed"), res.get("msg")
    assert res["changed"] is False
    assert res["msg"].startswith("cloud ok: 2 clusters; zone-a (subnet 172.31.0.0/24")
    assert res["clusters"]["zone-b"]["nc"] == ["nc3"]


def test_module_failure_through_ansible(tmp_path):
    groups, hosts, clusters = case(
        groups=lambda g: g.update(walrus=[]), hosts=lambda h: h["nc2"].pop("cloud_cluster")
    )
    res = run_module(
        tmp_path,
        "cloud_precheck",
        {"groups": groups, "hosts": hosts, "clusters": clusters},
        check=True,
    )
    assert res["failed"] is True
    assert res["changed"] is False
    assert res["errors"] == [
        "no host in group walrus: the cloud needs a Walrus host",
        "host nc2: cloud_cluster is not set (every host in cc, sc and nc needs it)",
    ]
    assert res["msg"] == "2 problems in the cloud description: " + "; ".join(res["errors"])


def documented_play() -> str:
    """The play in the module's EXAMPLES, as site.yml is told to use it."""
    src = (PLUGINS / "modules" / "cloud_precheck.py").read_text()
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "EXAMPLES":
            return node.value.value
    raise AssertionError("no EXAMPLES")


INVENTORY = {
    "all": {
        "vars": {
            "ansible_connection": "local",
            "ansible_python_interpreter": "/usr/bin/python3",
            "cloud_clusters": GOOD_CLUSTERS,
        },
        "children": {
            "cloud": {
                "children": {
                    "clc": {"hosts": {"clc1": {}}},
                    "walrus": {"hosts": {"clc1": {}}},
                    "cc": {
                        "hosts": {
                            "cc1": {"cloud_cluster": "zone-a"},
                            "cc2": {"cloud_cluster": "zone-b"},
                        }
                    },
                    "sc": {"hosts": {"cc1": {}, "cc2": {}}},
                    "nc": {
                        "hosts": {
                            "nc1": {"cloud_cluster": "zone-a"},
                            "nc2": {"cloud_cluster": "zone-a"},
                            "nc3": {"cloud_cluster": "zone-b"},
                        }
                    },
                }
            }
        },
    }
}


def run_documented_play(tmp_path, inventory: dict) -> tuple[subprocess.CompletedProcess, dict]:
    """Run the EXAMPLES play on ``inventory``; returns the process and the module's result."""
    (tmp_path / "inventory.yml").write_text(json.dumps(inventory))
    (tmp_path / "site.yml").write_text(documented_play())
    results = tmp_path / "results.jsonl"
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_CALLBACK_PLUGINS": str(HERE / "callback_plugins"),
        "ANSIBLE_CALLBACKS_ENABLED": "module_result",
        "MODULE_RESULT_FILE": str(results),
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_NOCOLOR": "1",
    }
    proc = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(tmp_path / "inventory.yml"), str(tmp_path / "site.yml")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = results.read_text().splitlines() if results.exists() else []
    assert len(lines) == 1, f"one result expected (run_once):\n{proc.stdout}{proc.stderr}"
    return proc, json.loads(lines[0])


def test_documented_play_ok(tmp_path):
    proc, res = run_documented_play(tmp_path, INVENTORY)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert res["changed"] is False
    assert res["msg"] == (
        "cloud ok: 2 clusters; zone-a (subnet 172.31.0.0/24, bridge cloudbr0): cc cc1, sc cc1, "
        "nc nc1 nc2; zone-b (subnet 172.31.1.0/24, bridge cloudbr0): cc cc2, sc cc2, nc nc3"
    )


def test_documented_play_names_host_and_variable(tmp_path):
    inventory = copy.deepcopy(INVENTORY)
    inventory["all"]["children"]["cloud"]["children"]["nc"]["hosts"]["nc2"] = {}
    proc, res = run_documented_play(tmp_path, inventory)
    assert proc.returncode != 0
    assert res["failed"] is True
    assert res["msg"] == "host nc2: cloud_cluster is not set (every host in cc, sc and nc needs it)"


# --- HA pairs (issue 12) ------------------------------------------------------------------

HA_GROUPS = {
    "all": ["cloud1", "cloud2", "witness1", "node1"],
    "clc": ["cloud1", "cloud2"],
    "walrus": ["cloud1", "cloud2"],
    "cc": ["cloud1", "cloud2"],
    "sc": ["node1"],
    "nc": ["node1"],
    "witness": ["witness1"],
}
TARGETS = ["icmp:192.0.2.1", "tcp:192.0.2.53:53"]
HA_HOSTS = {
    "cloud1": {"cloud_cluster": "zone-a", "ansible_host": "192.0.2.11",
               "cloud_arbitrator_targets": TARGETS},
    "cloud2": {"cloud_cluster": "zone-a", "ansible_host": "192.0.2.12",
               "cloud_arbitrator_targets": TARGETS},
    "witness1": {"cloud_cluster": None, "ansible_host": "192.0.2.13"},
    "node1": {"cloud_cluster": "zone-a", "ansible_host": "192.0.2.21"},
}  # fmt: skip
HA_VIPS = {"clc": "192.0.2.100", "walrus": "192.0.2.101"}
FACTS = {"vip_network": "192.0.2.11/24", "probes": {t: True for t in TARGETS}}
PAIR = "the CLC pair (cloud1, cloud2)"


def ha_case(groups=None, hosts=None, vips=None):
    """The good HA description (inventory/ha's) with the given parts edited."""
    parts = [copy.deepcopy(p) for p in (HA_GROUPS, HA_HOSTS, HA_VIPS)]
    for part, edit in zip(parts, (groups, hosts, vips)):
        if edit:
            edit(part)
    return parts


def check_ha(groups, hosts, vips):
    """check_ha after check_cloud, as the module runs them: (errors, warnings, pairs)."""
    clusters = {"zone-a": {"subnet": "172.31.0.0/24", "bridge": "cloudbr0"}}
    errors, _warnings, summary = precheck.check_cloud(groups, hosts, clusters)
    assert errors == []
    return precheck.check_ha(groups, hosts, summary, vips)


def with_facts(hosts, **changes):
    for host in ("cloud1", "cloud2"):
        hosts[host].update(copy.deepcopy(FACTS), **changes.get(host, {}))


HA_FAILURES = [
    (
        "pair without a VIP",
        ha_case(vips=lambda v: v.pop("clc")),
        [f"{PAIR} needs cloud_clc_vip_address: the virtual address its clients reach"],
    ),
    (
        "VIP not an address",
        ha_case(vips=lambda v: v.update(walrus="walrus.example")),
        [
            (
                "the Walrus pair (cloud1, cloud2): cloud_walrus_vip_address 'walrus.example' is not "
                "an IPv4 address"
            )
        ],
    ),
    (
        "VIP is a host's address",
        ha_case(vips=lambda v: v.update(clc="192.0.2.12")),
        [
            (
                f"{PAIR}: cloud_clc_vip_address 192.0.2.12 is the address of host cloud2 "
                "(ansible_host): a virtual address is a free one that moves between the hosts"
            )
        ],
    ),
    (
        "VIP outside the hosts' network",
        ha_case(hosts=with_facts, vips=lambda v: v.update(clc="198.51.100.7")),
        [
            f"{PAIR}: cloud_clc_vip_address 198.51.100.7 is outside the network 192.0.2.0/24 of "
            f"host {host}'s virtual address interface (keepalived adds it there; clients could "
            "not reach it)"
            for host in ("cloud1", "cloud2")
        ],
    ),
    (
        "no interface holds ansible_host",
        ha_case(hosts=lambda h: with_facts(h, cloud2={"vip_network": ""})),
        [
            (
                "host cloud2: no interface holds ansible_host 192.0.2.12: set cloud_vip_interface to "
                "the interface that carries the virtual addresses"
            )
        ],  # once, though cloud2 is in two pairs
    ),
    (
        "three CLCs",
        ha_case(groups=lambda g: g["clc"].append("node1")),
        [
            (
                "group clc has 3 hosts (cloud1, cloud2, node1): one CLC host, or two for a "
                "primary/secondary pair"
            ),
            (
                "the Walrus pair (cloud1, cloud2) keeps its filer store in etcd, whose members are "
                "the CLC pair and the witness: make clc a pair too"
            ),
        ],
    ),
    (
        "three walrus hosts",
        ha_case(groups=lambda g: g["walrus"].append("node1")),
        [
            (
                "group walrus has 3 hosts (cloud1, cloud2, node1): one Walrus host, or two for a "
                "primary/secondary pair"
            )
        ],
    ),
    (
        "pair without a witness",
        ha_case(groups=lambda g: g.pop("witness")),
        [
            (
                f"{PAIR} needs a witness: one host in group witness, the third etcd member (a third "
                "host, so that either host of the pair can fail)"
            ),
            (
                "the Walrus pair (cloud1, cloud2) needs a witness: one host in group witness, the "
                "third SeaweedFS master (a third host, so that either host of the pair can fail)"
            ),
        ],
    ),
    (
        "the witness is a pair host",
        ha_case(groups=lambda g: g.update(witness=["cloud2"])),
        [
            (
                f"host cloud2 is in both witness and clc: the witness must be a third host, not one "
                f"of {PAIR}"
            ),
            (
                "host cloud2 is in both witness and walrus: the witness must be a third host, not "
                "one of the Walrus pair (cloud1, cloud2)"
            ),
        ],
    ),
    (
        "two witnesses",
        ha_case(groups=lambda g: g["witness"].append("node1")),
        [
            (
                "group witness has 2 hosts (witness1, node1): it holds ONE host, the third etcd "
                "member and SeaweedFS master of the clc and walrus pairs"
            )
        ],
    ),
    (
        "walrus pair with one CLC",
        ha_case(groups=lambda g: g.update(clc=["cloud1"])),
        [
            (
                "the Walrus pair (cloud1, cloud2) keeps its filer store in etcd, whose members are "
                "the CLC pair and the witness: make clc a pair too"
            )
        ],
    ),
    (
        "pair host without arbitrator targets",
        ha_case(hosts=lambda h: h["cloud2"].pop("cloud_arbitrator_targets")),
        [
            (
                "host cloud2: cloud_arbitrator_targets is not set (every host of an HA pair probes "
                "something outside the pair: a list of icmp:ADDRESS or tcp:ADDRESS:PORT)"
            )
        ],  # once, though cloud2 is in three pairs
    ),
    (
        "arbitrator targets not a list",
        ha_case(hosts=lambda h: h["cloud1"].update(cloud_arbitrator_targets="icmp:192.0.2.1")),
        [
            (
                "host cloud1: cloud_arbitrator_targets must be a list of icmp:ADDRESS or "
                "tcp:ADDRESS:PORT, not str 'icmp:192.0.2.1'"
            )
        ],
    ),
    *[
        (
            f"arbitrator target {bad}",
            ha_case(hosts=lambda h, bad=bad: h["cloud1"].update(cloud_arbitrator_targets=[bad])),
            [
                (
                    f"host cloud1: cloud_arbitrator_targets entry {bad!r} is not icmp:ADDRESS or "
                    "tcp:ADDRESS:PORT (an IPv4 address, a port 1-65535)"
                )
            ],
        )
        for bad in [
            "192.0.2.1",
            "udp:192.0.2.1:53",
            "tcp:192.0.2.1",
            "tcp:192.0.2.1:0",
            "icmp:gateway",
            "tcp:192.0.2.1:http",
        ]
    ],
    (
        "a target no host of the pair reaches",
        ha_case(
            hosts=lambda h: with_facts(
                h,
                **{
                    n: {"probes": {"icmp:192.0.2.1": False, "tcp:192.0.2.53:53": True}}
                    for n in ("cloud1", "cloud2")
                },
            )
        ),
        [
            (
                "arbitrator target icmp:192.0.2.1 answers none of the pair hosts that probe it "
                "(cloud1, cloud2): a typo or a firewall? A target no host reaches never arbitrates"
            )
        ],
    ),
]


def test_ha_description_is_good():
    groups, hosts, vips = ha_case(hosts=with_facts)
    errors, warnings, pairs = check_ha(groups, hosts, vips)
    assert errors == [] and warnings == []
    assert pairs == {p: ["cloud1", "cloud2"] for p in ("clc", "walrus", "cc zone-a")}


def test_single_hosts_need_no_ha_variables():
    groups, hosts, _ = ha_case(
        groups=lambda g: (g.update(clc=["cloud1"], walrus=["cloud1"], cc=["cloud1"]),
                          g.pop("witness")),
        hosts=lambda h: h["cloud1"].pop("cloud_arbitrator_targets"),
    )  # fmt: skip
    assert check_ha(groups, hosts, {}) == ([], [], {})


def test_a_cc_pair_alone_needs_targets_but_no_witness_or_vip():
    groups, hosts, _ = ha_case(
        groups=lambda g: (g.update(clc=["cloud1"], walrus=["cloud1"]), g.pop("witness"))
    )
    assert check_ha(groups, hosts, {}) == ([], [], {"cc zone-a": ["cloud1", "cloud2"]})


def test_unreached_targets_of_one_host_are_warnings():
    groups, hosts, vips = ha_case(
        groups=lambda g: g.update(walrus=["cloud1"], cc=["cloud1"]),
        hosts=lambda h: with_facts(h, cloud1={"probes": {t: False for t in TARGETS}},
                                   cloud2={"probes": {TARGETS[0]: True, TARGETS[1]: False}}),
    )  # fmt: skip
    errors, warnings, _ = check_ha(groups, hosts, vips)
    assert errors == [
        (
            "arbitrator target tcp:192.0.2.53:53 answers none of the pair hosts that probe it "
            "(cloud1, cloud2): a typo or a firewall? A target no host reaches never arbitrates"
        )
    ]
    assert warnings == [
        (
            "host cloud1 reaches none of its arbitrator targets (icmp:192.0.2.1, tcp:192.0.2.53:53): "
            "it cannot hold the virtual addresses of its pairs until one answers"
        ),
        "host cloud2 does not reach arbitrator target tcp:192.0.2.53:53",
    ]


def test_an_unused_witness_is_a_warning():
    groups, hosts, _ = ha_case(groups=lambda g: g.update(clc=["cloud1"], walrus=["cloud1"]))
    errors, warnings, _ = check_ha(groups, hosts, {})
    assert errors == []
    assert warnings == ["group witness (witness1) is unused: no clc or walrus pair needs it"]


@pytest.mark.parametrize(
    ("description", "expected"), [f[1:] for f in HA_FAILURES], ids=[f[0] for f in HA_FAILURES]
)
def test_ha_failures(description, expected):
    errors, _, _ = check_ha(*description)
    assert errors == expected
    for line in errors:
        assert "\n" not in line


def test_module_reports_the_pairs(tmp_path):
    groups, hosts, vips = ha_case()
    clusters = {"zone-a": {"subnet": "172.31.0.0/24", "bridge": "cloudbr0"}}
    res = run_module(
        tmp_path,
        "cloud_precheck",
        {"groups": groups, "hosts": hosts, "clusters": clusters, "vip_addresses": vips},
    )
    assert not res.get("failed"), res.get("msg")
    assert res["pair_hosts"] == res["vip_hosts"] == ["cloud1", "cloud2"]
    assert res["msg"].endswith(
        "; HA pairs: clc (cloud1 cloud2), walrus (cloud1 cloud2), cc zone-a (cloud1 cloud2)"
    )
