"""The WSGI application in-process: botocore signs the requests and parses the answers."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
import yaml
from botocore import parsers
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.session import get_session

from cloudctl import errors
from cloudctl.api import actions
from cloudctl.api.actions.vpc import default_vpc_id
from cloudctl.api.app import Api
from cloudctl.api.errors import api_error
from cloudctl.cloudconfig import parse_config
from cloudctl.identity import ADMIN, Identity, Principal, current_owner
from cloudctl.quotas import QuotaExceeded
from cloudctl.state import StateStore
from tests.unit.helpers import TEST_CLOUD_ID, init_state

ENDPOINT = "https://clc.example:8773/"
REGION = "test-region"
EC2 = get_session().get_service_model("ec2")
CLOUD = {
    "cloud_name": "test",
    "cloud_id": TEST_CLOUD_ID,
    "clusters": {
        "zone-a": {"subnet": "172.31.0.0/24", "bridge": "cloudbr0", "gateway": "172.31.0.1",
                   "cc": "cc1", "nodes": {"nc1": {"vcpus": 4, "memory_mb": 4096},
                                          "nc2": {"vcpus": 2, "memory_mb": 1024}}},
        "zone-b": {"subnet": "172.31.1.0/24", "bridge": "cloudbr1", "gateway": "172.31.1.1",
                   "cc": None, "nodes": {}},
    },
    "instance_types": [
        {"name": "m1.small", "cpus": 1, "memory_mb": 512, "disk_gb": 5},
        {"name": "m1.large", "cpus": 2, "memory_mb": 2048, "disk_gb": 10},
    ],
    "walrus": {"endpoint": "http://127.0.0.1:1", "access_key": "a", "secret_key": "s"},
    "api": {"endpoint": ENDPOINT, "region": REGION},
}  # fmt: skip


@pytest.fixture
def cloud(settings, tmp_path, monkeypatch):
    """A cloud's state with one instance, an account with a user, and keys of both."""
    config = tmp_path / "cloud.yml"
    config.write_text(yaml.safe_dump(CLOUD))
    monkeypatch.setenv("CLOUDCTL_CONFIG", str(config))
    store = StateStore(init_state(settings.state_path))
    with store.transaction() as tx:
        tx.table("instances").insert({"id": "i-0000000a", "account": "admin", "user": "admin",
                                      "node": "nc1", "type": "m1.large", "state": "running"})  # fmt: skip
    identity = Identity(store)
    identity.create_account("dev")
    identity.create_user(Principal("dev", "alice"))
    keys = {
        "admin": identity.create_key(ADMIN),
        "alice": identity.create_key(Principal("dev", "alice")),
    }
    return Api(settings), keys, settings.state_path


