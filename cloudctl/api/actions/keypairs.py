"""Key pairs (EC2's CreateKeyPair, ImportKeyPair, DescribeKeyPairs, DeleteKeyPair) over
cloudctl.keypairs.

Key pairs are named per account, as on EC2. CreateKeyPair makes an ed25519 key (OpenSSH
format) and answers its private key once; nothing keeps it. ImportKeyPair takes an OpenSSH
public key line (ssh-ed25519, ssh-rsa of at least 2048 bits, ecdsa-sha2-nistp256), base64 as
EC2 takes it. A key pair's id is the record's id, ACCOUNT:NAME; fingerprints are SHA256 as
`ssh-keygen -l` prints them. Deleting a key pair that does not exist succeeds, as on EC2.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cloudctl.api.actions import action
from cloudctl.api.errors import ApiError, invalid_value, missing_parameter, short
from cloudctl.api.params import Params, filter_items
from cloudctl.api.request import ApiRequest
from cloudctl.errors import InputError
from cloudctl.keypairs import KeyPairNotFound, KeyPairs, parse_public_key, validate_name

KEY_TYPES = {"ssh-ed25519": "ed25519", "ssh-rsa": "rsa", "ecdsa-sha2-nistp256": "ecdsa"}


def _new_name(request: ApiRequest) -> str:
    """KeyName of a new key pair: valid, and not one of the account's key pairs yet."""
    name = request.params.string("KeyName", required=True)
    validate_name(name)
    try:
        KeyPairs(request.store).show(name)
    except KeyPairNotFound:
        return name
    raise ApiError("InvalidKeyPair.Duplicate", f"The keypair '{short(name)}' already exists.")


def _no_tags(params: Params) -> None:
    if params.tag_specifications():
        raise ApiError("InvalidParameterValue", "Tags on key pairs are not supported")


def _pair(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "keyPairId": record["id"],
        "keyName": record["name"],
        "keyFingerprint": record["fingerprint"],
        "keyType": KEY_TYPES.get(record["type"]),
        "tagSet": [],
        "createTime": record["created"],
    }


@action("CreateKeyPair")
def create_key_pair(request: ApiRequest) -> dict[str, Any]:
    params = request.params
    name = _new_name(request)
    key_type = params.string("KeyType", default="ed25519")
    if key_type != "ed25519":
        raise invalid_value(
            "KeyType",
            short(key_type),
            "This cloud makes ed25519 key pairs: import an RSA key with ImportKeyPair.",
        )
    params.string("KeyFormat", choices=("pem",))
    _no_tags(params)
    record, private_key = KeyPairs(request.store).create(name)
    pair = _pair(record)
    return {
        "keyName": pair["keyName"],
        "keyFingerprint": pair["keyFingerprint"],
        "keyMaterial": private_key,
        "keyPairId": pair["keyPairId"],
        "tagSet": [],
    }


@action("ImportKeyPair")
def import_key_pair(request: ApiRequest) -> dict[str, Any]:
    params = request.params
    name = _new_name(request)
    material = params.string("PublicKeyMaterial", required=True)
    _no_tags(params)
    try:
        text = base64.b64decode("".join(material.split()), validate=True).decode("utf-8")
        parse_public_key(text, "PublicKeyMaterial")
    except (binascii.Error, ValueError):
        raise ApiError(
            "InvalidKey.Format", "PublicKeyMaterial: not base64 of an OpenSSH public key line"
        ) from None
    except InputError as exc:
        raise ApiError("InvalidKey.Format", str(exc)) from None
    record = KeyPairs(request.store).import_(name, text, "PublicKeyMaterial")
    pair = _pair(record)
    return {k: pair[k] for k in ("keyFingerprint", "keyName", "keyPairId", "tagSet")}


@action("DescribeKeyPairs")
def describe_key_pairs(request: ApiRequest) -> dict[str, Any]:
    params = request.params
    names = params.list("KeyName")
    ids = params.list("KeyPairId")
    include_public_key = params.boolean("IncludePublicKey")
    records = KeyPairs(request.store).list()
    for name in names:
        if not any(r["name"] == name for r in records):
            raise ApiError(
                "InvalidKeyPair.NotFound", f"The key pair '{short(name)}' does not exist"
            )
    for kid in ids:
        if not any(r["id"] == kid for r in records):
            raise ApiError(
                "InvalidKeyPair.NotFound", f"The key pair ID '{short(kid)}' does not exist"
            )
    chosen = [
        r for r in records if (not names or r["name"] in names) and (not ids or r["id"] in ids)
    ]
    chosen = filter_items(
        chosen,
        params.filters(),
        {
            "key-name": lambda r: r["name"],
            "key-pair-id": lambda r: r["id"],
            "fingerprint": lambda r: r["fingerprint"],
            "key-type": lambda r: KEY_TYPES.get(r["type"]),
        },
        tags=lambda r: {},  # key pairs carry no tags: tag filters match none
    )
    pairs = []
    for r in chosen:
        pair = _pair(r)
        if include_public_key:
            pair["publicKey"] = r["public_key"]
        pairs.append(pair)
    return {"keySet": pairs}


@action("DeleteKeyPair")
def delete_key_pair(request: ApiRequest) -> dict[str, Any]:
    """By KeyName or KeyPairId (of the caller's account); a missing one is not an error."""
    params = request.params
    name = params.string("KeyName")
    kid = params.string("KeyPairId")
    if not name and not kid:
        raise missing_parameter("KeyName")
    keypairs = KeyPairs(request.store)
    if kid:
        account = request.principal.account
        name = next(
            (r["name"] for r in keypairs.list() if r["id"] == kid and r["account"] == account),
            None,
        )
    deleted = None
    if name:
        try:
            deleted = keypairs.delete(name)
        except KeyPairNotFound:
            pass
    return {"return": True, "keyPairId": deleted["id"] if deleted else None}
