"""STS's GetCallerIdentity: who the caller's keys belong to.

Clients ask it to learn their account id before they compare owners: amazon.aws's
ec2_security_group does on every run (module_utils.iam.get_aws_account_id), at the endpoint
it was given for EC2, signed for the service `sts`. Eucalyptus answered it from its STS
service; here the API answers it from the identity of the request's access key.
"""

from __future__ import annotations

from typing import Any

from cloudctl.api.actions import action
from cloudctl.api.request import ApiRequest
from cloudctl.identity import Identity


@action("GetCallerIdentity", service="sts")
def get_caller_identity(request: ApiRequest) -> dict[str, Any]:
    principal = request.principal
    number = Identity(request.store).account(principal.account)["number"]
    return {
        "GetCallerIdentityResult": {
            "UserId": str(principal),  # the user's id in this cloud: ACCOUNT/USER
            "Account": number,
            "Arn": f"arn:aws:iam::{number}:user/{principal.user}",
        }
    }
