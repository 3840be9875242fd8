"""EC2 Query parameters: lists, structures, typed values, filters, pagination, XML."""

from __future__ import annotations

from operator import itemgetter
from xml.etree import ElementTree

import pytest
from botocore import parsers

from cloudctl.api import render
from cloudctl.api.errors import ApiError
from cloudctl.api.params import Params, filter_items, paginate


def error_of(call) -> tuple[str, str]:
    with pytest.raises(ApiError) as caught:
        call()
    return caught.value.code, caught.value.message


def test_lists_follow_member_numbers():
    params = Params({"InstanceId.2": "i-2", "InstanceId.10": "i-10", "InstanceId.1": "i-1"})
    assert params.list("InstanceId") == ["i-1", "i-2", "i-10"]
    assert params.list("VolumeId") == []
    assert error_of(lambda: params.list("VolumeId", required=True)) == (
        "MissingParameter", "The request must contain the parameter VolumeId.1",
    )  # fmt: skip
    bad = Params({"InstanceId.x": "i-1"})
    code, message = error_of(lambda: bad.list("InstanceId"))
    assert code == "InvalidParameterValue" and "InstanceId.x" in message


def test_structures_filters_and_tag_specifications():
    params = Params({
        "Filter.1.Name": "instance-state-name", "Filter.1.Value.1": "running",
        "Filter.1.Value.2": "pending", "Filter.2.Name": "tag:team", "Filter.2.Value.1": "db",
        "TagSpecification.1.ResourceType": "instance",
        "TagSpecification.1.Tag.1.Key": "Name", "TagSpecification.1.Tag.1.Value": "web",
        "TagSpecification.1.Tag.2.Key": "empty",
        "TagSpecification.2.ResourceType": "volume",
        "TagSpecification.2.Tag.1.Key": "k", "TagSpecification.2.Tag.1.Value": "v",
    })  # fmt: skip
    assert params.filters() == {"instance-state-name": ["running", "pending"], "tag:team": ["db"]}
    assert params.tag_specifications() == {
        "instance": {"Name": "web", "empty": ""},
        "volume": {"k": "v"},
    }
    member = params.members("Filter")[1]
    assert member.full_name("Name") == "Filter.2.Name" and member.string("Name") == "tag:team"
    no_name = Params({"Filter.1.Value.1": "x"})
    assert error_of(no_name.filters) == (
        "MissingParameter", "The request must contain the parameter Filter.1.Name",
    )  # fmt: skip
    no_value = Params({"Filter.3.Name": "x"})
    assert error_of(no_value.filters)[1].endswith("Filter.3.Value.1")


def test_typed_values():
    params = Params({"MaxCount": "3", "Big": "1000", "Neg": "-1", "Word": "three",
                     "DryRun": "TRUE", "Flag": "yes", "Empty": ""})  # fmt: skip
    assert params.integer("MaxCount", minimum=1, maximum=10) == 3
    assert params.integer("Absent", default=7) == 7
    assert error_of(lambda: params.integer("Big", minimum=5, maximum=100)) == (
        "InvalidParameterValue",
        "Value (1000) for parameter Big is invalid. Expecting a value between 5 and 100.",
    )
    assert "of at least 0" in error_of(lambda: params.integer("Neg", minimum=0))[1]
    assert "whole number" in error_of(lambda: params.integer("Word"))[1]
    assert error_of(lambda: params.integer("Absent", required=True))[0] == "MissingParameter"
    assert params.boolean("DryRun") is True and params.boolean("Absent") is False
    assert "true or false" in error_of(lambda: params.boolean("Flag"))[1]
    assert error_of(lambda: params.string("Empty", required=True))[0] == "MissingParameter"
    assert params.string("Empty") == ""
    assert "Expecting one of: a, b" in error_of(lambda: params.string("Word", choices="ab"))[1]
    assert "longer than 3" in error_of(lambda: params.string("Word", max_length=3))[1]


