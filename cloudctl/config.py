"""Where cloudctl finds the project, the inventory and its own home directory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from cloudctl.errors import ConfigError, InputError

ENV_PROJECT = "CLOUDCTL_PROJECT"
ENV_CLOUD = "CLOUDCTL_CLOUD"
ENV_CLOUDS = "CLOUDCTL_CLOUDS"
ENV_INVENTORY = "CLOUDCTL_INVENTORY"
ENV_HOME = "CLOUDCTL_HOME"
ENV_STATE = "CLOUDCTL_STATE"
# The CLC's own files (the clc role): on a CLC, cloudctl works on the cloud it controls.
CLC_CONFIG = Path("/etc/cloud/cloud.yml")
CLC_INVENTORY = Path("/etc/cloud/clc/inventory")
STATE_FILE = "state.json"
# The copy of the CLC's cloud.yml that cloudctl fetches into its home (cloudctl.cloudconfig).
FETCHED_CONFIG = "cloud.yml"
# The Ansible side of the product: one collection, inside the project's collections path.
COLLECTION = "cloudctl.cloud"
COLLECTION_DIR = Path("collections/ansible_collections/cloudctl/cloud")


@dataclass(frozen=True)
class EtcdState:
    """The cloud's state in etcd (a CLC pair shares it): the members and the key prefix."""

    endpoints: tuple[str, ...]  # https://HOST:2379, ...
    prefix: str  # /cloudctl/<cloud id>/
    ca_file: str | None = None  # the CA that signed the members' certificates
    cert_file: str | None = None  # the client certificate and its key
    key_file: str | None = None

    def __str__(self) -> str:
        return f"etcd prefix {self.prefix} at {', '.join(self.endpoints)}"

    def mapping(self) -> dict[str, Any]:
        """The `state:` mapping of cloud.yml / the clouds file that parse_state reads back."""
        tls = {key: getattr(self, key) for key in TLS_FILES if getattr(self, key)}
        return {"backend": "etcd", "endpoints": list(self.endpoints), "prefix": self.prefix} | tls


TLS_FILES = ("ca_file", "cert_file", "key_file")
_ENDPOINT = re.compile(r"^https?://[^/\s]+:[0-9]+/?$")


def parse_state(spec: Any, where: str, cloud_id: str = "") -> EtcdState | None:
    """The `state:` mapping of cloud.yml or of a clouds file entry: an EtcdState, or None
    for the TinyDB file (no mapping, or backend tinydb). ConfigError names what is wrong.
    The prefix defaults to /cloudctl/<cloud id>/ when the cloud id is known."""
    if spec is None or (isinstance(spec, Mapping) and spec.get("backend", "tinydb") == "tinydb"):
        return None
    if not isinstance(spec, Mapping) or spec.get("backend") != "etcd":
        raise ConfigError(f"{where}: state must be a mapping with backend tinydb or etcd")
    endpoints = spec.get("endpoints")
    if isinstance(endpoints, str):
        endpoints = endpoints.split(",")
    if not endpoints or not all(isinstance(e, str) and _ENDPOINT.match(e) for e in endpoints):
        raise ConfigError(
            f"{where}: state.endpoints must list etcd client URLs (http(s)://HOST:PORT), "
            f"not {endpoints!r}"
        )
    prefix = str(spec.get("prefix") or (f"/cloudctl/{cloud_id}/" if cloud_id else ""))
    if not prefix.startswith("/") or not prefix.endswith("/"):
        raise ConfigError(f"{where}: state.prefix must start and end with '/', not {prefix!r}")
    files = {key: str(spec[key]) if spec.get(key) else None for key in TLS_FILES}
    if bool(files["cert_file"]) != bool(files["key_file"]):
        raise ConfigError(f"{where}: state.cert_file and state.key_file go together")
    return EtcdState(tuple(e.rstrip("/") for e in endpoints), prefix, **files)


@dataclass(frozen=True)
class Settings:
    project_dir: Path  # repository root: ansible.cfg, cloudctl/, the collection in collections/
    inventory: Path
    home: Path  # run artifacts live under <home>/runs
    # The state store (cloudctl.state); default <home>/state.json, on a CLC the state
    # directory its cloud.yml names.
    state_path: Path | None = None
    cloud: str = ""  # the name of the cloud in the clouds file ("" = none)
    # The state in etcd instead (a CLC pair): cloud.yml's or the clouds file's `state:`
    # mapping. state_path then names the file `cloudctl state migrate` copies from.
    state_etcd: EtcdState | None = None

    def __post_init__(self) -> None:
        if self.state_path is None:
            object.__setattr__(self, "state_path", self.home / STATE_FILE)

    @property
    def state_location(self) -> str:
        """Where the state is, for messages: the file, or the etcd prefix and members."""
        return str(self.state_etcd or self.state_path)

    @property
    def ansible_cfg(self) -> Path:
        return self.project_dir / "ansible.cfg"

    @property
    def collection_dir(self) -> Path:
        return self.project_dir / COLLECTION_DIR

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


