"""cloudctl cloud ... (named clouds) and cloudctl state ... (the state of a cloud)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from cloudctl.cli.common import CliContext, output_option, pass_context
from cloudctl.cli.output import output_result
from cloudctl.cloudconfig import get_config
from cloudctl.config import (
    NamedCloud,
    add_cloud,
    clouds_file,
    load_clouds,
    parse_state,
    remove_cloud,
)
from cloudctl.errors import ConfigError
from cloudctl.state import EtcdStore, Migration, StateStore, migrate, open_store

_FILE = click.Path(exists=True, dir_okay=False)


@click.group()
def cloud() -> None:
    """Named clouds: which inventory, home and state each one uses (the clouds file)."""


@cloud.command("add")
@click.argument("name")
@click.option(
    "--inventory", "inventory", required=True, type=click.Path(path_type=Path),
    help="The cloud's Ansible inventory.",
)  # fmt: skip
@click.option(
    "--home", type=click.Path(path_type=Path), default=None,
    help="Its runs, state and configuration copy (default: ~/.cloudctl/NAME).",
)  # fmt: skip
@click.option("--state", type=click.Path(path_type=Path), default=None,
              help="Its state file (default: HOME/state.json).")  # fmt: skip
@click.option("--default", "make_default", is_flag=True, help="Make it the default cloud.")
def add(
    name: str, inventory: Path, home: Path | None, state: Path | None, make_default: bool
) -> None:
    """Name a cloud, so that `cloudctl --cloud NAME` (or, for the default one, plain
    `cloudctl`) works on it from any shell."""
    path = clouds_file()
    named = NamedCloud(
        name=name,
        inventory=inventory.expanduser().absolute(),
        home=(home or Path.home() / ".cloudctl" / name).expanduser().absolute(),
        state=state.expanduser().absolute() if state else None,
    )
    changed = add_cloud(path, named, make_default)
    click.echo(f"cloud {name!r} {'named' if changed else 'unchanged'} in {path}", err=True)


@cloud.command("list")
@output_option
@pass_context
def list_(obj: CliContext, output: str | None) -> None:
    """The named clouds; the default one is marked."""
    default, clouds = load_clouds(clouds_file())
    rows = [
        {
            "name": c.name,
            "default": c.name == default,
            "inventory": str(c.inventory),
            "home": str(c.home),
            "state": str(c.state or c.home / "state.json"),
        }
        for c in clouds.values()
    ]
    output_result(
        rows, obj.output_format(output), ["name", "default", "inventory", "home", "state"]
    )


@cloud.command("remove")
@click.argument("name")
def remove(name: str) -> None:
    """Forget a named cloud; its inventory, home and state stay where they are."""
    path = clouds_file()
    remove_cloud(path, name)
    click.echo(f"cloud {name!r} removed from {path}", err=True)


@click.group()
def state() -> None:
    """The state of the cloud: which cloud it describes, what it holds."""


@state.command("show")
@output_option
@pass_context
def show(obj: CliContext, output: str | None) -> None:
    """Where the state is, the cloud it records, and how many records each table holds."""
    settings = obj.settings  # refuses a missing or foreign state
    with open_store(settings).snapshot() as snap:
        row = {"path": settings.state_location, "cloud_id": snap.identity()}
        row |= {table: len(snap.table(table)) for table in sorted(snap.tables())}
    output_result([row], obj.output_format(output), list(row))


@state.command("init")
@pass_context
def init(obj: CliContext) -> None:
    """Record the deployed cloud in its state: starts an empty state when there is none
    (a lost state), adopts a state that records no cloud, refuses another cloud's state.
    `cloudctl deploy` does this by itself."""
    settings = obj.resolve()
    config = get_config(settings)
    written = open_store(settings).initialize(config.cloud_id, config.cloud_name)
    verb = "now records" if written else "already records"
    click.echo(
        f"state {settings.state_location} {verb} cloud {config.cloud_id} ({config.cloud_name})"
    )


@state.command("migrate")
@click.option(
    "--endpoints", default=None,
    help="The etcd members' client URLs, comma-separated (default: cloud.yml's state:).",
)  # fmt: skip
@click.option("--prefix", default=None, help="Key prefix (default: /cloudctl/CLOUD_ID/).")
@click.option("--ca-file", type=_FILE, default=None, help="CA of the members' certificates.")
@click.option("--cert-file", type=_FILE, default=None, help="Client certificate.")
@click.option("--key-file", type=_FILE, default=None, help="The client certificate's key.")
@click.option(
    "--merge", is_flag=True,
    help="Add the file to a state of this cloud that etcd holds already (refused when they "
    "disagree); secrets are encrypted again with the shared state's identity key.",
)  # fmt: skip
@pass_context
def migrate_(
    obj: CliContext,
    endpoints: str | None,
    prefix: str | None,
    ca_file: str | None,
    cert_file: str | None,
    key_file: str | None,
    merge: bool,
) -> None:
    """Copy the state file into etcd (a single CLC becomes a pair), check the copy, and
    rename the file to FILE.migrated-TIME. Without options, etcd is the one cloud.yml's
    state: names. Refused when etcd already holds a state (unless --merge); nothing to do
    when the file is gone (migrated already). `cloudctl deploy` merges the state file of
    the cloudctl that deploys by itself when the deploy makes a CLC pair."""
    settings = obj.resolve()  # the etcd state does not exist yet: nothing to check
    source = StateStore(settings.state_path)  # type: ignore[arg-type]
    if not source.path.is_file():
        click.echo(f"nothing to migrate: there is no state file at {source.path}")
        return
    if endpoints is not None:
        with source.snapshot() as snap:
            cloud_id = snap.identity()  # the default prefix names it
        spec = {"backend": "etcd", "endpoints": endpoints, "prefix": prefix,
                "ca_file": ca_file, "cert_file": cert_file, "key_file": key_file}  # fmt: skip
        config = parse_state(spec, "state migrate", cloud_id)
    else:
        config = settings.state_etcd
    if config is None:
        raise ConfigError(
            "no etcd to migrate to: give --endpoints, or name it in cloud.yml's state:"
        )
    if merge:
        from cloudctl.deploy import merge_state  # the deploy's code: only when needed

        done = merge_state(replace(settings, state_etcd=config))
    else:
        done = migrate(source, EtcdStore(config))
    click.echo(migration_text(done, source.path, config))


def migration_text(done: Migration, path: Path, target: object) -> str:
    """What `state migrate` (and a deploy that merged a state) did, in two lines."""
    counts = ", ".join(f"{table} {n}" for table, n in done.tables.items()) or "no records"
    if done.merged:
        first = (
            f"merged the state of cloud {done.cloud_id} from {path} into {target}: added "
            f"{counts}; {done.allocations} allocated values; {done.kept} records kept as etcd "
            "had them"
        )
    else:
        first = (
            f"migrated the state of cloud {done.cloud_id} from {path} to {target}: {counts}; "
            f"{done.allocations} allocated values"
        )
    return f"{first}\nthe file is now {done.moved_to}"
