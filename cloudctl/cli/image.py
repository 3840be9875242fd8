"""cloudctl image ..."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cloudctl import walrus
from cloudctl.cli.common import CliContext, output_option, pass_context, stdout_is_tty
from cloudctl.cli.output import output_result
from cloudctl.cloudconfig import get_config
from cloudctl.images import KINDS, Images
from cloudctl.state import open_store

LIST_COLUMNS = ["id", "name", "kind", "format", "size", "kernel_id", "ramdisk_id", "state"]
SHOW_COLUMNS = [
    "id", "name", "kind", "format", "size", "sha256", "kernel_id", "ramdisk_id",
    "description", "state", "account", "user", "created",
]  # fmt: skip
REGISTER_COLUMNS = ["kind", "id", "file", "size", "object", "record"]


def _service(obj: CliContext, s3: bool = False) -> Images:
    store = open_store(obj.settings)
    if not s3:
        return Images(store)
    config = get_config(obj.settings)
    store.check(config.cloud_id)
    return Images(store, walrus.client(config.walrus))


class _Bars:
    """One click progress bar per stage (reading, uploading a file), on a terminal only."""

    def __init__(self) -> None:
        self.label: str | None = None
        self.bar: Any = None

    def __call__(self, label: str, total: int, advanced: int) -> None:
        if label != self.label:
            self.close()
            self.label = label
            self.bar = click.progressbar(length=total, label=label, show_pos=False, width=24)
            self.bar.__enter__()
        self.bar.update(advanced)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


@click.group()
def image() -> None:
    """Machine images, kernels and ramdisks kept in Walrus."""


@image.command("register")
@click.argument("name")
@click.option(
    "--file",
    "file",
    type=click.Path(path_type=Path),
    required=True,
    help="The disk image (qcow2 or raw).",
)
@click.option("--kernel", type=click.Path(path_type=Path), help="A kernel to boot it with.")
@click.option("--ramdisk", type=click.Path(path_type=Path), help="An initramfs for the kernel.")
@click.option("--description", default="", help="Free text shown by `image show`.")
@output_option
@pass_context
def register(
    obj: CliContext,
    name: str,
    file: Path,
    kernel: Path | None,
    ramdisk: Path | None,
    description: str,
    output: str | None,
) -> None:
    """Register the disk image FILE as machine image NAME (EMI).

    Each file is stored once in Walrus under its sha256: a file Walrus already holds is not
    uploaded again. --kernel/--ramdisk register an EKI/ERI, or reuse the one of that file.
    """
    bars = _Bars() if stdout_is_tty() else None
    try:
        result = _service(obj, s3=True).register(
            name, file, kernel=kernel, ramdisk=ramdisk, description=description, progress=bars
        )
    finally:
        if bars is not None:
            bars.close()
    output_result(result.files, obj.output_format(output), REGISTER_COLUMNS)


@image.command("list")
@click.option("--kind", type=click.Choice(KINDS), default=None, help="Only images of this kind.")
@output_option
@pass_context
def list_(obj: CliContext, kind: str | None, output: str | None) -> None:
    """List images, kernels and ramdisks."""
    output_result(_service(obj).list(kind), obj.output_format(output), LIST_COLUMNS)


@image.command("show")
@click.argument("image_ref", metavar="ID|NAME")
@output_option
@pass_context
def show(obj: CliContext, image_ref: str, output: str | None) -> None:
    """Show one image by id (emi-/eki-/eri-) or by name."""
    output_result([_service(obj).show(image_ref)], obj.output_format(output), SHOW_COLUMNS)


@image.command("deregister")
@click.argument("image_id", metavar="ID")
@pass_context
def deregister(obj: CliContext, image_id: str) -> None:
    """Deregister an image; its Walrus object goes when no other image uses it.

    A kernel or ramdisk still used by a machine image is refused.
    """
    record = _service(obj, s3=True).deregister(image_id)
    what = "object deleted" if record["object_deleted"] else "object kept: other images use it"
    click.echo(f"{record['kind']} image {record['id']} ({record['name']}) deregistered; {what}")
