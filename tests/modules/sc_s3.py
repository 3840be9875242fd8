"""S3 client steps of the SC snapshot tests, run inside the test host's network namespace
(where SeaweedFS listens): reads one JSON request on stdin, prints one JSON answer.

ops: bucket (wait for S3, make the bucket), start (create a multipart upload, presign its
part URLs), finish (complete the upload, presign a GET), put (an object, body in base64),
presign_get.
"""

from __future__ import annotations

import base64
import json
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError


def client(req: dict):
    return boto3.client(
        "s3", endpoint_url=req["endpoint"], aws_access_key_id=req["access_key"],
        aws_secret_access_key=req["secret_key"], region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            signature_version=req.get("signature", "s3v4"),
        ),
    )  # fmt: skip


def presign_get(s3, req: dict) -> str:
    return s3.generate_presigned_url(
        "get_object", Params={"Bucket": req["bucket"], "Key": req["key"]}, ExpiresIn=3600
    )


def main() -> None:
    req = json.load(sys.stdin)
    s3 = client(req)
    op = req["op"]
    if op == "bucket":
        deadline = time.monotonic() + 90  # SeaweedFS may still be starting
        while True:
            try:
                if req["bucket"] not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
                    s3.create_bucket(Bucket=req["bucket"])
                break
            except (BotoCoreError, ClientError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        answer = {}
    elif op == "start":
        upload = s3.create_multipart_upload(Bucket=req["bucket"], Key=req["key"])["UploadId"]
        urls = [
            s3.generate_presigned_url(
                "upload_part",
                Params={
                    "Bucket": req["bucket"],
                    "Key": req["key"],
                    "UploadId": upload,
                    "PartNumber": n,
                },
                ExpiresIn=3600,
            )
            for n in range(1, req["parts"] + 1)
        ]
        answer = {"upload_id": upload, "urls": urls}
    elif op == "finish":
        parts = [{"PartNumber": p["part_number"], "ETag": p["etag"]} for p in req["parts"]]
        s3.complete_multipart_upload(
            Bucket=req["bucket"], Key=req["key"], UploadId=req["upload_id"],
            MultipartUpload={"Parts": parts},
        )  # fmt: skip
        head = s3.head_object(Bucket=req["bucket"], Key=req["key"])
        answer = {"size": head["ContentLength"], "url": presign_get(s3, req)}
    elif op == "put":
        s3.put_object(Bucket=req["bucket"], Key=req["key"], Body=base64.b64decode(req["body"]))
        answer = {"url": presign_get(s3, req)}
    elif op == "presign_get":
        answer = {"url": presign_get(s3, req)}
    else:
        raise SystemExit(f"unknown op {op}")
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
