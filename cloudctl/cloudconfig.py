"""The cloud configuration: clusters (zones), nodes, instance types and the Walrus endpoint.

The clc role renders it as /etc/cloud/cloud.yml on the CLC. cloudctl reads, in order:
$CLOUDCTL_CONFIG, /etc/cloud/cloud.yml (cloudctl runs on the CLC), <home>/cloud.yml (a copy
fetched from the CLC by `cloudctl.cloud.runtime.fetch_config`; `cloudctl deploy` refreshes it).
The file holds the Walrus secret key: copies are written 0600. The CA certificate of the
CLC's API comes with the copy (<home>/ca.crt), and the copy's api.ca_file names it; for a
CLC pair, so do the etcd state's TLS files (<home>/etcd/), named by the copy's `state:`.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cloudctl.config import CLC_CONFIG, CLC_INVENTORY, FETCHED_CONFIG, Settings
from cloudctl.errors import ConfigError, InputError

ENV_CONFIG = "CLOUDCTL_CONFIG"


@dataclass(frozen=True)
class InstanceType:
    name: str
    cpus: int
    memory_mb: int
    disk_gb: int


@dataclass(frozen=True)
class Node:
    """A Node Controller and what it offers to instances (MAX_CORES / MAX_MEM)."""

    name: str
    vcpus: int
    memory_mb: int


@dataclass(frozen=True)
class Cluster:
    """A cluster = an availability zone: its subnet, CC(s), SCs and NCs."""

    zone: str
    subnet: str
    bridge: str
    gateway: str
    cc: str | None  # the first CC of the zone (None: no CC)
    sc: list[str]
    nodes: list[Node]
    public_ips: str = ""  # elastic IP pool: "198.51.100.0/28" or "A-B"; "" = none
    public_interface: str = ""  # the CC's interface that holds the elastic IPs
    # Every CC of the zone: one, or a pair (HA) that holds the same reservations and rules;
    # the holder of the gateway address serves them.
    ccs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.ccs and self.cc:  # built with only `cc`: a zone of one CC
            object.__setattr__(self, "ccs", (self.cc,))


@dataclass(frozen=True)
class Walrus:
    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)


@dataclass(frozen=True)
class Api:
    """Where users reach the cloud's EC2 and S3 APIs (the CLC's API service)."""

    endpoint: str  # https://clc:8773/
    region: str = "eucalyptus"
    ca_file: str | None = None  # the CA that signed the service's certificate


@dataclass(frozen=True)
class CloudConfig:
    cloud_name: str
    clusters: dict[str, Cluster]
    instance_types: dict[str, InstanceType]
    walrus: Walrus
    path: Path
    scheduling_policy: str = "roundrobin"
    cloud_id: str = ""  # made by the deploy; the state records it ("" = deployed before ids)
    api: Api | None = None  # None: the cloud serves no API

    def zone_or_default(self, zone: str | None) -> str:
        """The zone asked for, else the first zone by name."""
        if zone is not None:
            return self.cluster(zone).zone
        if not self.clusters:
            raise ConfigError(f"the cloud configuration {self.path} has no zone")
        return min(self.clusters)

    def cluster(self, zone: str) -> Cluster:
        try:
            return self.clusters[zone]
        except KeyError:
            known = ", ".join(sorted(self.clusters)) or "none"
            raise InputError(f"unknown zone {zone!r} (zones: {known})") from None

    def ccs_of(self, record: Mapping[str, Any]) -> tuple[str, ...]:
        """The CCs that hold the reservations and rules of a record (instance, address) of a
        zone: every CC of its zone; the record's own `cc` when the zone is not configured."""
        cluster = self.clusters.get(record.get("zone", ""))
        if cluster is not None and cluster.ccs:
            return cluster.ccs
        return (record["cc"],) if record.get("cc") else ()

    def instance_type(self, name: str) -> InstanceType:
        try:
            return self.instance_types[name]
        except KeyError:
            known = ", ".join(self.instance_types) or "none"
            raise InputError(f"unknown instance type {name!r} (types: {known})") from None


