"""Images (EC2's DescribeImages, RegisterImage, DeregisterImage) over cloudctl.images.

Machine images (emi-), kernels (eki-) and ramdisks (eri-): an account sees its own and the
admin account's, which are public (the cloud's catalogue). RegisterImage registers a machine
image whose file the user uploaded to Walrus through the S3 gateway: ImageLocation is
"bucket/key" of an object in one of the account's buckets, KernelId and RamdiskId name
existing kernel and ramdisk images (kernels and ramdisks are registered by the operator with
`cloudctl image register`). Images are instance-store images: the root disk is a copy of the
image file on the NC.
"""

from __future__ import annotations

from typing import Any

from cloudctl import walrus
from cloudctl.api.actions import action
from cloudctl.api.actions.instances import ROOT_DEVICE
from cloudctl.api.errors import ApiError, invalid_value, not_found, short
from cloudctl.api.params import filter_items, paginate
from cloudctl.api.request import ApiRequest
from cloudctl.api.shapes import account_numbers, select, tag_set, tags_on_create
from cloudctl.identity import ADMIN_ACCOUNT
from cloudctl.images import IMAGES, ImageNameTaken, ImageNotFound, Images
from cloudctl.tags import Tags

IMAGE_KINDS = ("image", "kernel", "ramdisk")  # ids.PREFIXES: emi-, eki-, eri-
ARCHITECTURE = "x86_64"
SELF = "self"


def _tags(image: dict[str, Any]) -> dict[str, str]:
    return image.get("tags") or {}


def _public(image: dict[str, Any]) -> bool:
    return image["account"] == ADMIN_ACCOUNT


@action("DescribeImages")
def describe_images(request: ApiRequest) -> dict[str, Any]:
    """Owner.N: `self` or account numbers; ExecutableBy.N: `self`, `all` (public images) or
    account numbers (public images and the account's own)."""
    params = request.params
    wanted = params.resource_ids("ImageId", IMAGE_KINDS)
    owners = account_numbers(request)
    mine = owners.get(request.principal.account)
    owner_ids = {mine if o == SELF else o for o in params.list("Owner")}
    executable_by = {mine if e == SELF else e for e in params.list("ExecutableBy")}
    params.boolean("IncludeDeprecated")
    params.boolean("IncludeDisabled")
    images = select(Images(request.store).list(), wanted, "image")
    images = [
        i
        for i in images
        if (not owner_ids or owners.get(i["account"]) in owner_ids)
        and (not executable_by or _executable(i, executable_by, owners))
    ]
    fields = {
        **IMAGE_FILTERS,
        "owner-id": lambda i: owners.get(i["account"]),
    }
    chosen = filter_items(images, params.filters(), fields, tags=_tags)
    page, token = paginate(params, chosen, key=lambda i: i["id"], minimum=5, maximum=1000)
    return {"imagesSet": [_image(i, owners) for i in page], "nextToken": token}


def _executable(image: dict[str, Any], by: set[str], owners: dict[str, str]) -> bool:
    return _public(image) or owners.get(image["account"]) in by


IMAGE_FILTERS = {
    "image-id": lambda i: i["id"],
    "name": lambda i: i["name"],
    "description": lambda i: i.get("description", ""),
    "state": lambda i: i.get("state", "available"),
    "image-type": lambda i: i["kind"],
    "is-public": _public,
    "architecture": lambda i: ARCHITECTURE,
    "kernel-id": lambda i: i.get("kernel_id"),
    "ramdisk-id": lambda i: i.get("ramdisk_id"),
    "manifest-location": lambda i: _location(i),
    "root-device-type": lambda i: "instance-store",
    "virtualization-type": lambda i: "hvm",
    "hypervisor": lambda i: "kvm",
    "creation-date": lambda i: i["created"],
}


def _location(image: dict[str, Any]) -> str:
    """Where the image came from: the object a user registered, else the cloud's copy."""
    return image.get("location") or f"{IMAGES}/{image['sha256']}"


def _image(image: dict[str, Any], owners: dict[str, str]) -> dict[str, Any]:
    machine = image["kind"] == "machine"
    return {
        "imageId": image["id"],
        "imageLocation": _location(image),
        "imageState": image.get("state", "available"),
        "imageOwnerId": owners.get(image["account"]),
        "creationDate": image["created"],
        "isPublic": _public(image),
        "productCodes": [],
        "architecture": ARCHITECTURE,
        "imageType": image["kind"],
        "kernelId": image.get("kernel_id") if machine else None,
        "ramdiskId": image.get("ramdisk_id") if machine else None,
        "name": image["name"],
        "description": image.get("description") or None,
        "rootDeviceType": "instance-store",
        "rootDeviceName": ROOT_DEVICE if machine else None,
        "blockDeviceMapping": [],
        "virtualizationType": "hvm",
        "hypervisor": "kvm",
        "tagSet": tag_set(image),
    }


@action("RegisterImage")
def register_image(request: ApiRequest) -> dict[str, Any]:
    params = request.params
    location = params.string("ImageLocation", required=True)
    bucket, _, key = location.partition("/")
    if not bucket or not key:
        raise invalid_value(
            "ImageLocation",
            short(location),
            "Expecting BUCKET/KEY: an object uploaded to Walrus (S3) into one of your buckets.",
        )
    name = params.string("Name", required=True)
    description = params.string("Description", default="", max_length=255)
    kernel_id = params.resource_id("KernelId", "kernel")
    ramdisk_id = params.resource_id("RamdiskId", "ramdisk")
    params.string("Architecture", choices=(ARCHITECTURE,))
    params.string("VirtualizationType", choices=("hvm", "paravirtual"))  # both boot alike
    params.string("RootDeviceName")
    if params.members("BlockDeviceMapping"):
        raise ApiError(
            "InvalidParameterValue",
            "BlockDeviceMapping is not supported: images are image files in Walrus "
            "(instance store), registered by their ImageLocation",
        )
    tags = tags_on_create(params, "image")
    images = Images(request.store, walrus.client(request.config.walrus))
    try:
        image = images.register_stored(
            name, bucket, key, kernel_id=kernel_id, ramdisk_id=ramdisk_id, description=description
        )
    except ImageNameTaken:
        raise ApiError(
            "InvalidAMIName.Duplicate", f"AMI name {short(name)} is already in use"
        ) from None
    if tags:
        Tags(request.store).create([image["id"]], tags)
    return {"imageId": image["id"]}


@action("DeregisterImage")
def deregister_image(request: ApiRequest) -> dict[str, Any]:
    """Deregister one of the account's images (its file goes when no other image uses it)."""
    params = request.params
    image_id = params.resource_id("ImageId", IMAGE_KINDS, required=True)
    params.boolean("DeleteAssociatedSnapshots")  # images have no snapshots
    try:
        Images(request.store, walrus.client(request.config.walrus)).deregister(image_id)
    except ImageNotFound:
        raise not_found("image", image_id) from None
    return {"return": True}
