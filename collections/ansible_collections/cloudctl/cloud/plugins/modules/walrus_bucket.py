#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Create or delete a bucket of the cloud's object store (Walrus, S3 API) with boto3."""

from __future__ import annotations

DOCUMENTATION = r"""
module: walrus_bucket
short_description: Create or delete an S3 bucket on Walrus (SeaweedFS S3)
description:
  - Makes sure a bucket exists (or does not) on an S3 endpoint, for the Walrus buckets of
    the cloud (C(images), C(snapshots)).
  - Decides from C(ListBuckets) (which also proves the credentials work) and C(HeadBucket),
    then calls C(CreateBucket) or C(DeleteBucket) only when the bucket is not as wanted.
  - In check mode it reports what it would change and changes nothing; diff mode shows the
    bucket's state before and after. When the endpoint does not answer in check mode (the
    first check-mode deploy of a host, where S3 is not running yet) it predicts the change
    and warns instead of failing.
  - C(state=absent) refuses a bucket that still holds objects unless I(force=true), which
    deletes its objects and aborts its unfinished multipart uploads first.
requirements:
  - boto3 (Debian C(python3-boto3)) on the host that runs the module
options:
  endpoint:
    description: S3 endpoint URL, C(http://HOST:PORT).
    type: str
    required: true
  access_key:
    description: Access key of an identity allowed to list, create and delete buckets.
    type: str
    required: true
  secret_key:
    description: Secret key of that identity.
    type: str
    required: true
  name:
    description: Bucket name (3-63 characters, lowercase letters, digits, C(.) and C(-)).
    type: str
    required: true
  state:
    description: Whether the bucket must exist.
    type: str
    choices: [present, absent]
    default: present
  force:
    description: With C(state=absent), delete a bucket that still holds objects.
    type: bool
    default: false
  region:
    description: Region name used to sign the requests.
    type: str
    default: us-east-1
  timeout:
    description: Seconds to wait for one S3 request.
    type: int
    default: 10
  wait_timeout:
    description:
      - Seconds to keep trying while the endpoint does not answer yet (a daemon that has
        just started). C(0) tries once. Ignored in check mode.
    type: int
    default: 0
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports what would change and changes nothing.
  diff_mode:
    support: full
    details: Shows the bucket's state before and after.
  platform:
    platforms: posix
author:
  - cloudctl developers (@cloudctl)
"""

EXAMPLES = r"""
- name: Create the images bucket, waiting up to a minute for S3 to come up
  cloudctl.cloud.walrus_bucket:
    endpoint: http://127.0.0.1:8773
    access_key: "{{ walrus_credentials.access_key }}"
    secret_key: "{{ walrus_credentials.secret_key }}"
    name: images
    wait_timeout: 60

- name: Delete a bucket and everything in it
  cloudctl.cloud.walrus_bucket:
    endpoint: http://127.0.0.1:8773
    access_key: "{{ walrus_credentials.access_key }}"
    secret_key: "{{ walrus_credentials.secret_key }}"
    name: scratch
    state: absent
    force: true
"""

RETURN = r"""
name:
  description: The bucket name.
  type: str
  returned: always
exists:
  description: Whether the bucket exists after the task (predicted in check mode).
  type: bool
  returned: always
objects_deleted:
  description: Objects deleted by I(force=true) (predicted in check mode).
  type: int
  returned: when state=absent
"""

import re
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    HAS_BOTO3 = True
except ImportError:
    HAS_BOTO3 = False

BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
NOT_FOUND = {"404", "NoSuchBucket", "NotFound"}


class Unreachable(Exception):
    """The endpoint did not answer (connection refused, timeout, 5xx)."""


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_server_error(exc: ClientError) -> bool:
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500