def call(app, key, params, *, secret=None, presign=False, region=REGION, parse_as=None):
    """Sign a request as botocore does, run it through the app: (status, parsed answer)."""
    creds = Credentials(key["access_key_id"], secret or key["secret_access_key"])
    if presign:
        request = AWSRequest("GET", f"{ENDPOINT}?{urlencode(params)}")
        SigV4QueryAuth(creds, "ec2", region, expires=60).add_auth(request)
    else:
        request = AWSRequest("POST", ENDPOINT, data=urlencode(params).encode(),
                             headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        SigV4Auth(creds, "ec2", region).add_auth(request)
    return run(app, request, parse_as or params.get("Action"))


def run(app, request, action):
    url = urlsplit(request.url)
    body = request.body or b""
    environ = {
        "REQUEST_METHOD": request.method, "RAW_URI": url.path + (f"?{url.query}" if url.query else ""),
        "PATH_INFO": url.path, "QUERY_STRING": url.query, "wsgi.url_scheme": "https",
        "HTTP_HOST": url.netloc, "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
    }  # fmt: skip
    for name, value in request.headers.items():
        key = name.upper().replace("-", "_")
        environ[key if key == "CONTENT_TYPE" else f"HTTP_{key}"] = value
    answer = {}
    payload = b"".join(app(environ, lambda status, headers: answer.update(status=status)))
    status = int(answer["status"].split()[0])
    shape = EC2.operation_model(action).output_shape if status == 200 else None
    parsed = parsers.create_parser("ec2").parse(
        {"body": payload, "headers": {}, "status_code": status}, shape
    )
    return status, parsed


def test_the_four_actions(cloud):
    app, keys, _ = cloud
    status, out = call(app, keys["alice"], {"Action": "DescribeRegions"})
    assert status == 200
    assert out["Regions"] == [
        {"RegionName": REGION, "Endpoint": ENDPOINT, "OptInStatus": "opt-in-not-required"}
    ]
    _, out = call(app, keys["alice"], {"Action": "DescribeAvailabilityZones"})
    assert [(z["ZoneName"], z["State"], z["RegionName"]) for z in out["AvailabilityZones"]] == [
        ("zone-a", "available", REGION), ("zone-b", "unavailable", REGION)
    ]  # fmt: skip
    _, out = call(app, keys["alice"], {"Action": "DescribeAccountAttributes"})
    vpc_id = default_vpc_id(parse_config(CLOUD, Path("cloud.yml")))  # the default VPC facade
    assert {a["AttributeName"]: [v["AttributeValue"] for v in a["AttributeValues"]]
            for a in out["AccountAttributes"]} == {"supported-platforms": ["EC2", "VPC"],
                                                   "default-vpc": [vpc_id]}  # fmt: skip
    _, out = call(app, keys["alice"], {"Action": "DescribeInstanceTypes"})
    small = next(t for t in out["InstanceTypes"] if t["InstanceType"] == "m1.small")
    assert small["VCpuInfo"]["DefaultVCpus"] == 1 and small["MemoryInfo"]["SizeInMiB"] == 512
    assert small["InstanceStorageInfo"]["TotalSizeInGB"] == 5


def test_verbose_zones_show_capacity_to_admins_only(cloud):
    app, keys, _ = cloud
    params = {"Action": "DescribeAvailabilityZones", "ZoneName.1": "verbose"}
    _, out = call(app, keys["admin"], params)
    rows = [(z["ZoneName"], z["State"]) for z in out["AvailabilityZones"]]
    # nc1 holds an m1.large: 2 of 6 vCPUs and 2 of 5 GiB taken
    assert rows == [
        ("zone-a", "available"),
        ("|- vm types", "free / max   cpu   ram  disk"),
        ("|- m1.small", "0004 / 0006    1   512     5"),
        ("|- m1.large", "0001 / 0002    2  2048    10"),
        ("zone-b", "unavailable"),
        ("|- vm types", "free / max   cpu   ram  disk"),
        ("|- m1.small", "0000 / 0000    1   512     5"),
        ("|- m1.large", "0000 / 0000    2  2048    10"),
    ]
    _, out = call(app, keys["alice"], params)
    assert [z["ZoneName"] for z in out["AvailabilityZones"]] == ["zone-a", "zone-b"]


def test_parameters_filters_and_pages(cloud):
    app, keys, _ = cloud
    alice = keys["alice"]
    _, out = call(app, alice, {"Action": "DescribeAvailabilityZones", "ZoneName.1": "zone-b"})
    assert [z["ZoneName"] for z in out["AvailabilityZones"]] == ["zone-b"]
    _, out = call(app, alice, {"Action": "DescribeAvailabilityZones",
                               "Filter.1.Name": "state", "Filter.1.Value.1": "avail*"})  # fmt: skip
    assert [z["ZoneName"] for z in out["AvailabilityZones"]] == ["zone-a"]
    _, out = call(app, alice, {"Action": "DescribeInstanceTypes",
                               "Filter.1.Name": "vcpu-info.default-vcpus", "Filter.1.Value.1": "2"})  # fmt: skip
    assert [t["InstanceType"] for t in out["InstanceTypes"]] == ["m1.large"]
    _, out = call(
        app, alice, {"Action": "DescribeAccountAttributes", "AttributeName.1": "default-vpc"}
    )
    assert [a["AttributeName"] for a in out["AccountAttributes"]] == ["default-vpc"]
    _, out = call(app, alice, {"Action": "DescribeRegions"}, presign=True)  # GET, presigned
    assert out["Regions"][0]["RegionName"] == REGION


@pytest.mark.parametrize(
    ("params", "status", "code", "message"),
    [
        ({"Action": "DescribeSomething"}, 400, "InvalidAction", "DescribeSomething is not valid"),
        ({"Version": "2016-11-15"}, 400, "MissingAction", "parameter Action"),
        ({"Action": "DescribeInstanceTypes", "MaxResults": "1000"}, 400, "InvalidParameterValue",
         "Value (1000) for parameter MaxResults is invalid. Expecting a value between 5 and 100."),
        ({"Action": "DescribeInstanceTypes", "InstanceType.1": "m9.huge"}, 400,
         "InvalidInstanceType", "[m9.huge]"),
        ({"Action": "DescribeAvailabilityZones", "ZoneName.1": "zone-z"}, 400,
         "InvalidParameterValue", "Invalid availability zone: [zone-z]"),
        ({"Action": "DescribeRegions", "Filter.1.Name": "colour", "Filter.1.Value.1": "red"},
         400, "InvalidParameterValue", "The filter 'colour' is invalid"),
        ({"Action": "DescribeAccountAttributes", "AttributeName.1": "max-x"}, 400,
         "InvalidParameterValue", "Value (max-x) for parameter attributeName is invalid"),
    ],
)  # fmt: skip
def test_request_errors(cloud, params, status, code, message):
    app, keys, _ = cloud
    got_status, out = call(app, keys["alice"], params)
    assert (got_status, out["Error"]["Code"]) == (status, code)
    assert message in out["Error"]["Message"]


def test_authentication_errors_change_nothing(cloud):
    app, keys, state = cloud
    before = state.read_bytes()
    alice = keys["alice"]
    described = {"Action": "DescribeRegions"}
    cases = [
        (call(app, alice, described, secret="wrong"), 403, "SignatureDoesNotMatch"),
        (call(app, {**alice, "access_key_id": "AKINOSUCHKEY00000000"}, described), 401,
         "AuthFailure"),
        (call(app, alice, described, region="us-east-1"), 401, "AuthFailure"),
    ]  # fmt: skip
    unsigned = AWSRequest("POST", ENDPOINT, data=b"Action=DescribeRegions",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    cases.append((run(app, unsigned, "DescribeRegions"), 401, "AuthFailure"))
    assert state.read_bytes() == before
    Identity(StateStore(state)).set_key_status(alice["access_key_id"], active=False)
    before = state.read_bytes()
    cases.append((call(app, alice, described), 401, "AuthFailure"))
    assert state.read_bytes() == before
    for (status, out), want_status, want_code in cases:
        assert (status, out["Error"]["Code"]) == (want_status, want_code), out


def test_body_is_bounded_and_a_form(cloud, settings):
    _, keys, _ = cloud
    app = Api(settings, max_body_bytes=100)
    status, out = call(app, keys["admin"], {"Action": "DescribeRegions", "Pad": "x" * 200})
    assert (status, out["Error"]["Code"]) == (413, "RequestEntityTooLarge")
    request = AWSRequest("POST", ENDPOINT, data=b'{"Action": "DescribeRegions"}',
                         headers={"Content-Type": "application/json"})  # fmt: skip
    status, out = run(app, request, "DescribeRegions")
    assert (status, out["Error"]["Code"]) == (400, "InvalidParameterValue")


def test_handlers_run_as_the_key_owner_and_requests_are_logged(cloud, caplog):
    app, keys, _ = cloud

    @actions.action("WhoAmI")
    def who_am_i(request):
        return {"regionInfo": [{"regionName": str(current_owner())}]}

    alice = keys["alice"]
    try:
        app.actions = actions.ACTIONS
        with caplog.at_level(logging.INFO, logger="cloudctl.api"):
            # parsed as DescribeRegions: the same response layout
            status, out = call(app, alice, {"Action": "WhoAmI"}, parse_as="DescribeRegions")
            call(app, alice, {"Action": "Bad\nline"}, secret="wrong")
        assert status == 200 and out["Regions"][0]["RegionName"] == "dev/alice"
        assert current_owner() == ADMIN  # only for the request
    finally:
        del actions.ACTIONS["WhoAmI"]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith(
        f"action=WhoAmI principal=dev/alice key={alice['access_key_id']} status=200 code=- "
    )
    # a failed signature: who tried, and the client's text made one harmless word
    assert lines[1].startswith(
        f"action=Bad?line principal=- key={alice['access_key_id']} status=403 "
        "code=SignatureDoesNotMatch "
    )
    assert alice["secret_access_key"] not in caplog.text
    assert "Signature=" not in caplog.text


@pytest.mark.parametrize(
    ("error", "code", "status", "message"),
    [
        (errors.NotFound("instance i-0a1b2c3d does not exist"), "InvalidInstanceID.NotFound",
         400, "instance i-0a1b2c3d does not exist"),
        (errors.NotFound("volume vol-0a1b2c3d does not exist"), "InvalidVolume.NotFound", 400,
         None),
        (errors.NotFound("no key pair named k"), "InvalidParameterValue", 400, None),
        (errors.InputError("bad size 0"), "InvalidParameterValue", 400, "bad size 0"),
        (QuotaExceeded("quota ec2:quota-vminstancenumber of account dev is 4: 4 in use, 1 "
                       "more asked"), "ResourceLimitExceeded", 400, None),
        (errors.CapacityError("not enough capacity"), "InsufficientInstanceCapacity", 503,
         None),
        (errors.ConfigError("/etc/cloud/cloud.yml is malformed"), "Unavailable", 503,
         "The service is unavailable: see the service's log"),
        (errors.HostFailed("nc1", "Start the domain", "boom"), "InternalError", 500,
         "An internal error has occurred"),
        (KeyError("x"), "InternalError", 500, "An internal error has occurred"),
    ],
)  # fmt: skip
def test_one_place_maps_cloudctl_errors(error, code, status, message):
    mapped = api_error(error)
    assert (mapped.code, mapped.status) == (code, status)
    assert mapped.message == (message or str(error))


def test_serve_refuses_a_cloud_without_state(settings, tmp_path, monkeypatch):
    config = tmp_path / "cloud.yml"
    config.write_text(yaml.safe_dump(CLOUD))
    monkeypatch.setenv("CLOUDCTL_CONFIG", str(config))
    with pytest.raises(errors.CloudError, match="no state at"):
        Api(settings).config()
    assert not Path(settings.state_path).exists()
