"""Deploy the cloud: run cloudctl.cloud.site and summarize it per host."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cloudctl.cloudconfig import (
    fetched_identity_key_path,
    fetched_path,
    get_config,
    identity_key_path,
)
from cloudctl.config import Settings, check_inventory, with_fetched_state
from cloudctl.errors import InputError
from cloudctl.runner import PlayResult, ProgressCallback, previous_task_count, run_playbook
from cloudctl.state import EtcdStore, Migration, StateStore, migrate, open_store

SITE_PLAYBOOK = "cloudctl.cloud.site"
CC_PAIRS_PLAYBOOK = "cloudctl.cloud.runtime.cc_pairs"  # site.yml's last play


@dataclass(frozen=True)
class HostSummary:
    host: str
    ok: int
    changed: int
    failed: int
    unreachable: int


def parse_extravars(pairs: Iterable[str]) -> dict[str, str]:
    """KEY=VALUE strings (as ansible-playbook -e takes them) into a dict of strings."""
    extravars: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise InputError(f"extra variable {pair!r} is not KEY=VALUE")
        extravars[key] = value
    return extravars


def operation_name(check: bool) -> str:
    return "deploy-check" if check else "deploy"


def expected_tasks(settings: Settings, check: bool = False) -> int | None:
    """How many tasks the last successful deploy started, to size a progress bar."""
    return previous_task_count(settings, operation_name(check))


def deploy(
    settings: Settings,
    *,
    check: bool = False,
    limit: str | None = None,
    tags: str | None = None,
    extravars: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> PlayResult:
    """Run site.yml; failed hosts are in the result (PlayResult.raise_for_failures)."""
    check_inventory(settings)
    result = run_playbook(
        settings,
        SITE_PLAYBOOK,
        extravars=extravars,
        limit=limit,
        tags=tags,
        check=check,
        progress=progress,
        operation=operation_name(check),
    )
    if not check:
        # The deploy may have changed the cloud configuration: fetch it again when needed.
        fetched_path(settings).unlink(missing_ok=True)
    return result


def record_cloud(settings: Settings) -> tuple[Settings, bool, Migration | None]:
    """After a deploy: the state records the cloud's id (made by the deploy), created when
    there is none; the state of another cloud is refused. The state is the one the fresh
    cloud.yml names (etcd once the deploy made a CLC pair): this cloudctl's state file of the
    single-CLC cloud is added to it first (merge_state), and the CCs of a pair get the
    reservations and elastic IPs of what it added (site.yml's last play ran before). Returns
    the settings of that state, whether the record was written, and the merge."""
    config = get_config(settings)
    settings = with_fetched_state(settings)
    merged = merge_pending(settings)
    written = open_store(settings).initialize(config.cloud_id, config.cloud_name)
    return settings, written, merged


def merge_pending(settings: Settings) -> Migration | None:
    """When the settings name a state in etcd and this cloudctl's state file is still here
    (a deploy made the CLC pair; or its merge did not finish): merge it (merge_state), then
    give the CCs of a pair the reservations and elastic IPs of what it added."""
    if settings.state_etcd is None or not settings.state_path.is_file():  # type: ignore[union-attr]
        return None
    merged = merge_state(settings)
    run_playbook(settings, CC_PAIRS_PLAYBOOK, operation="deploy-cc-pairs").raise_for_failures()
    return merged


def merge_state(settings: Settings) -> Migration:
    """Add this cloudctl's state file to the shared state in etcd that the settings name (a
    cloud operated from here whose CLC became a pair: the CLC's own state went into etcd with
    the deploy). Secrets are encrypted again with the shared state's identity key (fetched
    beside the file's own: fetched_identity_key_path); the file and its key stay, renamed
    FILE.migrated-TIME and FILE.migrated-TIME.identity-key."""
    from cloudctl.identity import recrypt_secrets  # cryptography: only when needed

    own_key, shared_key = identity_key_path(settings), fetched_identity_key_path(settings)
    recrypt = recrypt_secrets(own_key, shared_key) if shared_key.is_file() else None
    source = StateStore(settings.state_path)  # type: ignore[arg-type]
    target = EtcdStore(settings.state_etcd)  # type: ignore[arg-type]
    done = migrate(source, target, merge=True, recrypt=recrypt)
    if own_key.is_file() and shared_key != own_key:
        os.replace(own_key, done.moved_to.with_name(done.moved_to.name + ".identity-key"))
    if shared_key.is_file() and shared_key != own_key:
        os.replace(shared_key, own_key)
    return done


def host_summary(result: PlayResult) -> list[HostSummary]:
    return [
        HostSummary(s.host, s.ok, s.changed, s.failed, s.unreachable) for s in result.stats.values()
    ]
