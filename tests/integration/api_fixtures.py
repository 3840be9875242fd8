"""The EC2 and S3 API of the shared cloud-in-a-box (`ops_cloud`), as its users reach it.

`ops_api` (session scope) serves the ops cloud's API with a real `cloudctl api serve` process
for that cloud's settings (its inventory and home, as tests/integration/cloud_client.py runs
cloudctl), over TLS on 127.0.0.1 with a CA and a certificate made here, and makes two accounts
as an operator would: `dev` (user alice) and `other` (user bob), each with an access key from
`cloudctl user key create` (JSON output). One server for every API test of the session;
teardown stops it by its PID.

    def test_x(ops_api):
        ec2 = ops_api.ec2("dev")                 # boto3, alice's keys, the CA, the region
        s3 = ops_api.s3("other")                 # path-style S3 through the gateway
        out = ops_api.aws("dev", "ec2", "describe-instances")   # awscli, JSON parsed
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from cloudctl.api.request import region_of
from cloudctl.cloudconfig import load_config
from tests.integration.cloud_client import BIN, CloudClient
from tests.integration.test_api_server import AWS, api_serving, free_port, make_tls

USERS = {"dev": "alice", "other": "bob"}  # account -> its user


@dataclass(frozen=True)
class ApiUser:
    account: str
    user: str
    access_key_id: str
    secret_access_key: str = field(repr=False)


@dataclass
class OpsApi:
    """Where the ops cloud's API listens and who may use it."""

    cloud: CloudClient
    endpoint: str  # https://127.0.0.1:PORT/
    ca: Path  # the CA that signed the server's certificate (boto3's verify, awscli's --ca-bundle)
    region: str
    users: dict[str, ApiUser]  # by account name
    log: Path  # the server's log (one line per request)
    pid: int
    aws_config: Path  # awscli's config: the region, path-style S3

    @property
    def state(self) -> Path:
        return self.cloud.home / "state.json"

    def ec2(self, account: str, **config: Any) -> Any:
        """A boto3 EC2 client with the account's user's keys (no retries: a test sees every
        answer as it is)."""
        return self._client("ec2", account, Config(retries={"max_attempts": 1}, **config))

    def s3(self, account: str) -> Any:
        """A boto3 S3 client of the gateway, path-style (the endpoint is an address)."""
        return self._client(
            "s3",
            account,
            Config(
                s3={"addressing_style": "path"},
                signature_version="s3v4",
                retries={"max_attempts": 1},
            ),
        )

    def _client(self, service: str, account: str, config: Config) -> Any:
        user = self.users[account]
        return boto3.session.Session().client(
            service, endpoint_url=self.endpoint, region_name=self.region, verify=str(self.ca),
            aws_access_key_id=user.access_key_id, aws_secret_access_key=user.secret_access_key,
            config=config,
        )  # fmt: skip

    def aws_env(self, account: str) -> dict[str, str]:
        """awscli's environment for the account's user: its keys, the config file."""
        user = self.users[account]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        return env | {
            "AWS_ACCESS_KEY_ID": user.access_key_id,
            "AWS_SECRET_ACCESS_KEY": user.secret_access_key,
            "AWS_CONFIG_FILE": str(self.aws_config),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.aws_config.with_name("no-credentials")),
            "AWS_PAGER": "",
        }

    def aws(self, account: str, *args: str, ok: bool = True) -> Any:
        """Debian's awscli against the endpoint with the CA: when `ok`, its output (parsed
        when JSON: `aws ec2 ...`; text: `aws s3 ...`), else the CompletedProcess (for its exit
        code and stderr)."""
        proc = subprocess.run(
            [str(AWS), *args, "--endpoint-url", self.endpoint, "--ca-bundle", str(self.ca),
             "--output", "json"],
            env=self.aws_env(account), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if not ok:
            return proc
        assert proc.returncode == 0, f"aws {' '.join(args)}:\n{proc.stderr}"
        try:
            return json.loads(proc.stdout) if proc.stdout.strip() else {}
        except ValueError:
            return proc.stdout


def _cloudctl_env(cloud: CloudClient) -> dict[str, str]:
    """The environment CloudClient.cloudctl runs cloudctl in."""
    env = dict(os.environ, CLOUDCTL_HOME=str(cloud.home), PATH=f"{BIN}:{os.environ['PATH']}")
    env.pop("CLOUDCTL_CONFIG", None)
    return env


@pytest.fixture(scope="session")
def ops_api(ops_cloud, tmp_path_factory):
    cloud = ops_cloud
    work = tmp_path_factory.mktemp("ops-api")
    ca, cert, key = make_tls(work)
    port = free_port()
    users = {}
    for account, user in USERS.items():
        cloud.cloudctl("account", "create", account)
        cloud.cloudctl("user", "create", f"{account}/{user}")
        [made] = cloud.json("user", "key", "create", f"{account}/{user}")
        users[account] = ApiUser(account, user, made["access_key_id"], made["secret_access_key"])
    log = work / "api.log"
    argv = ["--inventory", str(cloud.inventory), "api", "serve",
            "--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "16",
            "--certfile", str(cert), "--keyfile", str(key)]  # fmt: skip
    with api_serving(argv, _cloudctl_env(cloud), port, log, deadline_s=60) as server:
        region = region_of(load_config(cloud.home / "cloud.yml"))
        aws_config = work / "aws-config"
        aws_config.write_text(f"[default]\nregion = {region}\ns3 =\n  addressing_style = path\n")
        yield OpsApi(
            cloud=cloud, endpoint=f"https://127.0.0.1:{port}/", ca=ca, region=region,
            users=users, log=log, pid=server.pid, aws_config=aws_config,
        )  # fmt: skip
