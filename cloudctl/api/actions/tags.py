"""Tags over cloudctl.tags: on instances, volumes, snapshots, images and security groups.

CreateTags and DeleteTags change every named resource or none (one transaction); a resource
of another account is not found, as on EC2.
"""

from __future__ import annotations

from typing import Any

from cloudctl import ids
from cloudctl.api.actions import action
from cloudctl.api.errors import ApiError, missing_parameter, short
from cloudctl.api.params import Params, filter_items, paginate
from cloudctl.api.request import ApiRequest
from cloudctl.tags import RESOURCES, Tags

TAG_FILTERS = {
    "key": lambda t: t["key"],
    "value": lambda t: t["value"],
    "resource-id": lambda t: t["resource_id"],
    "resource-type": lambda t: t["resource_type"],
}


@action("CreateTags")
def create_tags(request: ApiRequest) -> dict[str, Any]:
    params = request.params
    resource_ids = _resource_ids(params)
    tags = {}
    for tag in params.members("Tag"):
        tags[tag.string("Key", required=True)] = tag.string("Value", default="")
    if not tags:
        raise missing_parameter("Tag.1.Key")
    Tags(request.store).create(resource_ids, tags)
    return {"return": True}


@action("DeleteTags")
def delete_tags(request: ApiRequest) -> dict[str, Any]:
    """Delete tags by key, or by key and value (`Tag.N.Value`, "" included: only a tag with
    that value goes); without `Tag.N`, every tag of the resources."""
    params = request.params
    resource_ids = _resource_ids(params)
    members = params.members("Tag")
    tags = {tag.string("Key", required=True): tag.string("Value") for tag in members}
    Tags(request.store).delete(resource_ids, tags if members else None)
    return {"return": True}


@action("DescribeTags")
def describe_tags(request: ApiRequest) -> dict[str, Any]:
    params = request.params
    rows = filter_items(Tags(request.store).list(), params.filters(), TAG_FILTERS)
    # A page ends after a (resource, key): NUL sorts before any character of a key.
    page, token = paginate(
        params, rows, key=lambda t: f"{t['resource_id']}\0{t['key']}", minimum=5, maximum=1000
    )
    return {
        "tagSet": [
            {"resourceId": t["resource_id"], "resourceType": t["resource_type"],
             "key": t["key"], "value": t["value"]}
            for t in page
        ],
        "nextToken": token,
    }  # fmt: skip


def _resource_ids(params: Params) -> list[str]:
    """`ResourceId.N`, each an id of a resource that takes tags (EC2's InvalidID otherwise)."""
    resource_ids = params.list("ResourceId", required=True)
    for rid in resource_ids:
        if ids.kind_of(rid) is None or rid.partition("-")[0] not in RESOURCES:
            raise ApiError("InvalidID", f"The ID '{short(rid)}' is not valid")
    return resource_ids
