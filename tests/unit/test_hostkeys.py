"""Host keys: known_hosts parsing, the trust rules (add, keep, refuse, replace) with a fake
scanner, console key blocks, and ssh's refusals turned into one line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from cloudctl import hostkeys
from cloudctl.config import Settings
from cloudctl.errors import ConfigError, HostKeyError, HostUnreachable, InputError, PlaybookError
from cloudctl.hostkeys import HostKey, KnownHosts, console_host_keys, parse_key, refusal
from cloudctl.runner import unreachable

PROJECT = Path(__file__).resolve().parents[2]


def new_key(tmp_path: Path, name: str, key_type: str = "ed25519") -> HostKey:
    """A real key (ssh-keygen), as a host would offer it."""
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", key_type, "-N", "", "-f", str(path)], check=True)
    fields = path.with_suffix(".pub").read_text().split()
    return HostKey(fields[0], fields[1])


@pytest.fixture
def keys(tmp_path) -> dict[str, HostKey]:
    return {n: new_key(tmp_path, n) for n in ("a", "b", "c")} | {
        "a-ecdsa": new_key(tmp_path, "a-ecdsa", "ecdsa")
    }


def inventory(tmp_path: Path, hosts: dict, common_args: bool = True) -> Settings:
    """An inventory directory as the examples are: hosts.yml + group_vars/all.yml."""
    inv = tmp_path / "inventory"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    group_vars = {"ansible_ssh_common_args": hostkeys.SSH_ARGS} if common_args else {}
    (inv / "group_vars" / "all.yml").write_text(yaml.safe_dump(group_vars))
    return Settings(project_dir=PROJECT, inventory=inv, home=tmp_path / "home")


HOSTS = {
    "web": {"ansible_host": "192.0.2.10"},
    "db": {"ansible_host": "192.0.2.11", "ansible_port": 2222},
    "box": {"ansible_connection": "local"},
}


class FakeScan:
    """What the hosts offer, by known_hosts name; records whom it was asked about."""

    def __init__(self, offered: dict[str, list[HostKey]]) -> None:
        self.offered = offered
        self.asked: list[str] = []

    def __call__(self, hosts):
        self.asked += [h.name for h in hosts]
        return {h.known_as: self.offered[h.known_as] for h in hosts if h.known_as in self.offered}


def test_fingerprint_is_the_one_ssh_keygen_prints(tmp_path, keys):
    out = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(tmp_path / "a.pub")],
        check=True,
        capture_output=True,
        text=True,
    )
    assert out.stdout.split()[1] == keys["a"].fingerprint
    assert keys["a"].fingerprint.startswith("SHA256:")


def test_parse_key_refuses_what_is_not_a_key_of_its_type(keys):
    a = keys["a"]
    assert parse_key(a.type, a.blob) == a
    assert parse_key("ssh-rsa", a.blob) is None  # the blob names another type
    assert parse_key(a.type, "not base64!") is None
    assert parse_key(a.type, "AAAA") is None


def test_known_hosts_reads_plain_port_and_hashed_entries_and_keeps_other_lines(tmp_path, keys):
    a, b, c = keys["a"], keys["b"], keys["c"]
    path = tmp_path / "known_hosts"
    hashed = tmp_path / "hashed"
    hashed.write_text(f"192.0.2.30 {c.type} {c.blob}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(hashed)], check=True, capture_output=True)
    lines = [
        "# a comment",
        f"192.0.2.10,web.example {a.type} {a.blob} comment",
        f"[192.0.2.11]:2222 {b.type} {b.blob}",
        f"@cert-authority *.example {c.type} {c.blob}",
        hashed.read_text().strip(),
    ]
    path.write_text("\n".join(lines) + "\n")
    known = KnownHosts(path)
    assert known.keys("192.0.2.10") == [a] and known.keys("web.example") == [a]
    assert known.keys("[192.0.2.11]:2222") == [b] and known.keys("192.0.2.11") == []
    assert known.keys("192.0.2.30") == [c]  # hashed
    assert known.keys("*.example") == []  # markers are never a host's key

    known.remove("192.0.2.10")  # the line keeps its other name
    known.remove("192.0.2.30")  # the hashed line goes
    known.add("192.0.2.40", [b])
    known.save()
    assert path.read_text().splitlines() == [
        "# a comment",
        f"web.example {a.type} {a.blob} comment",
        f"[192.0.2.11]:2222 {b.type} {b.blob}",
        f"@cert-authority *.example {c.type} {c.blob}",
        f"192.0.2.40 {b.type} {b.blob}",
    ]
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_ssh_hosts_reads_address_and_port_and_skips_local_hosts(tmp_path):
    settings = inventory(tmp_path, HOSTS)
    hosts = hostkeys.ssh_hosts(settings)
    assert [(h.name, h.known_as) for h in hosts] == [
        ("db", "[192.0.2.11]:2222"),
        ("web", "192.0.2.10"),
    ]
    assert hostkeys.known_hosts_path(settings) == settings.inventory / "known_hosts"
    with pytest.raises(InputError, match="^no host 'nope' in inventory "):
        hostkeys.ssh_hosts(settings, ["nope"])
    with pytest.raises(InputError, match="^host box is not reached over SSH"):
        hostkeys.ssh_hosts(settings, ["box"])


def test_an_inventory_whose_ssh_would_not_read_its_known_hosts_is_refused(tmp_path):
    settings = inventory(tmp_path, HOSTS, common_args=False)
    with pytest.raises(ConfigError, match=r"^host db: ssh would not read .*/known_hosts: set "):
        hostkeys.ssh_hosts(settings)


def test_trust_adds_then_keeps_then_refuses_a_changed_key_then_replaces_it(tmp_path, keys):
    settings = inventory(tmp_path, HOSTS)
    path = hostkeys.known_hosts_path(settings)
    a, b, c = keys["a"], keys["b"], keys["c"]

    rows = hostkeys.trust(settings, scan=FakeScan({"192.0.2.10": [a], "[192.0.2.11]:2222": [b]}))
    assert [(r.host, r.fingerprint, r.status) for r in rows] == [
        ("db", b.fingerprint, "added"),
        ("web", a.fingerprint, "added"),
    ]
    first = path.read_text()
    assert first == f"[192.0.2.11]:2222 {b.type} {b.blob}\n192.0.2.10 {a.type} {a.blob}\n"
    assert [(r.host, r.fingerprint) for r in hostkeys.known(settings)] == [
        ("db", b.fingerprint),
        ("web", a.fingerprint),
    ]

    # The same keys again (and a key of a new type, which is not taken on trust): no change.
    scan = FakeScan({"192.0.2.10": [a, keys["a-ecdsa"]], "[192.0.2.11]:2222": [b]})
    rows = hostkeys.trust(settings, scan=scan)
    assert {r.status for r in rows} == {"unchanged"} and path.read_text() == first

    # web now offers another key: refused, one line with both fingerprints, nothing written.
    changed = FakeScan({"192.0.2.10": [c], "[192.0.2.11]:2222": [b]})
    with pytest.raises(HostKeyError) as refused:
        hostkeys.trust(settings, scan=changed)
    assert str(refused.value) == (
        f"host key of web (192.0.2.10) changed: known {a.fingerprint}, offered {c.fingerprint}; "
        "check it, then cloudctl host trust --replace web"
    )
    assert path.read_text() == first

    rows = hostkeys.trust(settings, ["web"], replace=True, scan=changed)
    assert [(r.host, r.fingerprint, r.status) for r in rows] == [("web", c.fingerprint, "replaced")]
    assert changed.asked[-1:] == ["web"]
    assert (
        path.read_text() == f"[192.0.2.11]:2222 {b.type} {b.blob}\n192.0.2.10 {c.type} {c.blob}\n"
    )


def test_trust_writes_nothing_unless_every_host_can_be_trusted(tmp_path, keys):
    settings = inventory(tmp_path, HOSTS)
    path = hostkeys.known_hosts_path(settings)
    a, b, c = keys["a"], keys["b"], keys["c"]
    with pytest.raises(HostKeyError, match=r"^no SSH host key from db at 192\.0\.2\.11 port 2222"):
        hostkeys.trust(settings, scan=FakeScan({"192.0.2.10": [a]}))
    assert not path.exists()

    path.write_text(f"192.0.2.10 {a.type} {a.blob}\n[192.0.2.11]:2222 {b.type} {b.blob}\n")
    before = path.read_text()
    both_changed = FakeScan({"192.0.2.10": [c], "[192.0.2.11]:2222": [c]})
    with pytest.raises(PlaybookError) as refused:
        hostkeys.trust(settings, scan=both_changed)
    assert [f.host for f in refused.value.failures] == ["db", "web"]
    assert path.read_text() == before


def test_host_list_says_unknown(tmp_path):
    settings = inventory(tmp_path, HOSTS)
    rows = hostkeys.known(settings)
    assert [(r.host, r.address, r.fingerprint) for r in rows] == [
        ("db", "[192.0.2.11]:2222", "unknown"),
        ("web", "192.0.2.10", "unknown"),
    ]


def test_console_host_keys_reads_the_last_block(keys):
    a, b, c = keys["a"], keys["b"], keys["a-ecdsa"]
    console = (
        "[    0.000000] Linux version 6.1\r\n"
        "-----BEGIN SSH HOST KEY KEYS-----\r\n"
        f"{a.type} {a.blob} root@old\r\n"
        "-----END SSH HOST KEY KEYS-----\r\n"
        "reboot\r\n"
        "-----BEGIN SSH HOST KEY KEYS-----\r\n"
        f"{b.type} {b.blob} root@cloud-test\r\n"
        "a line that is no key\r\n"
        f"{c.type} {c.blob} root@cloud-test\r\n"
        "-----END SSH HOST KEY KEYS-----\r\n"
        "-----BEGIN SSH HOST KEY KEYS-----\r\n"  # cut short: not a block yet
        f"{a.type} {a.blob}\r\n"
    )
    assert console_host_keys(console) == [b, c]
    assert console_host_keys("no keys here\n") == []


# What ssh said to Ansible (a real run against a lab host), as the task result's msg.
CHANGED = (
    'Task failed: Data could not be sent to remote host "10.213.0.10". Make sure this host can '
    "be reached over ssh: @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\n"
    "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n"
    "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\n"
    "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\r\n"
    "The fingerprint for the ED25519 key sent by the remote host is\n"
    "SHA256:UYwIGXjGrrV0O1qJETbQrv9n0Gos/yE4nfc/8NSO4JY.\r\n"
    "Please contact your system administrator.\r\n"
    "Add correct host key in /srv/inv/known_hosts to get rid of this message.\r\n"
    "Offending ED25519 key in /srv/inv/known_hosts:1\r\n"
    "Host key for 10.213.0.10 has changed and you have requested strict checking.\r\n"
    "Host key verification failed."
)
UNKNOWN = (
    'Task failed: Data could not be sent to remote host "10.213.0.10". Make sure this host can '
    "be reached over ssh: No ED25519 host key is known for 10.213.0.10 and you have requested "
    "strict checking.\r\nHost key verification failed."
)


def test_ssh_refusals_become_one_line_naming_the_host():
    assert refusal("web", CHANGED) == (
        "host key of web does not match /srv/inv/known_hosts "
        "(cloudctl host trust --replace web after checking it)"
    )
    assert refusal("web", UNKNOWN) == "host key of web is unknown (cloudctl host trust web)"
    assert refusal("web", "ssh: connect to host 10.213.0.10 port 22: Connection refused") == ""

    error = unreachable("web", "Read the node facts", {"msg": CHANGED, "unreachable": True})
    assert isinstance(error, HostKeyError) and error.task == "Read the node facts"
    assert str(error) == refusal("web", CHANGED)
    in_loop = {"msg": "All items completed", "results": [{"item": "nc", "msg": UNKNOWN}]}
    assert str(unreachable("web", "t", in_loop)) == refusal("web", UNKNOWN)
    other = unreachable("web", "t", {"msg": "ssh: connect to host x port 22: No route to host"})
    assert type(other) is HostUnreachable


def test_a_hidden_ssh_error_is_explained_by_looking_at_the_key(tmp_path, keys, monkeypatch):
    """no_log hides ssh's message: the host key is looked at instead."""
    settings = inventory(tmp_path, HOSTS)
    path = hostkeys.known_hosts_path(settings)
    a, c = keys["a"], keys["c"]
    hidden = unreachable("web", "Copy cloud.yml from the CLC", {"censored": "hidden"})
    assert type(hidden) is HostUnreachable and hidden.message == hostkeys.HIDDEN
    other = HostUnreachable("db", "ssh: connect to host: Connection refused")

    [explained, same] = hostkeys.explain(settings, [hidden, other])
    assert str(explained) == "host key of web is unknown (cloudctl host trust web)"
    assert same is other

    path.write_text(f"192.0.2.10 {a.type} {a.blob}\n")
    monkeypatch.setattr(hostkeys, "keyscan", lambda hosts, timeout: {"192.0.2.10": [c]})
    [explained] = hostkeys.explain(settings, [hidden])
    assert isinstance(explained, HostKeyError) and str(explained) == (
        f"host key of web does not match {path} "
        "(cloudctl host trust --replace web after checking it)"
    )
    monkeypatch.setattr(hostkeys, "keyscan", lambda hosts, timeout: {"192.0.2.10": [a]})
    assert hostkeys.explain(settings, [hidden]) == [hidden]  # the key is fine: unreachable
