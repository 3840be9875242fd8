"""cloudctl tag ..."""

from __future__ import annotations

import click

from cloudctl.cli.common import CliContext, output_option, pass_context
from cloudctl.cli.output import output_result
from cloudctl.errors import InputError
from cloudctl.state import open_store
from cloudctl.tags import Tags


def _service(obj: CliContext) -> Tags:
    return Tags(open_store(obj.settings))


def _pairs(texts: tuple[str, ...], value_required: bool) -> dict[str, str | None]:
    pairs: dict[str, str | None] = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if value_required and not sep:
            raise InputError(f"bad tag {text[:40]!r}: KEY=VALUE")
        pairs[key] = value if sep else None
    return pairs


@click.group()
def tag() -> None:
    """Tags (KEY=VALUE) on instances, volumes, snapshots, images and security groups."""


@tag.command("set")
@click.argument("resource_id")
@click.argument("tags", nargs=-1, required=True, metavar="KEY=VALUE...")
@pass_context
def tag_set(obj: CliContext, resource_id: str, tags: tuple[str, ...]) -> None:
    """Add or change tags of a resource."""
    _service(obj).create([resource_id], _pairs(tags, value_required=True))
    click.echo(f"{resource_id}: {len(tags)} tag(s) set")


@tag.command("unset")
@click.argument("resource_id")
@click.argument("keys", nargs=-1, required=True, metavar="KEY[=VALUE]...")
@pass_context
def tag_unset(obj: CliContext, resource_id: str, keys: tuple[str, ...]) -> None:
    """Remove tags of a resource (KEY=VALUE only when the value matches)."""
    _service(obj).delete([resource_id], _pairs(keys, value_required=False))
    click.echo(f"{resource_id}: tag(s) removed")


@tag.command("list")
@output_option
@pass_context
def tag_list(obj: CliContext, output: str | None) -> None:
    """List every tag of the resources you see."""
    rows = _service(obj).list()
    output_result(rows, obj.output_format(output), ["resource_id", "resource_type", "key", "value"])
