"""What every service of the runtime (instances, volumes...) starts from."""

from __future__ import annotations

from cloudctl.cloudconfig import CloudConfig, config_path, get_config, load_config
from cloudctl.config import Settings
from cloudctl.state import StateStore


class CloudService:
    """Settings, the state store, and the cloud configuration (read on first use)."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore | None = None,
        config: CloudConfig | None = None,
    ) -> None:
        self.settings = settings
        self.store = store or StateStore(settings.state_path)
        self._config = config

    @property
    def config(self) -> CloudConfig:
        """The cloud configuration; the state is checked to be this cloud's when it is read."""
        if self._config is None:
            config = get_config(self.settings)
            self.store.check(config.cloud_id)
            self._config = config
        return self._config


def open_state(settings: Settings) -> StateStore:
    """The cloud's state store, refused when it is missing, records no cloud, or is of another
    cloud than the local copy of the configuration (CloudService checks again after a fetch)."""
    store = StateStore(settings.state_path)
    path = config_path(settings)
    store.check(load_config(path).cloud_id if path else "")
    return store
