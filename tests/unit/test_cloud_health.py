"""modules/cloud_health.py: the parsing parts, and the checks with a stand-in AnsibleModule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import load_file

PROJECT = Path(__file__).resolve().parents[2]
cloud_health = load_file(
    "cloud_health",
    PROJECT / "collections/ansible_collections/cloudctl/cloud/plugins/modules/cloud_health.py",
)

# Captured from `ss -H -lunp 'sport = :67'` with dnsmasq (bind-interfaces) on cloudbr0,
# then without bind-interfaces, plus a socket bound to an address.
SS_BOUND = 'UNCONN 0      0      0.0.0.0%cloudbr0:67 0.0.0.0:* users:(("dnsmasq",pid=20406,fd=3))\n'
SS_WILDCARD = 'UNCONN 0      0      0.0.0.0:67 0.0.0.0:* users:(("dnsmasq",pid=20619,fd=3))\n'
SS_ADDRESS = "UNCONN 0      0      172.31.0.1:67 0.0.0.0:*\n"
IP_JSON = json.dumps(
    [
        {
            "ifindex": 2,
            "ifname": "cloudbr0",
            "addr_info": [
                {"family": "inet", "local": "172.31.0.1", "prefixlen": 24, "label": "cloudbr0"}
            ],
        }
    ]
)
TGTADM = """System:
    State: ready
    debug: off
LLDs:
    iscsi: ready
    iser: error
Backing stores:
    rdwr (bsoflags sync:direct)
iSNS:
    iSNS=Off
"""
VIRSH = """Compiled against library: libvirt 9.0.0
Using library: libvirt 9.0.0
Using API: QEMU 9.0.0
Running hypervisor: QEMU 7.2.22
"""


def test_parse_ss_sockets():
    [sock] = cloud_health.parse_ss_sockets(SS_BOUND)
    assert sock == {
        "address": "0.0.0.0",
        "device": "cloudbr0",
        "port": 67,
        "process": "dnsmasq",
        "local": "0.0.0.0%cloudbr0:67",
    }
    [sock] = cloud_health.parse_ss_sockets(SS_ADDRESS + "garbage\n\n")
    assert (sock["address"], sock["device"], sock["process"]) == ("172.31.0.1", "", "")
    [sock] = cloud_health.parse_ss_sockets("UNCONN 0 0 [::]%br0:547 [::]:*\n")
    assert (sock["address"], sock["device"], sock["port"]) == ("::", "br0", 547)


@pytest.mark.parametrize(
    ("output", "found"),
    [
        (SS_BOUND, True),
        (SS_ADDRESS, True),
        (SS_WILDCARD, False),  # not bound to the bridge: cannot tell it serves it
        ("UNCONN 0 0 0.0.0.0%virbr0:67 0.0.0.0:*\n", False),
        ("UNCONN 0 0 0.0.0.0%cloudbr0:68 0.0.0.0:*\n", False),
        ("", False),
    ],
)
def test_find_dhcp_socket(output, found):
    sockets = cloud_health.parse_ss_sockets(output)
    sock = cloud_health.find_dhcp_socket(sockets, "cloudbr0", ["172.31.0.1"])
    assert (sock is not None) == found


def test_ipv4_addresses():
    assert cloud_health.ipv4_addresses(IP_JSON) == ["172.31.0.1"]
    assert cloud_health.ipv4_addresses("") == []
    assert cloud_health.ipv4_addresses("not json") == []


def test_parse_tgtadm_and_virsh_and_versions():
    values = cloud_health.parse_tgtadm_system(TGTADM)
    assert (values["State"], values["iscsi"], values["iser"]) == ("ready", "ready", "error")
    assert cloud_health.parse_virsh_version(VIRSH)["Running hypervisor"] == "QEMU 7.2.22"
    assert cloud_health.libvirt_version(9000000) == "9.0.0"
    assert cloud_health.libvirt_version(7002022) == "7.2.22"
    assert cloud_health.missing_buckets(["images"], ["images", "snapshots"]) == ["snapshots"]


class StandIn:
    """The few AnsibleModule methods the checks use; commands answer from a table."""

    def __init__(self, params: dict, answers: dict[str, tuple[int, str, str]]) -> None:
        self.params = {"timeout": 5, **params}
        self.answers = answers

    def get_bin_path(self, name: str, opt_dirs=None):
        return None if name == "timeout" else f"/usr/bin/{name}"

    def run_command(self, args, environ_update=None):
        return self.answers[Path(args[0]).name]


def test_cc_check():
    ok = StandIn({"bridge": "cloudbr0"}, {"ss": (0, SS_BOUND, ""), "ip": (0, IP_JSON, "")})
    assert cloud_health.HealthCheck(ok).cc() == (
        True,
        "DHCP listens on 0.0.0.0%cloudbr0:67 (dnsmasq)",
    )
    bad = StandIn({"bridge": "cloudbr0"}, {"ss": (0, SS_WILDCARD, ""), "ip": (0, IP_JSON, "")})
    healthy, detail = cloud_health.HealthCheck(bad).cc()
    assert not healthy and "0.0.0.0:67" in detail


def test_cc_check_of_a_pair():
    """A CC pair's zone: the holder of the gateway serves DHCP; the standby serves none."""
    answers = {"ss": (0, SS_BOUND, ""), "ip": (0, IP_JSON, "")}
    holder = StandIn({"bridge": "cloudbr0", "pair_gateway": "172.31.0.1"}, answers)
    assert cloud_health.HealthCheck(holder).cc()[0]
    no_gateway = {"ss": (0, "", ""), "ip": (0, "[]", "")}
    standby = StandIn({"bridge": "cloudbr0", "pair_gateway": "172.31.0.1"}, no_gateway)
    assert cloud_health.HealthCheck(standby).cc() == (
        True,
        "standby: the holder of the gateway 172.31.0.1 serves DHCP",
    )
    both = StandIn({"bridge": "cloudbr0", "pair_gateway": "172.31.0.1"},
                   {"ss": (0, SS_BOUND, ""), "ip": (0, "[]", "")})  # fmt: skip
    assert cloud_health.HealthCheck(both).cc() == (
        False,
        "serves DHCP on cloudbr0 without holding the gateway 172.31.0.1",
    )


