"""Pieces of EC2's shapes that every family of actions uses: records by id, tag sets, tags
on create, owner ids.

    chosen = select(volumes, params.resource_ids("VolumeId", "volume"), "volume")
    tags = tags_on_create(request.params, "volume")      # TagSpecification.N, checked
    owners = account_numbers(request)                      # account name -> 12-digit OwnerId
    {"volumeId": ..., "ownerId": owners[record["account"]], "tagSet": tag_set(record)}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cloudctl import tags as tag_service
from cloudctl.api.errors import ApiError, not_found
from cloudctl.api.params import Params
from cloudctl.api.request import ApiRequest
from cloudctl.identity import Identity


def select(
    records: Sequence[dict[str, Any]], wanted: Sequence[str], kind: str
) -> list[dict[str, Any]]:
    """The records whose ids are `wanted` (every record when none is): EC2's NotFound code of
    the kind ("volume": InvalidVolume.NotFound) for the first id that is not among them."""
    if not wanted:
        return list(records)
    by_id = {r["id"]: r for r in records}
    for rid in wanted:
        if rid not in by_id:
            raise not_found(kind, rid)
    return [by_id[rid] for rid in dict.fromkeys(wanted)]


def tag_set(record: Mapping[str, Any]) -> list[dict[str, str]]:
    """A record's tags as EC2's tagSet, by key."""
    return [{"key": k, "value": v} for k, v in sorted((record.get("tags") or {}).items())]


def tags_on_create(
    params: Params, resource_type: str, *, made_none_of: tuple[str, ...] = ()
) -> dict[str, str]:
    """The tags `TagSpecification.N` gives a new resource of EC2's `resource_type`, checked
    (tags.validate) before anything is created; a specification for another type is refused,
    but for `made_none_of`: types EC2 makes along that this cloud does not (RunInstances'
    volumes), whose tags are checked and go nowhere."""
    specs = params.tag_specifications()
    for unmade in made_none_of:
        tag_service.validate(specs.pop(unmade, {}))
    others = sorted(set(specs) - {resource_type})
    if others:
        raise ApiError(
            "InvalidParameterValue",
            f"'{others[0]}' is not a valid taggable resource type for this operation.",
        )
    tags = specs.get(resource_type, {})
    tag_service.validate(tags)
    return tags


def account_numbers(request: ApiRequest) -> dict[str, str]:
    """Account name -> its 12-digit number (EC2's OwnerId / UserId)."""
    return {a["name"]: a["number"] for a in Identity(request.store).list_accounts()}
