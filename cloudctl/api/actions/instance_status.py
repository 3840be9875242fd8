"""What amazon.aws's ec2_instance asks of an instance besides DescribeInstances.

It calls DescribeInstanceStatus (IncludeAllInstances) and DescribeInstanceAttribute
(instanceType, groupSet) right after RunInstances, and its waiters for the states started and
restarted wait for instanceStatus ok. Both answer from the instance records of the service
layer, as DescribeInstances does (cloudctl.api.actions.instances).
"""

from __future__ import annotations

from typing import Any

from cloudctl.api.actions import action
from cloudctl.api.actions.instances import ROOT_DEVICE, STATE_CODES, ec2_state
from cloudctl.api.errors import ApiError
from cloudctl.api.params import filter_items, paginate
from cloudctl.api.request import ApiRequest
from cloudctl.api.shapes import select
from cloudctl.groups import Groups
from cloudctl.ids import InstanceState
from cloudctl.instances import Instances


@action("DescribeInstanceStatus")
def describe_instance_status(request: ApiRequest) -> dict[str, Any]:
    """Instances' states; a running instance's system and instance status are ok (its domain
    runs on its NC: the cloud does not probe the guest), any other's not-applicable. Without
    IncludeAllInstances, running instances only (as EC2)."""
    params = request.params
    wanted = params.resource_ids("InstanceId", "instance")
    if wanted and "MaxResults" in params:
        raise ApiError(
            "InvalidParameterCombination",
            "The parameter instancesSet cannot be used with the parameter maxResults",
        )
    include_all = params.boolean("IncludeAllInstances")
    records = select(request.service(Instances).list(), wanted, "instance")
    if not include_all:
        records = [r for r in records if ec2_state(r) == InstanceState.RUNNING]
    statuses = [_instance_status(r) for r in records]
    chosen = filter_items(
        statuses,
        params.filters(),
        {
            "availability-zone": lambda s: s["availabilityZone"],
            "instance-state-name": lambda s: s["instanceState"]["name"],
            "instance-state-code": lambda s: str(s["instanceState"]["code"]),
            "instance-status.status": lambda s: s["instanceStatus"]["status"],
            "instance-status.reachability": lambda s: s["instanceStatus"]["details"][0]["status"],
            "system-status.status": lambda s: s["systemStatus"]["status"],
            "system-status.reachability": lambda s: s["systemStatus"]["details"][0]["status"],
        },
    )
    page, token = paginate(params, chosen, key=lambda s: s["instanceId"], minimum=5, maximum=1000)
    return {"instanceStatusSet": page, "nextToken": token}


def _instance_status(record: dict[str, Any]) -> dict[str, Any]:
    state = ec2_state(record)
    running = state == InstanceState.RUNNING
    summary = {
        "status": "ok" if running else "not-applicable",
        "details": [{"name": "reachability", "status": "passed" if running else "not-applicable"}],
    }
    return {
        "instanceId": record["id"],
        "availabilityZone": record["zone"],
        "instanceState": {"code": STATE_CODES[state], "name": state},
        "systemStatus": summary,
        "instanceStatus": summary,
        "eventsSet": [],
    }


# Attributes an instance of this cloud has, by DescribeInstanceAttribute's names: the
# record's value, or what is always so here (no termination protection, no EBS optimisation).
_ATTRIBUTES = {
    "instanceType": lambda r: {"value": r["type"]},
    "kernel": lambda r: {"value": r.get("kernel_id")},
    "ramdisk": lambda r: {"value": r.get("ramdisk_id")},
    "rootDeviceName": lambda r: {"value": ROOT_DEVICE},
    "disableApiTermination": lambda r: {"value": False},
    "disableApiStop": lambda r: {"value": False},
    "ebsOptimized": lambda r: {"value": False},
    "enaSupport": lambda r: {"value": False},
    "sourceDestCheck": lambda r: {"value": True},
    "productCodes": lambda r: [],
}


@action("DescribeInstanceAttribute")
def describe_instance_attribute(request: ApiRequest) -> dict[str, Any]:
    params = request.params
    instance_id = params.resource_id("InstanceId", "instance", required=True)
    attribute = params.string("Attribute", required=True, choices=[*_ATTRIBUTES, "groupSet"])
    record = request.service(Instances).get(instance_id)
    if attribute == "groupSet":
        names = {g["id"]: g["name"] for g in request.service(Groups).list()}
        value: Any = [{"groupId": g, "groupName": names.get(g)} for g in record.get("groups") or []]
    else:
        value = _ATTRIBUTES[attribute](record)
    return {"instanceId": record["id"], attribute: value}