# --- named clouds ------------------------------------------------------------------------


@dataclass(frozen=True)
class NamedCloud:
    """One cloud of the clouds file: where its inventory, home and state are."""

    name: str
    inventory: Path
    home: Path
    state: Path | EtcdState | None = None  # default <home>/state.json


def clouds_file(env: Mapping[str, str] | None = None) -> Path:
    """$CLOUDCTL_CLOUDS, else $XDG_CONFIG_HOME/cloudctl/clouds.yaml (~/.config by default)."""
    env = os.environ if env is None else env
    if env.get(ENV_CLOUDS):
        return Path(env[ENV_CLOUDS]).expanduser().absolute()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "cloudctl" / "clouds.yaml"


def load_clouds(path: Path) -> tuple[str, dict[str, NamedCloud]]:
    """(default cloud name, clouds by name) of a clouds file; ("", {}) when there is none."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        return "", {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the clouds file {path}: {exc}") from None
    try:
        clouds = {
            str(name): NamedCloud(
                name=str(name),
                inventory=Path(spec["inventory"]),
                home=Path(spec["home"]),
                state=_named_state(spec.get("state"), f"clouds file {path}, cloud {name}"),
            )
            for name, spec in (data.get("clouds") or {}).items()
        }
        return str(data.get("default") or ""), clouds
    except (AttributeError, KeyError, TypeError) as exc:
        raise ConfigError(f"clouds file {path} is malformed: {exc!r}") from None


def _named_state(spec: Any, where: str) -> Path | EtcdState | None:
    """A clouds file entry's state: a file path, or an etcd `state:` mapping."""
    if not spec:
        return None
    if isinstance(spec, str):
        return Path(spec)
    return parse_state(spec, where)


def save_clouds(path: Path, default: str, clouds: Mapping[str, NamedCloud]) -> None:
    """Write the clouds file (0600), atomically."""
    data = {
        "default": default or None,
        "clouds": {
            c.name: {"inventory": str(c.inventory), "home": str(c.home)}
            | ({"state": _state_entry(c.state)} if c.state else {})
            for c in clouds.values()
        },
    }
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("# cloudctl's named clouds: `cloudctl cloud add|list|remove` edit this file.\n")
        yaml.safe_dump(data, fh, sort_keys=False)
    os.replace(tmp, path)


def _state_entry(state: Path | EtcdState) -> str | dict[str, Any]:
    return state.mapping() if isinstance(state, EtcdState) else str(state)


_CLOUD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def add_cloud(path: Path, cloud: NamedCloud, make_default: bool = False) -> bool:
    """Name a cloud in the clouds file (the first one named becomes the default); True when
    the file changed. A name already given to other files is refused."""
    if not _CLOUD_NAME.match(cloud.name):
        raise InputError(
            f"cloud name {cloud.name!r}: letters, digits, '.', '_' and '-', at most 63"
        )
    if not cloud.inventory.exists():
        raise InputError(f"inventory {cloud.inventory} does not exist")
    default, clouds = load_clouds(path)
    old = clouds.get(cloud.name)
    if old is not None and old != cloud:
        raise InputError(
            f"cloud {cloud.name!r} is already named in {path} with other files "
            "(`cloudctl cloud remove` it first)"
        )
    clouds[cloud.name] = cloud
    new_default = cloud.name if make_default or not default else default
    if old == cloud and new_default == default:
        return False
    save_clouds(path, new_default, clouds)
    return True


def remove_cloud(path: Path, name: str) -> None:
    """Forget a named cloud (its inventory, home and state are left as they are)."""
    default, clouds = load_clouds(path)
    if name not in clouds:
        raise InputError(f"no cloud named {name!r} in {path}")
    del clouds[name]
    save_clouds(path, "" if default == name else default, clouds)


