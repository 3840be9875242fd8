"""bench/'s pure parts: goals of a row, the tables of run_all, the floor's domain XML, and
scripts/build-distro-image.py's guest files (the measurements run against the labs)."""

from __future__ import annotations

import sys

from tests.conftest import PROJECT, load_file

sys.path.insert(0, str(PROJECT / "bench"))  # bench/'s modules import each other by name

import boot_floor
import run_all
from common import Row

XML = """<domain type="qemu">
  <name>i-0123abcd</name>
  <devices>
    <disk type="file" device="disk">
      <source file="/var/lib/cloud/nc/instances/i-0123abcd/disk.qcow2" />
    </disk>
    <interface type="bridge"><mac address="d0:0d:01:02:03:04" /></interface>
    <serial type="file">
      <source path="/var/lib/cloud/nc/instances/i-0123abcd/console.log" append="on" />
    </serial>
  </devices>
</domain>
"""


def test_goal_ceiling_and_floor():
    ceiling = Row("run", 3.0, "s", [("baseline", 2.0)], goal=1.5)
    assert ceiling.goal_text() == "<= 1.5 x baseline"
    assert ceiling.met() is True
    assert Row("run", 3.1, "s", [("baseline", 2.0)], goal=1.5).met() is False
    floor = Row("fetch", 70.0, "MiB/s", [("boto3", 100.0)], goal=0.8, at_least=True)
    assert floor.goal_text() == ">= 0.8 x boto3"
    assert floor.met() is False
    assert Row("plain", 1.0, "s", [("baseline", 1.0)]).met() is None


def test_tables_show_each_goal_beside_its_ratio():
    rows = [
        Row("bare play", 2.0, "s", [("baseline", 2.0)]),
        Row("attach", 2.4, "s", [("baseline", 2.0)], goal=1.3),
        Row("detach", 2.6, "s", [("baseline", 2.0)], goal=1.2),
    ]
    lines = run_all.table(rows).splitlines()
    assert lines[0].endswith("| goal | |")
    assert lines[2] == "| bare play | 2.00 s | 1.0 x baseline |  |  |"
    assert lines[3] == "| attach | 2.40 s | 1.2 x baseline | <= 1.3 x baseline | met |"
    assert lines[4].endswith("| <= 1.2 x baseline | **not met** |")
    goals = run_all.goals_table(rows).splitlines()
    assert len(goals) == 4  # header, rule, the two goals
    assert "| 1.30 x baseline | <= 1.2 x baseline | **not met** |" in goals[3]
    assert run_all.table(rows[:1]).splitlines()[0] == "| measurement | value | ratio |"


def test_floor_xml_changes_only_name_disk_and_console():
    xml = boot_floor.floor_xml(XML, "floor-i-0123abcd", "/f/disk.qcow2", "/f/console.log")
    assert "<name>floor-i-0123abcd</name>" in xml
    assert '<source file="/f/disk.qcow2" />' in xml
    assert '<source path="/f/console.log" append="on" />' in xml
    assert '<mac address="d0:0d:01:02:03:04" />' in xml
    assert "instances/i-0123abcd" not in xml


def test_distro_image_guest_files(tmp_path):
    build = load_file("build_distro_image", PROJECT / "scripts" / "build-distro-image.py")
    for d in ("boot", "etc/cloud/cloud.cfg.d", "etc/network", "etc/ssh"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "boot/vmlinuz-6.1.0-10-amd64").write_text("")
    (tmp_path / "etc/ssh/ssh_host_ed25519_key").write_text("build host's key")
    build.configure(tmp_path, "0f0e")
    conf = (tmp_path / "boot/extlinux/extlinux.conf").read_text()
    assert "LINUX /boot/vmlinuz-6.1.0-10-amd64" in conf
    assert "INITRD /boot/initrd.img-6.1.0-10-amd64" in conf
    assert "APPEND root=UUID=0f0e ro console=ttyS0" in conf
    assert (tmp_path / "etc/fstab").read_text().startswith("UUID=0f0e / ext4")
    assert (
        "datasource_list: [NoCloud, None]"
        in (tmp_path / "etc/cloud/cloud.cfg.d/90-cloudctl.cfg").read_text()
    )
    assert not list((tmp_path / "etc/ssh").glob("ssh_host_*"))