def public_ip_candidates(pool: str) -> Iterator[str]:
    """Every address of an elastic IP pool, in order: a CIDR gives its host addresses
    ("198.51.100.0/30": .1 and .2; a /31 or /32 all its addresses), a range "A-B" every
    address from A to B inclusive. "" gives none. ValueError for anything else."""
    pool = (pool or "").strip()
    if not pool:
        return iter(())
    if "-" in pool:
        first, last = (ipaddress.IPv4Address(part.strip()) for part in pool.split("-", 1))
        if last < first:
            raise ValueError(f"elastic IP range {pool!r} ends before it starts")
        return (str(ipaddress.IPv4Address(n)) for n in range(int(first), int(last) + 1))
    if "/" not in pool:
        raise ValueError(f"elastic IP pool {pool!r} is neither a CIDR (A/N) nor a range (A-B)")
    return (str(a) for a in ipaddress.IPv4Network(pool).hosts())


def _checked_pool(zone: str, pool: object) -> str:
    text = str(pool or "").strip()
    try:
        public_ip_candidates(text)
    except ValueError as exc:
        raise ValueError(f"clusters.{zone}.public_ips {text!r}: {exc}") from None
    return text


def _ccs(zone: str, spec: Mapping[str, Any]) -> tuple[str, ...]:
    """The zone's CC hosts: `ccs` (a CC pair), else the single `cc` (configurations written
    before pairs existed), else none."""
    ccs = spec.get("ccs")
    if ccs is None:
        ccs = [spec["cc"]] if spec.get("cc") else []
    if isinstance(ccs, str) or not all(isinstance(h, str) and h for h in ccs):
        raise ValueError(f"clusters.{zone}.ccs {ccs!r} is not a list of host names")
    return tuple(ccs)


def _ints(spec: Mapping[str, Any], keys: tuple[str, ...], where: str) -> list[int]:
    """The integer fields `keys` of `spec`; a ValueError names the one that is not."""
    values = []
    for key in keys:
        try:
            values.append(int(spec[key]))
        except (TypeError, ValueError):
            raise ValueError(f"{where}.{key} {spec[key]!r} is not a whole number") from None
    return values