class Walrus:
    """The S3 calls the module needs, with S3 errors turned into fail_json messages."""

    def __init__(self, module: AnsibleModule) -> None:
        p = module.params
        self.module = module
        self.endpoint = p["endpoint"]
        self.s3 = boto3.client(
            "s3",
            endpoint_url=p["endpoint"],
            aws_access_key_id=p["access_key"],
            aws_secret_access_key=p["secret_key"],
            region_name=p["region"],
            config=Config(
                connect_timeout=p["timeout"],
                read_timeout=p["timeout"],
                retries={"max_attempts": 1},
                s3={"addressing_style": "path"},
            ),
        )

    def fail(self, action: str, exc: Exception) -> None:
        self.module.fail_json(msg=f"S3 {action} at {self.endpoint} failed: {exc}")

    def list_buckets(self) -> list[str]:
        """Bucket names; raises Unreachable while the endpoint cannot serve requests."""
        try:
            return [b["Name"] for b in self.s3.list_buckets().get("Buckets", [])]
        except (EndpointConnectionError, BotoCoreError) as exc:
            raise Unreachable(str(exc)) from exc
        except ClientError as exc:
            if is_server_error(exc):
                raise Unreachable(str(exc)) from exc
            self.fail("ListBuckets", exc)

    def wait_list_buckets(self, wait_timeout: int) -> list[str]:
        deadline = time.monotonic() + wait_timeout
        while True:
            try:
                return self.list_buckets()
            except Unreachable as exc:
                if time.monotonic() >= deadline:
                    if wait_timeout:
                        raise Unreachable(f"no answer after {wait_timeout} s: {exc}") from exc
                    raise
            time.sleep(0.5)

    def bucket_exists(self, name: str, listed: list[str]) -> bool:
        if name in listed:
            return True
        try:
            self.s3.head_bucket(Bucket=name)
        except ClientError as exc:
            if error_code(exc) in NOT_FOUND:
                return False
            self.fail(f"HeadBucket {name}", exc)
        # Exists but is not listed: someone else's bucket.
        self.module.fail_json(
            msg=f"bucket {name} exists at {self.endpoint} but belongs to another identity"
        )

    def object_keys(self, name: str) -> list[str]:
        keys = []
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=name):
                keys += [o["Key"] for o in page.get("Contents", [])]
        except (ClientError, BotoCoreError) as exc:
            self.fail(f"ListObjectsV2 {name}", exc)
        return keys

    def create(self, name: str) -> None:
        try:
            self.s3.create_bucket(Bucket=name)
        except ClientError as exc:
            if error_code(exc) != "BucketAlreadyOwnedByYou":
                self.fail(f"CreateBucket {name}", exc)
        except BotoCoreError as exc:
            self.fail(f"CreateBucket {name}", exc)

    def empty(self, name: str, keys: list[str]) -> None:
        try:
            for start in range(0, len(keys), 1000):
                batch = [{"Key": k} for k in keys[start : start + 1000]]
                answer = self.s3.delete_objects(Bucket=name, Delete={"Objects": batch})
                if answer.get("Errors"):
                    first = answer["Errors"][0]
                    self.module.fail_json(
                        msg=f"S3 DeleteObjects {name} at {self.endpoint} "
                        f"failed for {first.get('Key')}: "
                        f"{first.get('Message')}"
                    )
            uploads = self.s3.list_multipart_uploads(Bucket=name).get("Uploads", [])
            for upload in uploads:
                self.s3.abort_multipart_upload(
                    Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
                )
        except (ClientError, BotoCoreError) as exc:
            self.fail(f"emptying {name}", exc)

    def delete(self, name: str) -> None:
        try:
            self.s3.delete_bucket(Bucket=name)
        except (ClientError, BotoCoreError) as exc:
            self.fail(f"DeleteBucket {name}", exc)


def core(module: AnsibleModule) -> dict:
    p = module.params
    name, state = p["name"], p["state"]
    if not BUCKET_NAME.match(name) or ".." in name:
        module.fail_json(
            msg=f"bucket name {name!r} is not a valid S3 bucket name "
            "(3-63 characters: lowercase letters, digits, '.', '-')"
        )
    walrus = Walrus(module)
    result = {"changed": False, "name": name}

    try:
        listed = walrus.wait_list_buckets(0 if module.check_mode else p["wait_timeout"])
    except Unreachable as exc:
        if not module.check_mode:
            module.fail_json(msg=f"S3 endpoint {p['endpoint']} does not answer: {exc}")
        # Check mode before the daemon ever ran: predict from the wanted state.
        module.warn(
            f"S3 endpoint {p['endpoint']} does not answer; predicting that bucket "
            f"{name} would be {'created' if state == 'present' else 'left alone'}"
        )
        result.update(changed=state == "present", exists=state == "present")
        if state == "absent":
            result["objects_deleted"] = 0
        return result

    exists = walrus.bucket_exists(name, listed)
    keys = walrus.object_keys(name) if exists and state == "absent" else []
    result["exists"] = state == "present"
    result["changed"] = exists != (state == "present")
    result["diff"] = {
        "before": {"bucket": name, "exists": exists},
        "after": {"bucket": name, "exists": state == "present"},
    }
    if state == "absent":
        if keys and not p["force"]:
            module.fail_json(
                msg=f"bucket {name} at {p['endpoint']} holds {len(keys)} "
                "object(s); use force=true to delete them with it"
            )
        result["objects_deleted"] = len(keys)
    if module.check_mode or not result["changed"]:
        return result

    if state == "present":
        walrus.create(name)
    else:
        walrus.empty(name, keys)
        walrus.delete(name)
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            endpoint=dict(type="str", required=True),
            access_key=dict(type="str", required=True, no_log=True),
            secret_key=dict(type="str", required=True, no_log=True),
            name=dict(type="str", required=True),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            force=dict(type="bool", default=False),
            region=dict(type="str", default="us-east-1"),
            timeout=dict(type="int", default=10),
            wait_timeout=dict(type="int", default=0),
        ),
        supports_check_mode=True,
    )
    if not HAS_BOTO3:
        module.fail_json(msg=missing_required_lib("boto3 (Debian package python3-boto3)"))
    module.exit_json(**core(module))


if __name__ == "__main__":
    main()
