"""The EC2 actions: one handler per action name, registered with `@action`.

A module of this package holds the handlers of a family of actions (regions and zones,
instances, volumes, ...); every module here is imported when the service starts. A handler
takes the ApiRequest and returns the body of the response (see cloudctl.api.render):

    @action("DescribeKeyPairs")
    def describe_key_pairs(request: ApiRequest) -> dict:
        names = request.params.list("KeyName")
        pairs = request.service(KeyPairs).list()
        return {"keySet": [{"keyName": p["name"], ...} for p in pairs]}

It runs as the request's principal (identity.current_owner()); it raises ApiError for EC2's
own codes, or lets the service layer's errors through (cloudctl.api.errors maps them).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

from cloudctl.api.request import ApiRequest

Handler = Callable[[ApiRequest], dict[str, Any]]
ACTIONS: dict[str, Handler] = {}
SERVICES: dict[str, str] = {}  # action -> the SigV4 service its requests are signed for


def action(name: str, *, service: str = "ec2") -> Callable[[Handler], Handler]:
    """Register a handler for an action name: EC2's, or another Query API's whose clients
    sign for `service` (STS's GetCallerIdentity: "sts")."""

    def register(handler: Handler) -> Handler:
        if name in ACTIONS and ACTIONS[name] is not handler:
            raise ValueError(f"action {name} has two handlers")
        ACTIONS[name] = handler
        SERVICES[name] = service
        return handler

    return register


def load() -> dict[str, Handler]:
    """Import every module of this package (they register their actions); the registry."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return ACTIONS
