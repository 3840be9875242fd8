"""What every service of the runtime (instances, volumes...) starts from."""

from __future__ import annotations

from cloudctl.cloudconfig import CloudConfig, get_config
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
        if self._config is None:
            self._config = get_config(self.settings)
        return self._config