def test_sc_check():
    ok = StandIn({}, {"tgtadm": (0, TGTADM, "")})
    assert cloud_health.HealthCheck(ok).sc() == (True, "tgtd answers: state ready, iscsi ready")
    down = StandIn({}, {"tgtadm": (107, "", "tgtadm: failed to send request hdr to tgt daemon\n")})
    assert cloud_health.HealthCheck(down).sc() == (
        False,
        "tgtd does not answer: tgtadm: failed to send request hdr to tgt daemon",
    )


def test_walrus_credentials_problems(tmp_path):
    missing = StandIn({"credentials": str(tmp_path / "none.json")}, {})
    assert cloud_health.HealthCheck(missing).walrus()[1].endswith("No such file or directory")
    partial = tmp_path / "partial.json"
    partial.write_text('{"access_key": "a", "secret_key": "s"}')
    check = cloud_health.HealthCheck(StandIn({"credentials": str(partial)}, {}))
    assert check.walrus() == (False, f"{partial} has no endpoint")


def test_api_answer():
    error = "<Response><Errors><Error><Code>{}</Code><Message>m</Message></Error></Errors>"
    url, ca = "https://10.213.0.10:8773/", "/etc/cloud/clc/tls/ca.crt"
    assert cloud_health.api_answer(url, ca, 401, error.format("AuthFailure")) == (
        True,
        f"EC2 API {url} answers (AuthFailure to an unsigned request), TLS verified with {ca}",
    )
    assert cloud_health.api_answer(url, ca, 403, error.format("SignatureDoesNotMatch")) == (
        False,
        f"{url} answered HTTP 403 (SignatureDoesNotMatch), not EC2's AuthFailure",
    )
    not_found = cloud_health.api_answer(url, None, 404, "Not Found\n")
    assert not_found == (False, f"{url} answered HTTP 404 (Not Found), not EC2's AuthFailure")


def test_api_without_endpoint(tmp_path):
    config = tmp_path / "cloud.yml"
    config.write_text("cloud_name: test\n")
    check = cloud_health.HealthCheck(StandIn({"config": str(config)}, {}))
    assert check.api() == (False, f"{config} names no API endpoint (clc_api_enabled false?)")
