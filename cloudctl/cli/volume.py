"""cloudctl volume ... and cloudctl snapshot ..."""

from __future__ import annotations

import click

from cloudctl.cli.common import (
    CliContext,
    echo_check,
    output_option,
    pass_context,
    task_progress,
)
from cloudctl.cli.output import output_result
from cloudctl.runner import PlayResult
from cloudctl.volumes import Volumes

LIST_COLUMNS = [
    "id", "size_gb", "zone", "state", "instance", "device", "snapshot_id", "account"
]  # fmt: skip
SHOW_COLUMNS = [
    "id", "size_gb", "zone", "sc", "state", "reason", "instance", "device", "attach_state",
    "snapshot_id", "iqn", "event", "account", "user", "created",
]  # fmt: skip
SNAPSHOT_COLUMNS = [
    "id", "volume_id", "size_gb", "state", "compressed_bytes", "created", "account"
]  # fmt: skip


def _service(obj: CliContext) -> Volumes:
    return Volumes(obj.settings)


def _flat(record: dict) -> dict:
    """A volume with its attachment's fields on top (no CHAP secret)."""
    attachment = record.get("attachment") or {}
    flat = {k: v for k, v in record.items() if k not in ("chap_secret", "attachment")}
    flat.update(
        instance=attachment.get("instance"),
        device=attachment.get("device"),
        attach_state=attachment.get("state"),
    )
    return flat


def _echo(obj: CliContext, records: list[dict], output: str | None, columns: list[str]) -> None:
    output_result([_flat(r) for r in records], obj.output_format(output), columns)


def _echo_record_or_check(obj: CliContext, result: dict | PlayResult, output: str | None) -> None:
    if isinstance(result, PlayResult):
        echo_check(result, obj.output_format(output))
    else:
        _echo(obj, [result], output, LIST_COLUMNS)


@click.group()
def volume() -> None:
    """Block volumes (EBS-style, iSCSI from the zone's storage controller)."""


@volume.command("create")
@click.option("--size", "size_gb", type=int, default=None, help="Size in GiB.")
@click.option("--zone", default=None, help="Availability zone (default: the first).")
@click.option("--snapshot", "snapshot_id", default=None, help="Restore this snapshot.")
@click.option("--check", is_flag=True, help="Dry run: show what would change on which host.")
@output_option
@pass_context
def create(
    obj: CliContext, size_gb: int | None, zone: str | None, snapshot_id: str | None,
    check: bool, output: str | None,
) -> None:  # fmt: skip
    """Create a volume, empty or from a snapshot."""
    with task_progress("Creating", None) as progress:
        record = _service(obj).create(size_gb, zone, snapshot_id, progress=progress, check=check)
    _echo_record_or_check(obj, record, output)


@volume.command("list")
@click.option("--state", default=None, help="Only volumes in this state.")
@click.option("--zone", default=None, help="Only volumes in this zone.")
@output_option
@pass_context
def list_(obj: CliContext, state: str | None, zone: str | None, output: str | None) -> None:
    """List volumes."""
    _echo(obj, _service(obj).list(state, zone), output, LIST_COLUMNS)


@volume.command("show")
@click.argument("volume_id", metavar="VOL")
@output_option
@pass_context
def show(obj: CliContext, volume_id: str, output: str | None) -> None:
    """Show one volume."""
    _echo(obj, [_service(obj).get(volume_id)], output, SHOW_COLUMNS)


@volume.command("delete")
@click.argument("volume_id", metavar="VOL")
@output_option
@pass_context
def delete(obj: CliContext, volume_id: str, output: str | None) -> None:
    """Delete a volume (refused while it is attached)."""
    with task_progress("Deleting", None) as progress:
        record = _service(obj).delete(volume_id, progress=progress)
    _echo(obj, [record], output, LIST_COLUMNS)


@volume.command("attach")
@click.argument("volume_id", metavar="VOL")
@click.option("--instance", "instance_id", required=True, metavar="ID", help="Instance id.")
@click.option("--device", default=None, help="Device name hint (vdb..vdz); the guest may differ.")
@click.option("--check", is_flag=True, help="Dry run: show what would change on which host.")
@output_option
@pass_context
def attach(
    obj: CliContext, volume_id: str, instance_id: str, device: str | None, check: bool,
    output: str | None,
) -> None:  # fmt: skip
    """Attach a volume to an instance of its zone (the guest sees /dev/disk/by-id/virtio-VOL)."""
    with task_progress("Attaching", None) as progress:
        record = _service(obj).attach(volume_id, instance_id, device, progress=progress,
                                      check=check)  # fmt: skip
    _echo_record_or_check(obj, record, output)


@volume.command("detach")
@click.argument("volume_id", metavar="VOL")
@output_option
@pass_context
def detach(obj: CliContext, volume_id: str, output: str | None) -> None:
    """Detach a volume from its instance."""
    with task_progress("Detaching", None) as progress:
        record = _service(obj).detach(volume_id, progress=progress)
    _echo(obj, [record], output, LIST_COLUMNS)


@click.group()
def snapshot() -> None:
    """Snapshots of volumes, kept in Walrus (bucket snapshots)."""


@snapshot.command("create")
@click.argument("volume_id", metavar="VOL")
@output_option
@pass_context
def snapshot_create(obj: CliContext, volume_id: str, output: str | None) -> None:
    """Snapshot a volume (crash-consistent while attached, as EBS)."""
    with task_progress("Snapshotting", None) as progress:
        record = _service(obj).snapshot(volume_id, progress=progress)
    output_result([record], obj.output_format(output), SNAPSHOT_COLUMNS)


@snapshot.command("list")
@output_option
@pass_context
def snapshot_list(obj: CliContext, output: str | None) -> None:
    """List snapshots."""
    output_result(_service(obj).list_snapshots(), obj.output_format(output), SNAPSHOT_COLUMNS)


@snapshot.command("show")
@click.argument("snapshot_id", metavar="SNAP")
@output_option
@pass_context
def snapshot_show(obj: CliContext, snapshot_id: str, output: str | None) -> None:
    """Show one snapshot."""
    columns = [*SNAPSHOT_COLUMNS, "size_bytes", "sha256", "reason", "event"]
    output_result([_service(obj).get_snapshot(snapshot_id)], obj.output_format(output), columns)


@snapshot.command("delete")
@click.argument("snapshot_id", metavar="SNAP")
@pass_context
def snapshot_delete(obj: CliContext, snapshot_id: str) -> None:
    """Delete a snapshot and its object in Walrus."""
    record = _service(obj).delete_snapshot(snapshot_id)
    click.echo(f"snapshot {record['id']} deleted")