def resolve_settings(
    inventory: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    cloud: str | None = None,
) -> Settings:
    """Resolve which cloud to work on and where its files are.

    The cloud is, in order: `cloud` (--cloud) or $CLOUDCTL_CLOUD, a named cloud of the clouds
    file; else an explicit inventory (--inventory, $CLOUDCTL_INVENTORY) with $CLOUDCTL_HOME;
    else, on a CLC host, the cloud it controls; else the clouds file's default cloud.
    $CLOUDCTL_HOME and $CLOUDCTL_STATE override the home and state of any of them.
    Raises ConfigError with one clear line when no cloud is chosen or its inventory is missing.
    """
    env = os.environ if env is None else env
    project = _project_dir(env)
    name = cloud or env.get(ENV_CLOUD) or ""
    explicit_inventory = inventory if inventory is not None else env.get(ENV_INVENTORY)
    state = Path(env[ENV_STATE]).expanduser().absolute() if env.get(ENV_STATE) else None
    etcd: EtcdState | None = None
    named: NamedCloud | None = None
    if name or not (explicit_inventory or env.get(ENV_HOME) or CLC_CONFIG.is_file()):
        path = clouds_file(env)
        default, clouds = load_clouds(path)
        name = name or default
        if not name:
            raise ConfigError(
                f"no cloud chosen: add one with `cloudctl cloud add NAME --inventory DIR "
                f"--default` ({path}), or give --cloud NAME or --inventory"
            )
        if name not in clouds:
            known = ", ".join(sorted(clouds)) or "none"
            raise ConfigError(f"no cloud named {name!r} in {path} (clouds: {known})")
        named = clouds[name]

    if explicit_inventory:
        inv = Path(explicit_inventory).expanduser().absolute()
    elif named:
        inv = named.inventory
    else:
        inv = CLC_INVENTORY
    if not inv.exists():
        raise ConfigError(f"inventory {inv} does not exist (use --inventory or {ENV_INVENTORY})")

    if env.get(ENV_HOME):
        home = Path(env[ENV_HOME]).expanduser().absolute()
    elif named:
        home = named.home
    else:
        home = Path.home() / ".cloudctl"
    if state is None and named:
        if isinstance(named.state, EtcdState):
            etcd = named.state
        else:
            state = named.state
    if state is None and etcd is None and not named and not env.get(ENV_HOME):
        state, etcd = clc_state()
    if state is None and etcd is None:
        etcd = fetched_state(home)
    return Settings(
        project_dir=project, inventory=inv, home=home, state_path=state, cloud=name,
        state_etcd=etcd,
    )  # fmt: skip


def clc_state() -> tuple[Path | None, EtcdState | None]:
    """On a CLC host: the state file in the state directory its cloud.yml names, and the
    etcd cluster its `state:` mapping names (a CLC pair; the file is then only what
    `cloudctl state migrate` copies from)."""
    try:
        data = yaml.safe_load(CLC_CONFIG.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None, None
    if not isinstance(data, Mapping):
        return None, None
    path = Path(str(data["state_dir"])) / STATE_FILE if data.get("state_dir") else None
    etcd = parse_state(data.get("state"), str(CLC_CONFIG), str(data.get("cloud_id") or ""))
    return path, etcd


def fetched_state(home: Path) -> EtcdState | None:
    """Away from the CLC: the etcd state that the copy of cloud.yml fetched into the home
    names (a CLC pair; its files name the client certificate fetched beside it), else None
    (the state file in the home)."""
    try:
        data = yaml.safe_load((home / FETCHED_CONFIG).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(data, Mapping):
        return None
    spec = data.get("state")
    return parse_state(spec, str(home / FETCHED_CONFIG), str(data.get("cloud_id") or ""))


def with_fetched_state(settings: Settings) -> Settings:
    """The settings with the etcd state of a freshly fetched cloud.yml (a deploy that made a
    CLC pair), unless the state was chosen otherwise (etcd already, or a file named by
    $CLOUDCTL_STATE or the clouds file)."""
    if settings.state_etcd is not None or settings.state_path != settings.home / STATE_FILE:
        return settings
    etcd = fetched_state(settings.home)
    return replace(settings, state_etcd=etcd) if etcd else settings


def check_inventory(settings: Settings) -> list[str]:
    """The hosts of the inventory as Ansible reads it (ansible-inventory: no host is contacted).

    ConfigError with one line when Ansible cannot read the inventory or finds no host in it:
    ansible-playbook only warns about a source it cannot parse, then runs on no host and
    succeeds.
    """
    return sorted(inventory_hosts(settings))


def inventory_hosts(settings: Settings) -> dict[str, dict]:
    """Each host of the inventory with its variables (not templated), as check_inventory."""
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
    hosts = dict((data.get("_meta") or {}).get("hostvars") or {})
    for group in data.values():
        for host in (group or {}).get("hosts") or []:
            hosts.setdefault(host, {})
    if not hosts:
        reason = _first_message(proc.stderr, "WARNING")
        raise ConfigError(
            f"inventory {settings.inventory} has no hosts" + (f" ({reason})" if reason else "")
        )
    return hosts


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
    if not (project / "ansible.cfg").is_file() or not (project / COLLECTION_DIR).is_dir():
        raise ConfigError(
            f"no cloudctl project (ansible.cfg and {COLLECTION_DIR}/) at {project} "
            f"(from {origin}); set {ENV_PROJECT} to the project directory"
        )
    return project
