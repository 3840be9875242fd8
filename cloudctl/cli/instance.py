"""cloudctl instance ..."""

from __future__ import annotations

from pathlib import Path

import click

from cloudctl.cli.common import CliContext, echo_check, output_option, pass_context, task_progress
from cloudctl.cli.output import output_result
from cloudctl.errors import InputError
from cloudctl.instances import Instances

LIST_COLUMNS = [
    "id", "image_id", "type", "zone", "node", "private_ip", "state", "keypair", "account"
]  # fmt: skip
SHOW_COLUMNS = [
    "id", "reservation", "image_id", "kernel_id", "ramdisk_id", "type", "zone", "node",
    "private_ip", "mac", "keypair", "state", "reason", "event", "account", "user", "created",
]  # fmt: skip


def _service(obj: CliContext) -> Instances:
    return Instances(obj.settings)


@click.group()
def instance() -> None:
    """Virtual machines (EC2 instances)."""


@instance.command("run")
@click.option("--image", "image_id", required=True, metavar="EMI", help="Machine image id.")
@click.option("--type", "type_name", default="m1.small", show_default=True, help="Instance type.")
@click.option("--count", default=1, show_default=True, type=int, help="How many to launch.")
@click.option("--zone", default=None, help="Availability zone (default: the first).")
@click.option("--keypair", default=None, help="Key pair whose public key the instance trusts.")
@click.option(
    "--user-data-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="User data for the instance (a script or #cloud-config, at most 16 KiB).",
)
@click.option(
    "--group",
    "groups",
    multiple=True,
    metavar="NAME|ID",
    help="Security group (repeatable; default: the group named default).",
)
@click.option("--check", is_flag=True, help="Dry run: show what would change on which host.")
@output_option
@pass_context
def run(
    obj: CliContext,
    image_id: str,
    type_name: str,
    count: int,
    zone: str | None,
    keypair: str | None,
    user_data_file: Path | None,
    groups: tuple[str, ...],
    check: bool,
    output: str | None,
) -> None:
    """Launch instances of an image; --count N launches them all in one play."""
    user_data = None
    if user_data_file is not None:
        try:
            user_data = user_data_file.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {user_data_file}: {exc.strerror}") from None
    service = _service(obj)
    with task_progress("Launching", None) as progress:
        result = service.run(
            image_id, type_name, count=count, zone=zone, keypair=keypair,
            user_data=user_data, groups=groups, check=check, progress=progress,
        )  # fmt: skip
    if result.check is not None:
        echo_check(result.check, obj.output_format(output))
        return
    output_result(result.instances, obj.output_format(output), LIST_COLUMNS)
    for entry in result.cache:
        click.echo(f"image {entry['sha256'][:12]} on {entry['node']}: {_cache_text(entry)}",
                   err=True)  # fmt: skip
    failed = [r for r in result.instances if r["state"] == "failed"]
    if failed:
        for r in failed:
            click.echo(f"Error: {r['id']} failed: {r['reason']}", err=True)
        raise click.exceptions.Exit(1)


@instance.command("list")
@click.option("--state", default=None, help="Only instances in this state.")
@click.option("--zone", default=None, help="Only instances in this zone.")
@output_option
@pass_context
def list_(obj: CliContext, state: str | None, zone: str | None, output: str | None) -> None:
    """List instances."""
    output_result(_service(obj).list(state, zone), obj.output_format(output), LIST_COLUMNS)


@instance.command("show")
@click.argument("instance_id", metavar="ID")
@output_option
@pass_context
def show(obj: CliContext, instance_id: str, output: str | None) -> None:
    """Show one instance."""
    output_result([_service(obj).get(instance_id)], obj.output_format(output), SHOW_COLUMNS)


def _cache_text(entry: dict) -> str:
    """`cache hit`, or what a download took: `downloaded 1024.0 MiB in 3.9 s (262.6 MiB/s)`."""
    if entry["hit"] or not entry.get("bytes"):
        return "cache hit" if entry["hit"] else "downloaded"
    mib, seconds = entry["bytes"] / 2**20, max(entry.get("seconds") or 0, 0.001)
    return f"downloaded {mib:.1f} MiB in {seconds:.1f} s ({mib / seconds:.1f} MiB/s)"


def _power_command(action: str, help_text: str) -> click.Command:
    @click.argument("instance_ids", nargs=-1, required=True, metavar="ID...")
    @output_option
    @pass_context
    def command(obj: CliContext, instance_ids: tuple[str, ...], output: str | None) -> None:
        service = _service(obj)
        with task_progress(action.capitalize(), None) as progress:
            if action == "terminate":
                records = service.terminate(instance_ids, progress=progress)
            else:
                records = service.power(instance_ids, action, progress=progress)
        output_result(records, obj.output_format(output), ["id", "state", "reason"])

    command.__doc__ = help_text
    return instance.command(action)(command)


_power_command("terminate", "Terminate instances: remove their domains, disks and addresses.")
_power_command("stop", "Stop instances (they keep their disks, addresses and node).")
_power_command("start", "Start stopped instances.")
_power_command("reboot", "Reboot running instances.")


@instance.command("console")
@click.argument("instance_id", metavar="ID")
@pass_context
def console(obj: CliContext, instance_id: str) -> None:
    """Print the serial console log of an instance."""
    click.echo(_service(obj).console(instance_id), nl=False)
