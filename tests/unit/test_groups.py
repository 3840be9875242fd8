"""Security group rules: parsing and the effective rules of an instance (cloudctl/groups.py)."""

from __future__ import annotations

import pytest

from cloudctl.errors import InputError
from cloudctl.groups import effective_rules, parse_rule


def test_parse_tcp_port_and_range():
    assert parse_rule("tcp", port=22, cidr="0.0.0.0/0") == {
        "protocol": "tcp", "from_port": 22, "to_port": 22, "cidr": "0.0.0.0/0"}  # fmt: skip
    rule = parse_rule("UDP", port_range="1000-2000", source_group="web")
    assert rule == {"protocol": "udp", "from_port": 1000, "to_port": 2000, "source_group": "web"}


def test_parse_icmp_defaults_to_any_type():
    assert parse_rule("icmp", cidr="10.0.0.0/8")["icmp_type"] == -1
    assert parse_rule("icmp", icmp_type=8, cidr="10.0.0.0/8")["icmp_type"] == 8


@pytest.mark.parametrize("kwargs, words", [
    ({"protocol": "gre", "cidr": "0.0.0.0/0"}, "protocol"),
    ({"protocol": "tcp", "cidr": "0.0.0.0/0"}, "--port"),
    ({"protocol": "tcp", "port": 70000, "cidr": "0.0.0.0/0"}, "bad port"),
    ({"protocol": "tcp", "port_range": "90-80", "cidr": "0.0.0.0/0"}, "higher"),
    ({"protocol": "tcp", "port_range": "a-b", "cidr": "0.0.0.0/0"}, "A-B"),
    ({"protocol": "tcp", "port": 22, "cidr": "10.0.0.300/8"}, "CIDR"),
    ({"protocol": "tcp", "port": 22, "cidr": "10.0.0.1"}, "CIDR"),
    ({"protocol": "tcp", "port": 22}, "exactly one"),
    ({"protocol": "tcp", "port": 22, "cidr": "0.0.0.0/0", "source_group": "g"}, "exactly one"),
    ({"protocol": "icmp", "port": 22, "cidr": "0.0.0.0/0"}, "icmp"),
    ({"protocol": "all", "port": 22, "cidr": "0.0.0.0/0"}, "no ports"),
])  # fmt: skip
def test_bad_rules_are_one_clear_line(kwargs, words):
    with pytest.raises(InputError, match=words):
        parse_rule(**kwargs)


def test_effective_rules_expand_source_groups_to_live_members():
    groups = {
        "sg-1": {"rules": [{"protocol": "tcp", "from_port": 22, "to_port": 22,
                            "source_group": "sg-2"}]},
        "sg-2": {"rules": [{"protocol": "icmp", "icmp_type": -1, "icmp_code": -1,
                            "cidr": "0.0.0.0/0"}]},
    }  # fmt: skip
    a = {"id": "i-a", "groups": ["sg-1"], "state": "running", "private_ip": "10.0.0.2"}
    b = {"id": "i-b", "groups": ["sg-2"], "state": "running", "private_ip": "10.0.0.3"}
    c = {"id": "i-c", "groups": ["sg-2"], "state": "terminated", "private_ip": "10.0.0.4"}
    rules = effective_rules(a, groups, [a, b, c])
    assert rules == [{"protocol": "tcp", "from_port": 22, "to_port": 22, "cidr": "10.0.0.3/32"}]
    assert effective_rules(b, groups, [a, b, c])[0]["cidr"] == "0.0.0.0/0"
