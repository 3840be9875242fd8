"""Where cloudctl finds the project, the inventory and its own home directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cloudctl.errors import ConfigError

ENV_PROJECT = "CLOUDCTL_PROJECT"
ENV_INVENTORY = "CLOUDCTL_INVENTORY"
ENV_HOME = "CLOUDCTL_HOME"
ENV_STATE = "CLOUDCTL_STATE"
DEFAULT_INVENTORY = Path("inventory") / "ciab"


@dataclass(frozen=True)
class Settings:
    project_dir: Path  # repository root: ansible.cfg, playbooks/, roles/, modules/
    inventory: Path
    home: Path  # run artifacts live under <home>/runs
    # The state store (cloudctl.state); default <home>/state.json. On a CLC the clc role's
    # profile sets CLOUDCTL_STATE.
    state_path: Path | None = None

    def __post_init__(self) -> None:
        if self.state_path is None:
            object.__setattr__(self, "state_path", self.home / "state.json")

    @property
    def ansible_cfg(self) -> Path:
        return self.project_dir / "ansible.cfg"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    def ensure_home(self) -> Path:
        """Create the home and runs directories (0700) and return the runs directory."""
        for path in (self.home, self.runs_dir):
            if not path.is_dir():
                try:
                    path.mkdir(mode=0o700, parents=True, exist_ok=True)
                except OSError as exc:
                    raise ConfigError(f"cannot create {path}: {exc.strerror}") from exc
                path.chmod(0o700)
        return self.runs_dir


def resolve_settings(
    inventory: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve settings from options, then environment, then defaults.

    Raises ConfigError with one clear line when the project or the inventory is missing.
    """
    env = os.environ if env is None else env
    project = _project_dir(env)

    if inventory is not None:
        inv = Path(inventory).expanduser().absolute()
    elif env.get(ENV_INVENTORY):
        inv = Path(env[ENV_INVENTORY]).expanduser().absolute()
    else:
        inv = project / DEFAULT_INVENTORY
    if not inv.exists():
        raise ConfigError(f"inventory {inv} does not exist (use --inventory or {ENV_INVENTORY})")

    if env.get(ENV_HOME):
        home = Path(env[ENV_HOME]).expanduser().absolute()
    else:
        home = Path.home() / ".cloudctl"
    state = Path(env[ENV_STATE]).expanduser().absolute() if env.get(ENV_STATE) else None
    return Settings(project_dir=project, inventory=inv, home=home, state_path=state)


def check_inventory(settings: Settings) -> list[str]:
    """The hosts of the inventory as Ansible reads it (ansible-inventory: no host is contacted).

    ConfigError with one line when Ansible cannot read the inventory or finds no host in it:
    ansible-playbook only warns about a source it cannot parse, then runs on no host and
    succeeds.
    """
    tool = Path(sys.executable).parent / "ansible-inventory"  # the venv's, as the runner's
    command = [str(tool) if tool.exists() else tool.name, "-i", str(settings.inventory), "--list"]
    env = {**os.environ, "ANSIBLE_CONFIG": str(settings.ansible_cfg), "ANSIBLE_NOCOLOR": "1"}
    try:
        proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    except OSError as exc:
        raise ConfigError(f"cannot run {command[0]}: {exc.strerror}") from None
    try:
        data = json.loads(proc.stdout) if proc.returncode == 0 else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        reason = _first_message(proc.stderr, "ERROR") or f"{tool.name} exited {proc.returncode}"
        raise ConfigError(f"inventory {settings.inventory} cannot be read: {reason}")
    hosts = set((data.get("_meta") or {}).get("hostvars") or {})
    for group in data.values():
        hosts.update((group or {}).get("hosts") or [])
    if not hosts:
        reason = _first_message(proc.stderr, "WARNING")
        raise ConfigError(
            f"inventory {settings.inventory} has no hosts" + (f" ({reason})" if reason else "")
        )
    return sorted(hosts)


def _first_message(stderr: str, level: str) -> str:
    """The text of Ansible's first "[LEVEL]: text" (or "LEVEL! text") line."""
    for line in stderr.splitlines():
        for prefix in (f"[{level}]:", f"{level}!"):
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
    return ""


def _project_dir(env: Mapping[str, str]) -> Path:
    if env.get(ENV_PROJECT):
        project = Path(env[ENV_PROJECT]).expanduser().absolute()
        origin = ENV_PROJECT
    else:
        # Editable install or source checkout: the package sits at the root of the project.
        project = Path(__file__).resolve().parent.parent
        origin = "the cloudctl package location"
    if not (project / "ansible.cfg").is_file() or not (project / "playbooks").is_dir():
        raise ConfigError(
            f"no cloudctl project (ansible.cfg and playbooks/) at {project} "
            f"(from {origin}); set {ENV_PROJECT} to the project directory"
        )
    return project
