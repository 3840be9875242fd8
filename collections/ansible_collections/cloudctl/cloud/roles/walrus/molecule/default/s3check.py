"""Talk to Walrus the way its clients do and print what happened as JSON (molecule verify).

    s3check.py CREDENTIALS_FILE               the checks below
    s3check.py CREDENTIALS_FILE BUCKET KEY    put one small object, print {"put": KEY}

With the credentials from the file: list the buckets, put/get/delete an object in the images
bucket. Without credentials (unsigned requests, as an anonymous client): GET the bucket list,
GET and PUT an object. Runs on the Walrus host with Debian's python3-boto3.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
import uuid

import boto3
from botocore.config import Config


def anonymous(method: str, url: str, body: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def main(credentials_file: str, put: list[str]) -> None:
    with open(credentials_file) as f:
        creds = json.load(f)
    endpoint = creds["endpoint"]
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=creds["access_key"],
        aws_secret_access_key=creds["secret_key"],
        region_name="us-east-1",
        config=Config(connect_timeout=10, read_timeout=10, s3={"addressing_style": "path"}),
    )
    if put:
        s3.put_object(Bucket=put[0], Key=put[1], Body=b"molecule")
        print(json.dumps({"put": put[1]}))
        return
    buckets = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    bucket = "images"
    key = f"molecule-{uuid.uuid4().hex}"
    body = uuid.uuid4().bytes * 4096  # 64 KiB
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    refused = {
        "list": anonymous("GET", f"{endpoint}/"),
        "get": anonymous("GET", f"{endpoint}/{bucket}/{key}"),
        "put": anonymous("PUT", f"{endpoint}/{bucket}/anonymous-{key}", b"x"),
    }
    anonymous_put_landed = (
        s3.list_objects_v2(Bucket=bucket, Prefix=f"anonymous-{key}").get("KeyCount", 0) > 0
    )
    read_back = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.delete_object(Bucket=bucket, Key=key)
    left = s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0)
    print(
        json.dumps(
            {
                "buckets": sorted(buckets),
                "roundtrip": read_back == body,
                "deleted": left == 0,
                "anonymous": refused,
                "anonymous_put_landed": anonymous_put_landed,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:4])
