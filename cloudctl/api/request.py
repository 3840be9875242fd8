"""What an action handler gets: the request's parameters, who sends it, and the cloud."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from cloudctl.api.params import Params
from cloudctl.cloudconfig import CloudConfig
from cloudctl.config import Settings
from cloudctl.identity import Principal
from cloudctl.services import CloudService
from cloudctl.state import Store

S = TypeVar("S", bound=CloudService)
DEFAULT_REGION = "eucalyptus"  # Eucalyptus's one region, unless the configuration names one


@dataclass
class ApiRequest:
    action: str
    params: Params
    principal: Principal
    settings: Settings
    store: Store
    request_id: str
    endpoint: str  # the URL the client reached the service at
    _config: CloudConfig | None = field(default=None, repr=False)

    @property
    def config(self) -> CloudConfig:
        """The cloud configuration, read once per request (checked against the state)."""
        if self._config is None:
            self._config = CloudService(self.settings, store=self.store).config
        return self._config

    @property
    def region(self) -> str:
        return region_of(self.config)

    def service(self, cls: type[S]) -> S:
        """A service of the service layer (Zones, Instances, ...) on this request's cloud: the
        API acts through the same code as the CLI."""
        return cls(self.settings, store=self.store, config=self.config)


def region_of(config: CloudConfig) -> str:
    """The cloud's one region: clients sign for it and DescribeRegions lists it."""
    return config.api.region if config.api else DEFAULT_REGION


def headers_of(environ: dict[str, Any]) -> dict[str, str]:
    """The request's headers, lowercase names (WSGI keeps them as HTTP_* and CONTENT_*)."""
    headers = {
        key[5:].replace("_", "-").lower(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = environ[key]
    return headers


def raw_path(environ: dict[str, Any]) -> str:
    """The path as the client sent it (still percent-encoded), which the client signed."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")  # gunicorn, uwsgi
    if raw:
        return urlsplit(raw).path or "/"
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    return quote(path.encode("latin-1"), safe="/~") or "/"
