"""Key pairs: the service over a real state file and the CLI (CliRunner), no fakes."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import stat
import subprocess
from pathlib import Path

import paramiko
import pytest
import yaml
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from cloudctl.cli.main import cli
from cloudctl.config import resolve_settings
from cloudctl.errors import InputError
from cloudctl.keypairs import TABLE, KeyPairNotFound, KeyPairs
from cloudctl.state import StateStore
from tests.unit.helpers import init_state


@pytest.fixture
def env(tmp_path, monkeypatch) -> Path:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("all: {}\n")
    state = tmp_path / "state" / "cloud.json"
    monkeypatch.setenv("CLOUDCTL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CLOUDCTL_INVENTORY", str(inventory))
    monkeypatch.setenv("CLOUDCTL_STATE", str(state))
    monkeypatch.delenv("CLOUDCTL_PROJECT", raising=False)
    return init_state(state)


def run(*args: str):
    return CliRunner().invoke(cli, list(args), prog_name="cloudctl")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


def public_line(key) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


@pytest.fixture(scope="module")
def keys() -> dict[str, str]:
    """Public key lines of each kind the tests import."""
    return {
        "ed25519": public_line(ed25519.Ed25519PrivateKey.generate()) + " alice@laptop",
        "rsa2048": public_line(rsa.generate_private_key(65537, 2048)),
        "rsa1024": public_line(rsa.generate_private_key(65537, 1024)),
        "p256": public_line(ec.generate_private_key(ec.SECP256R1())),
        "p384": public_line(ec.generate_private_key(ec.SECP384R1())),
    }


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def ssh_keygen_public(private_key_file: Path) -> str:
    """The public key of a private key file as OpenSSH derives it (ssh-keygen -y)."""
    out = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(private_key_file)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return " ".join(out.split()[:2])


# --- service --------------------------------------------------------------------------------


def test_create_stores_the_public_key_only(tmp_path):
    store = StateStore(tmp_path / "state.json")
    record, private = KeyPairs(store).create("web")
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    key = paramiko.Ed25519Key.from_private_key_file(str(write(tmp_path, "k", private)))
    assert record["public_key"] == f"{key.get_name()} {key.get_base64()}"
    # paramiko prints SHA256 fingerprints as OpenSSH does.
    assert record["fingerprint"] == key.fingerprint
    assert (record["account"], record["user"], record["id"]) == ("admin", "admin", "admin:web")
    assert record["type"] == "ssh-ed25519" and record["created"]
    raw = (tmp_path / "state.json").read_text()
    body = "".join(private.splitlines()[1:-1])
    assert "PRIVATE" not in raw and body not in raw and body[:40] not in raw
    assert store.get(TABLE, "admin:web") == record


def test_fingerprint_matches_ssh_keygen(tmp_path, keys):
    if shutil.which("ssh-keygen") is None:
        pytest.fail("ssh-keygen is missing (openssh-client)")
    store = StateStore(tmp_path / "state.json")
    record = KeyPairs(store).import_("rsa", keys["rsa2048"])
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(write(tmp_path, "pub", keys["rsa2048"]))],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert out.split()[:2] == ["2048", record["fingerprint"]]


def test_import_keeps_the_comment_and_types(tmp_path, keys):
    service = KeyPairs(StateStore(tmp_path / "state.json"))
    assert service.import_("a", keys["ed25519"])["public_key"] == keys["ed25519"]
    assert service.import_("b", "\n" + keys["rsa2048"] + "\n")["type"] == "ssh-rsa"
    assert service.import_("c", keys["p256"])["type"] == "ecdsa-sha2-nistp256"
    assert [r["name"] for r in service.list()] == ["a", "b", "c"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("ssh-ed25519", "not an OpenSSH public key line"),
        ("ssh-ed25519 !!!notbase64", "not valid base64"),
        ("ssh-dss AAAAB3NzaC1kc3M=", "key type 'ssh-dss' not supported"),
        ("-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----", "3 lines"),
    ],
)
def test_import_refuses_malformed_keys(tmp_path, text, message):
    service = KeyPairs(StateStore(tmp_path / "state.json"))
    with pytest.raises(InputError, match=message):
        service.import_("k", text, source="k.pub")
    assert not (tmp_path / "state.json").exists()


def test_import_refuses_weak_truncated_and_mislabelled_keys(tmp_path, keys):
    service = KeyPairs(StateStore(tmp_path / "state.json"))
    with pytest.raises(InputError, match="RSA key of 1024 bits is too weak"):
        service.import_("k", keys["rsa1024"])
    with pytest.raises(InputError, match="key type 'ecdsa-sha2-nistp384' not supported"):
        service.import_("k", keys["p384"])
    kind, b64 = keys["ed25519"].split()[:2]
    truncated = base64.b64encode(base64.b64decode(b64)[:-8]).decode()
    with pytest.raises(InputError, match="truncated or malformed"):
        service.import_("k", f"{kind} {truncated}")
    # An RSA blob labelled ed25519.
    with pytest.raises(InputError, match="truncated or malformed"):
        service.import_("k", f"ssh-ed25519 {keys['rsa2048'].split()[1]}")
    assert service.list() == []


@pytest.mark.parametrize("name", ["", " lead", "trail ", "tab\tname", "é", "x" * 256])
def test_bad_names(tmp_path, name):
    with pytest.raises(InputError, match="bad key pair name"):
        KeyPairs(StateStore(tmp_path / "state.json")).create(name)


def test_good_names(tmp_path):
    service = KeyPairs(StateStore(tmp_path / "state.json"))
    for name in ("a", "my key", "x" * 255, "~!@#$%^&*()"):
        service.create(name)
    assert len(service.list()) == 4


def test_duplicate_delete_and_missing(tmp_path, keys):
    path = tmp_path / "state.json"
    service = KeyPairs(StateStore(path))
    service.create("k")
    before = digest(path)
    with pytest.raises(InputError, match="key pair 'k' already exists"):
        service.create("k")
    with pytest.raises(InputError, match="key pair 'k' already exists"):
        service.import_("k", keys["ed25519"])
    assert digest(path) == before
    with pytest.raises(KeyPairNotFound, match="key pair 'x' does not exist"):
        service.show("x")
    with pytest.raises(KeyPairNotFound, match="key pair 'x' does not exist"):
        service.delete("x")
    assert digest(path) == before
    assert service.delete("k")["name"] == "k"
    assert service.list() == []


def test_a_failing_delivery_stores_nothing(tmp_path):
    path = tmp_path / "state.json"
    service = KeyPairs(StateStore(path))

    def deliver(private: str) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError):
        service.create("k", deliver=deliver)
    assert service.list() == []


# --- CLI ------------------------------------------------------------------------------------


def test_cli_create_prints_a_private_key_matching_the_stored_public_key(env, tmp_path):
    result = run("keypair", "create", "web")
    assert result.exit_code == 0, result.output
    private = result.stdout
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert private.endswith("-----END OPENSSH PRIVATE KEY-----\n")
    key_file = tmp_path / "web.key"
    key_file.write_text(private)
    key_file.chmod(0o600)
    stored = json.loads(env.read_text())
    [record] = stored[TABLE].values()
    assert record["public_key"] == ssh_keygen_public(key_file)
    key = paramiko.Ed25519Key.from_private_key_file(str(key_file))
    assert record["public_key"] == f"ssh-ed25519 {key.get_base64()}"
    body = "".join(private.splitlines()[1:-1])
    raw = env.read_text()
    assert "PRIVATE" not in raw and body[:40] not in raw and body[-40:] not in raw


def test_cli_create_to_a_file(env, tmp_path):
    target = tmp_path / "out" / "web.pem"
    target.parent.mkdir()
    result = run("keypair", "create", "web", "--output-file", str(target))
    assert result.exit_code == 0, result.output
    assert "PRIVATE" not in result.output and str(target) in result.stdout
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    record = json.loads(run("keypair", "show", "web", "-o", "json").stdout)[0]
    assert record["public_key"] == ssh_keygen_public(target)

    before, content = digest(env), target.read_bytes()
    result = run("keypair", "create", "other", "--output-file", str(target))
    assert result.exit_code == 2
    assert result.stderr == f"Error: {target} already exists: not overwriting it\n"
    assert target.read_bytes() == content and digest(env) == before

    # A duplicate name leaves no key file behind.
    fresh = tmp_path / "out" / "dup.pem"
    result = run("keypair", "create", "web", "--output-file", str(fresh))
    assert result.exit_code == 2 and "key pair 'web' already exists" in result.stderr
    assert not fresh.exists() and digest(env) == before


def test_cli_import_list_show(env, tmp_path, keys):
    pub = write(tmp_path, "id.pub", keys["ed25519"] + "\n")
    result = run("keypair", "import", "alice", "--public-key-file", str(pub))
    assert result.exit_code == 0, result.output
    assert run("keypair", "create", "bob").exit_code == 0

    table = run("keypair", "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "TYPE", "FINGERPRINT", "CREATED", "ACCOUNT"]
    assert [line.split()[0] for line in table[1:]] == ["alice", "bob"]
    rows = json.loads(run("-o", "json", "keypair", "list").stdout)
    assert [r["name"] for r in rows] == ["alice", "bob"]
    assert set(rows[0]) == {"name", "type", "fingerprint", "created", "account"}
    [shown] = yaml.safe_load(run("keypair", "show", "alice", "-o", "yaml").stdout)
    assert shown["public_key"] == keys["ed25519"]
    assert (shown["account"], shown["user"]) == ("admin", "admin")


@pytest.mark.parametrize(
    "key, message",
    [
        ("garbage", "not an OpenSSH public key line"),
        ("ssh-ed25519 AAAA*AAA", "not valid base64"),
        ("rsa1024", "RSA key of 1024 bits is too weak"),
        ("p384", "key type 'ecdsa-sha2-nistp384' not supported"),
        ("truncated", "truncated or malformed"),
    ],
)
def test_cli_import_refuses_bad_keys(env, tmp_path, keys, key, message):
    assert run("keypair", "create", "existing").exit_code == 0
    before = digest(env)
    if key == "truncated":
        text = keys["rsa2048"][:-20]
    else:
        text = keys.get(key, key)
    pub = write(tmp_path, "bad.pub", text)
    result = run("keypair", "import", "k", "--public-key-file", str(pub))
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"Error: {pub}: ") and message in line
    assert "Traceback" not in result.output
    assert digest(env) == before


def test_cli_import_missing_file_and_binary(env, tmp_path):
    before = digest(env)
    result = run("keypair", "import", "k", "--public-key-file", str(tmp_path / "nope.pub"))
    assert result.exit_code == 2 and "cannot read" in result.stderr
    binary = tmp_path / "bin.pub"
    binary.write_bytes(b"\xff\xfe\x00")
    result = run("keypair", "import", "k", "--public-key-file", str(binary))
    assert result.exit_code == 2 and "not text" in result.stderr
    assert digest(env) == before


def test_cli_duplicates_and_unknown_names_leave_the_state_alone(env, tmp_path, keys):
    assert run("keypair", "create", "k").exit_code == 0
    before = digest(env)
    pub = write(tmp_path, "id.pub", keys["p256"])
    for args in (
        ("keypair", "create", "k"),
        ("keypair", "import", "k", "--public-key-file", str(pub)),
        ("keypair", "create", " k"),
        ("keypair", "show", "missing"),
        ("keypair", "delete", "missing"),
    ):
        result = run(*args)
        assert result.exit_code != 0, args
        assert len(result.stderr.splitlines()) == 1 or args[1] == "delete", result.stderr
        assert "Traceback" not in result.output
        assert digest(env) == before, args
    assert run("keypair", "create", "k").stderr == "Error: key pair 'k' already exists\n"
    assert run("keypair", "show", "missing").stderr == (
        "Error: key pair 'missing' does not exist\n"
    )


def test_cli_delete_several_with_one_missing(env):
    for name in ("a", "b", "c"):
        assert run("keypair", "create", name).exit_code == 0
    result = run("keypair", "delete", "a", "missing", "c")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == ["key pair 'a' deleted", "key pair 'c' deleted"]
    assert result.stderr.splitlines() == [
        "Error: key pair 'missing' does not exist",
        "Error: 1 of 3 key pairs could not be deleted",
    ]
    assert [r["name"] for r in json.loads(run("keypair", "list", "-o", "json").stdout)] == ["b"]
    result = run("keypair", "delete", "b")
    assert result.exit_code == 0 and run("keypair", "list", "-o", "json").stdout.strip() == "[]"


def test_cli_refuses_a_missing_or_foreign_state(env, tmp_path, monkeypatch):
    """A missing state is never an empty cloud, nor is another cloud's state this one."""
    monkeypatch.delenv("CLOUDCTL_STATE")  # <home>/state.json, which does not exist
    missing = tmp_path / "home" / "state.json"
    result = run("keypair", "create", "k")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (
        f"Error: no state at {missing}: `cloudctl deploy` creates it; `cloudctl state init` "
        "starts an empty one for a deployed cloud whose state is lost\n"
    )
    assert not missing.exists()

    config = write(tmp_path, "cloud.yml", yaml.safe_dump({
        "cloud_name": "b", "cloud_id": "cloud-bbbbbbbbbbbbbbbb", "clusters": {},
        "walrus": {"endpoint": "http://127.0.0.1:1", "access_key": "a", "secret_key": "s"}}))  # fmt: skip
    monkeypatch.setenv("CLOUDCTL_CONFIG", str(config))
    monkeypatch.setenv("CLOUDCTL_STATE", str(env))  # the state of the test cloud
    before = env.read_bytes()
    for args in (["keypair", "create", "k"], ["keypair", "list"], ["state", "show"]):
        result = run(*args)
        assert result.exit_code == 1 and result.stderr == (
            f"Error: the state {env} is of cloud cloud-0123456789abcdef, not of this cloud "
            "cloud-bbbbbbbbbbbbbbbb\n"
        ), args
    assert env.read_bytes() == before


def test_settings_state_path(tmp_path):
    inventory = write(tmp_path, "inv.yml", "all: {}\n")
    base = {"CLOUDCTL_INVENTORY": str(inventory), "CLOUDCTL_HOME": str(tmp_path / "h")}
    assert resolve_settings(env=base).state_path == tmp_path / "h" / "state.json"
    state = tmp_path / "db" / "cloud.json"
    settings = resolve_settings(env={**base, "CLOUDCTL_STATE": str(state)})
    assert settings.state_path == state and settings.home == tmp_path / "h"