def parse_config(data: Mapping[str, Any], path: Path) -> CloudConfig:
    """Build a CloudConfig from the YAML mapping; one clear line on what is missing."""
    try:
        clusters = {}
        for zone, spec in (data.get("clusters") or {}).items():
            nodes = [
                Node(name, *_ints(n, ("vcpus", "memory_mb"), f"clusters.{zone}.nodes.{name}"))
                for name, n in sorted((spec.get("nodes") or {}).items())
            ]
            ccs = _ccs(zone, spec)
            clusters[zone] = Cluster(
                zone=zone,
                subnet=str(spec["subnet"]),
                bridge=str(spec["bridge"]),
                gateway=str(spec["gateway"]),
                cc=ccs[0] if ccs else None,
                ccs=ccs,
                sc=list(spec.get("sc") or []),
                nodes=nodes,
                public_ips=_checked_pool(zone, spec.get("public_ips")),
                public_interface=str(spec.get("public_interface") or ""),
            )
        types = {
            t["name"]: InstanceType(
                t["name"],
                *_ints(t, ("cpus", "memory_mb", "disk_gb"), f"instance_types.{t['name']}"),
            )
            for t in data.get("instance_types") or []
        }
        walrus = data["walrus"]
        policy = str(data.get("scheduling_policy") or "roundrobin")
        if policy not in ("roundrobin", "greedy"):
            raise ValueError(f"scheduling_policy {policy!r} is not roundrobin or greedy")
        return CloudConfig(
            cloud_name=str(data.get("cloud_name", "cloud")),
            clusters=clusters,
            instance_types=types,
            walrus=Walrus(
                str(walrus["endpoint"]), str(walrus["access_key"]), str(walrus["secret_key"])
            ),
            path=path,
            scheduling_policy=policy,
            cloud_id=str(data.get("cloud_id") or ""),
            api=_api(data.get("api")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(
            f"cloud configuration {path} is incomplete or malformed: {exc!r}"
        ) from None


def _api(spec: Mapping[str, Any] | None) -> Api | None:
    if not spec:
        return None
    return Api(
        endpoint=str(spec["endpoint"]),
        region=str(spec.get("region") or "eucalyptus"),
        ca_file=str(spec["ca_file"]) if spec.get("ca_file") else None,
    )


def load_config(path: Path) -> CloudConfig:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the cloud configuration {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"cloud configuration {path} is not YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"cloud configuration {path} is not a mapping")
    return parse_config(data, path)


def fetched_path(settings: Settings) -> Path:
    return settings.home / FETCHED_CONFIG


def fetched_ca_path(settings: Settings) -> Path:
    return settings.home / "ca.crt"


def fetched_etcd_dir(settings: Settings) -> Path:
    """Where the copies of the etcd state's CA, client certificate and key go (a CLC pair)."""
    return settings.home / "etcd"


def identity_key_path(settings: Settings) -> Path:
    """The key that encrypts the state's secrets, beside the state file (cloudctl/identity.py)."""
    path = settings.state_path
    return path.with_name(path.name + ".identity-key")  # type: ignore[union-attr]


def fetched_identity_key_path(settings: Settings) -> Path:
    """Where fetch_config puts the identity key of a shared state while a state file of
    this cloudctl is still here (its own key stays until `merge_state` adds the file to
    the shared state: cloudctl/deploy.py)."""
    if settings.state_path is not None and settings.state_path.is_file():
        return identity_key_path(settings).with_name(identity_key_path(settings).name + ".etcd")
    return identity_key_path(settings)


# The files of cloud.yml's `state:` mapping -> their copies' names in fetched_etcd_dir.
ETCD_COPIES = {"ca_file": "ca.crt", "cert_file": "client.crt", "key_file": "client.key"}


def config_path(settings: Settings, env: Mapping[str, str] | None = None) -> Path | None:
    """The configuration file to read, or None when it must be fetched from the CLC first."""
    env = os.environ if env is None else env
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG]).expanduser()
    if settings.inventory == CLC_INVENTORY and os.access(CLC_CONFIG, os.R_OK):
        return CLC_CONFIG  # cloudctl works on the CLC's own cloud
    copy = fetched_path(settings)
    return copy if copy.is_file() else None


def fetch_config(settings: Settings) -> Path:
    """Copy the CLC's cloud.yml to <home>/cloud.yml (0600) with a runtime play, with the
    API's CA certificate and, for a CLC pair, the etcd state's CA, client certificate and key
    (<home>/etcd/, 0600) and the identity key of its secrets: cloudctl here works on the
    state in etcd, as on the CLCs."""
    from cloudctl import runner  # runner imports ansible_runner: only when needed

    settings.ensure_home()
    dest, ca_dest = fetched_path(settings), fetched_ca_path(settings)
    etcd_dir = fetched_etcd_dir(settings)
    ca_dest.unlink(missing_ok=True)  # the CLC may name no CA any more
    for name in ETCD_COPIES.values():
        (etcd_dir / name).unlink(missing_ok=True)
    key_dest = fetched_identity_key_path(settings)
    old_umask = os.umask(0o077)  # ansible-playbook inherits it: the copies are born 0600
    try:
        result = runner.run_playbook(
            settings,
            "cloudctl.cloud.runtime.fetch_config",
            extravars={
                "cloudctl_config_dest": str(dest),
                "cloudctl_ca_dest": str(ca_dest),
                "cloudctl_etcd_dest": str(etcd_dir),
                "cloudctl_etcd_copies": ETCD_COPIES,
                # the identity key of a shared state (etcd only), where this cloudctl reads it
                "cloudctl_identity_key_dest": str(key_dest),
            },
            operation="fetch-config",
            journal=False,
        )
    finally:
        os.umask(old_umask)
    result.raise_for_failures()
    if key_dest.is_file():
        key_dest.chmod(0o600)
    if not dest.is_file():
        raise ConfigError(f"the CLC's cloud configuration was not copied to {dest}")
    dest.chmod(0o600)
    point_at_copies(dest, ca_dest, etcd_dir)
    return dest


def point_at_copies(config_copy: Path, ca_copy: Path, etcd_dir: Path) -> None:
    """Make the copy's api.ca_file and state's TLS files name the copies fetched beside it
    (the CLC's paths of them mean nothing here), where those were fetched. Written
    atomically, 0600."""
    data = yaml.safe_load(config_copy.read_text(encoding="utf-8"))
    if ca_copy.is_file() and data.get("api"):
        data["api"]["ca_file"] = str(ca_copy)
    state = data.get("state") or {}
    for key, name in ETCD_COPIES.items():
        if state.get(key) and (etcd_dir / name).is_file():
            (etcd_dir / name).chmod(0o600)
            state[key] = str(etcd_dir / name)
    tmp = config_copy.with_name(f".{config_copy.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        yaml.safe_dump(data, fh, sort_keys=False)
    os.replace(tmp, config_copy)


def get_config(settings: Settings) -> CloudConfig:
    """The cloud configuration, fetched from the CLC when there is no local copy."""
    path = config_path(settings)
    if path is None:
        path = fetch_config(settings)
    return load_config(path)
