"""What every service of the runtime (instances, volumes...) starts from."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from cloudctl.cloudconfig import CloudConfig, config_path, get_config, load_config
from cloudctl.config import Settings
from cloudctl.state import Store, Transaction, open_store

# Called by a long operation with its records once they are in their first state (pending,
# creating...), before its play runs: the API answers the request then (cloudctl/api).
Recorded = Callable[[list[dict[str, Any]]], None]


class CloudService:
    """Settings, the state store, and the cloud configuration (read on first use)."""

    def __init__(
        self,
        settings: Settings,
        store: Store | None = None,
        config: CloudConfig | None = None,
    ) -> None:
        self.settings = settings
        self.store = store or open_store(settings)
        self._config = config

    @property
    def config(self) -> CloudConfig:
        """The cloud configuration; the state is checked to be this cloud's when it is read."""
        if self._config is None:
            config = get_config(self.settings)
            self.store.check(config.cloud_id)
            self._config = config
        return self._config


def checked_state(settings: Settings) -> AbstractContextManager[Transaction]:
    """A read-only view of the cloud's state, refused when the state is missing, records no
    cloud, or is of another cloud than the local copy of the configuration (CloudService
    checks again after a fetch)."""
    path = config_path(settings)
    cloud_id = load_config(path).cloud_id if path else ""
    return open_store(settings).checked_snapshot(cloud_id)
