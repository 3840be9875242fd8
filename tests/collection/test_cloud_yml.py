"""The clc role's cloud.yml, rendered by Ansible from the example inventories (no host): a
cloud-in-a-box gets exactly the file it always had (tests/collection/data/cloud-ciab.yml:
update it only when cloud.yml is meant to change), an HA cloud (inventory/ha) the etcd
`state:` mapping and the API at the CLC's virtual address (the walrus role writes the Walrus
virtual address into the credentials cloud.yml copies). About 9 s."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import PROJECT

BIN = Path(sys.executable).parent
ROLES = PROJECT / "collections/ansible_collections/cloudctl/cloud/roles"
CLOUD_ID = "0f8c2e4a-6d1b-4c3e-9a7f-5b2d8e1c4a90"


def render(inventory: str, tmp_path: Path, walrus_endpoint: str, roles: Path = ROLES) -> dict:
    """cloud.yml of every clc host of the inventory, as the clc role writes it: a stand-in
    role with the common and clc defaults (below the inventory's variables), the clc vars
    (above them) and the clc template, as the clc role (which depends on common) has them."""
    role = tmp_path / "roles/render"
    for sub in ("defaults", "vars", "tasks", "templates"):
        (role / sub).mkdir(parents=True)
    defaults = {}
    for path in (roles / "common/defaults/main.yml", roles / "clc/defaults/main.yml"):
        defaults |= yaml.safe_load(path.read_text())
    (role / "defaults/main.yml").write_text(yaml.safe_dump(defaults, sort_keys=False))
    (role / "vars/main.yml").write_text((roles / "clc/vars/main.yml").read_text())
    (role / "templates/cloud.yml.j2").write_text((roles / "clc/templates/cloud.yml.j2").read_text())
    out = tmp_path / "out"
    out.mkdir()
    (role / "tasks/main.yml").write_text(yaml.safe_dump([{
        "name": "Render cloud.yml",
        "ansible.builtin.template": {
            "src": "cloud.yml.j2", "dest": f"{out}/{{{{ inventory_hostname }}}}.yml", "mode": "0600"},
        "vars": {
            "clc_cloud_id": CLOUD_ID, "clc_nodes": {},
            "clc_walrus": {"endpoint": walrus_endpoint, "access_key": "AK", "secret_key": "SK"},
        },
    }]))  # fmt: skip
    play = [{"hosts": "clc", "gather_facts": False, "roles": ["render"]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    env = {**os.environ, "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_ROLES_PATH": str(tmp_path / "roles")}  # fmt: skip
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", f"inventory/{inventory}", str(tmp_path / "play.yml"),
         "-e", "ansible_connection=local"],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {p.stem: p.read_text() for p in out.glob("*.yml")}


def test_a_cloud_in_a_box_gets_the_same_cloud_yml(tmp_path):
    [text] = render("ciab", tmp_path, "http://127.0.0.1:8333").values()
    assert text == (PROJECT / "tests/collection/data/cloud-ciab.yml").read_text()
    assert "state" not in yaml.safe_load(text)  # the TinyDB file in state_dir


def test_a_clc_pair_shares_its_state_in_etcd_and_is_reached_at_its_vip(tmp_path):
    rendered = render("ha", tmp_path, "http://192.0.2.101:8333")
    assert set(rendered) == {"cloud1", "cloud2"}
    configs = [yaml.safe_load(text) for text in rendered.values()]
    assert configs[0] == configs[1]  # either CLC serves the same cloud
    config = configs[0]
    tls = "/etc/cloud/etcd/tls"
    assert config["state"] == {
        "backend": "etcd",
        "endpoints": [f"https://192.0.2.{n}:2379" for n in (11, 12, 13)],
        "ca_file": f"{tls}/ca.crt", "cert_file": f"{tls}/etcd.crt", "key_file": f"{tls}/etcd.key",
        "prefix": f"/cloudctl/{CLOUD_ID}/",
    }  # fmt: skip
    assert config["state_dir"] == "/var/lib/cloud/clc/state"  # what `state migrate` reads
    assert config["api"]["endpoint"] == "https://192.0.2.100:8773/"
    # zone-a's CC pair: operations go to both CCs (cloudctl/cc_hosts.py)
    assert config["clusters"]["zone-a"]["ccs"] == ["cloud1", "cloud2"]
    assert config["clusters"]["zone-a"]["cc"] == "cloud1"
    assert config["clusters"]["zone-a"]["gateway"] == "10.20.0.1"