ITEMS = [
    {"id": "i-1", "state": "running", "tags": {"team": "db"}},
    {"id": "i-2", "state": "pending", "tags": {"team": "web*"}},
    {"id": "i-3", "state": "stopped", "tags": {}},
]
FIELDS = {"instance-id": lambda i: i["id"], "state": lambda i: i["state"]}


def ids(filters):
    return [i["id"] for i in filter_items(ITEMS, filters, FIELDS, tags=lambda i: i["tags"])]


def test_filters_match_as_ec2():
    assert ids({}) == ["i-1", "i-2", "i-3"]
    assert ids({"state": ["running", "stopped"]}) == ["i-1", "i-3"]  # values: any of them
    assert ids({"state": ["run*", "?ending"]}) == ["i-1", "i-2"]  # wildcards
    assert ids({"state": ["running"], "instance-id": ["i-2"]}) == []  # names: all of them
    assert ids({"tag:team": ["db"]}) == ["i-1"]
    assert ids({"tag:team": ["web\\*"]}) == ["i-2"]  # an escaped * is itself
    assert ids({"tag:team": ["web\\*x"]}) == []
    assert ids({"tag-key": ["team"]}) == ["i-1", "i-2"]
    code, message = error_of(lambda: ids({"colour": ["red"]}))
    assert code == "InvalidParameterValue" and message.startswith("The filter 'colour' is invalid")


def test_pagination_by_token():
    items = [{"id": f"i-{n}"} for n in range(7)]
    key = itemgetter("id")
    page, token = paginate(Params({"MaxResults": "5"}), items, key)
    assert [i["id"] for i in page] == ["i-0", "i-1", "i-2", "i-3", "i-4"] and token
    items.insert(0, {"id": "i-00"})  # a new item between calls moves nothing
    rest, end = paginate(Params({"MaxResults": "5", "NextToken": token}), items, key)
    assert [i["id"] for i in rest] == ["i-5", "i-6"] and end is None
    assert paginate(Params({}), items, key) == (sorted(items, key=key), None)
    assert error_of(lambda: paginate(Params({"NextToken": "garbage"}), items, key))[0] == (
        "InvalidPaginationToken"
    )
    assert error_of(lambda: paginate(Params({"MaxResults": "4"}), items, key))[0] == (
        "InvalidParameterValue"
    )


def test_responses_parse_with_botocore():
    body = {
        "regionInfo": [{"regionName": "r", "regionEndpoint": "https://x/", "skipped": None}],
    }
    xml = render.response("DescribeRegions", "req-1", body)
    root = ElementTree.fromstring(xml)
    assert root.tag == f"{{{render.NAMESPACE}}}DescribeRegionsResponse"
    from botocore.session import get_session

    model = get_session().get_service_model("ec2").operation_model("DescribeRegions")
    parsed = parsers.create_parser("ec2").parse(
        {"body": xml, "headers": {}, "status_code": 200}, model.output_shape
    )
    assert parsed["Regions"] == [{"RegionName": "r", "Endpoint": "https://x/"}]
    assert parsed["ResponseMetadata"]["RequestId"] == "req-1"


def test_error_document_and_text_xml_cannot_carry():
    xml = render.error("InvalidParameterValue", "bad <value> & \x00\x1b", "req-2")
    root = ElementTree.fromstring(xml)
    assert root.tag == "Response"
    assert root.findtext("Errors/Error/Code") == "InvalidParameterValue"
    assert root.findtext("Errors/Error/Message") == "bad <value> & \ufffd\ufffd"
    assert root.findtext("RequestID") == "req-2"
    parsed = parsers.create_parser("ec2").parse(
        {"body": xml, "headers": {}, "status_code": 400}, None
    )
    assert parsed["Error"] == {
        "Code": "InvalidParameterValue",
        "Message": "bad <value> & \ufffd\ufffd",
    }
