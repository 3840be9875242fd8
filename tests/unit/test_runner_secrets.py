"""Secrets in extra vars: they reach the play, never the kept run directory (real plays on
localhost, connection local)."""

from __future__ import annotations

import json
import stat
import tempfile
from pathlib import Path

import pytest

from cloudctl.config import Settings
from cloudctl.runner import REDACTED, redact_extravars, run_playbook

CHAP = "Zq8vN2kP4xR7tW1y"
SIGNATURE = "4f1c2a9e8b7d6c5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e"
URL = (
    "http://192.0.2.10:8773/snapshots/snap-0a1b2c3d?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    f"&X-Amz-Credential=AKIAEXAMPLE%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
    f"&X-Amz-Expires=3600&X-Amz-Signature={SIGNATURE}"
)
EXTRAVARS = {
    "cloud_volume": {"name": "vol-0a1b2c3d", "size_gb": 1, "chap_secret": CHAP, "source_url": URL},
    "cloud_part_urls": [URL],
}


@pytest.fixture
def settings(settings: Settings, tmp_path: Path, monkeypatch) -> Settings:
    """The conftest's settings, with $TMPDIR (the private extra-vars file) in tmp_path."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return settings


def files_holding(root: Path, *needles: str) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {n[:8]}" for n in needles if n.encode() in data]
    return found


def test_redacted_copy_keeps_what_is_not_secret():
    redacted = redact_extravars(EXTRAVARS)
    volume = redacted["cloud_volume"]
    assert volume["chap_secret"] == REDACTED
    assert volume["name"] == "vol-0a1b2c3d" and volume["size_gb"] == 1
    assert volume["source_url"] == f"http://192.0.2.10:8773/snapshots/snap-0a1b2c3d?{REDACTED}"
    assert redacted["cloud_part_urls"] == [volume["source_url"]]
    assert redact_extravars({"url": "http://u:pw@h/x"}) == {"url": "http://h/x"}
    assert redact_extravars({"secret_key": "", "password": None}) == {
        "secret_key": "",
        "password": None,
    }
    assert EXTRAVARS["cloud_volume"]["chap_secret"] == CHAP  # the input is not changed
    user_data = {"cloud_user_data": {"i-0a1b2c3d": "#!/bin/sh\necho hi\n"}}
    assert redact_extravars(user_data) == {"cloud_user_data": REDACTED}


@pytest.mark.parametrize("check", [False, True])
def test_secret_extravars_reach_the_play_but_not_the_run_dir(settings, tmp_path, check):
    play = tmp_path / "play.yml"
    play.write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - name: Use the secrets\n"
        "      ansible.builtin.assert:\n"
        "        that:\n"
        f"          - cloud_volume.chap_secret == '{CHAP}'\n"
        f"          - cloud_part_urls[0] is search('{SIGNATURE}')\n"
        "        quiet: true\n"
    )
    result = run_playbook(settings, play, extravars=EXTRAVARS, check=check, operation="test")
    assert result.ok, result.failures or result.error
    assert files_holding(settings.home, CHAP, SIGNATURE) == []
    assert not (result.run_dir / "env" / "extravars").exists()
    copy = result.run_dir / "extravars.json"
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert json.loads(copy.read_text()) == redact_extravars(EXTRAVARS)
    # The private file ansible-playbook read is gone once the play has ended.
    assert list(Path(tempfile.gettempdir()).iterdir()) == []
    cmdline = (result.run_dir / "env" / "cmdline").read_text()
    assert ("--check --diff" in cmdline) == check


def test_the_private_file_is_gone_while_the_play_runs(settings, tmp_path):
    """ansible-playbook has read it before the play starts: a cloudctl killed during the
    play leaves no secret behind."""
    scratch = tempfile.gettempdir()
    play = tmp_path / "play.yml"
    play.write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - name: Look for the file\n"
        "      ansible.builtin.find:\n"
        f"        paths: {scratch}\n"
        "        patterns: cloudctl-vars-*\n"
        "      register: found\n"
        "    - name: The vars are there, the file is not\n"
        "      ansible.builtin.assert:\n"
        "        that:\n"
        f"          - cloud_volume.chap_secret == '{CHAP}'\n"
        "          - found.matched == 0\n"
    )
    result = run_playbook(settings, play, extravars=EXTRAVARS, operation="test")
    assert result.ok, result.failures or result.error


def test_the_private_file_goes_when_the_play_cannot_start(settings, tmp_path):
    play = tmp_path / "broken.yml"
    play.write_text("- hosts: all\n  tasks: [\n")
    result = run_playbook(settings, play, extravars=EXTRAVARS, operation="test")
    assert not result.ok
    assert list(Path(tempfile.gettempdir()).iterdir()) == []
    assert files_holding(settings.home, CHAP, SIGNATURE) == []
