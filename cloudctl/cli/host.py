"""cloudctl host ...: the SSH host keys of the inventory's hosts."""

from __future__ import annotations

import click

from cloudctl import hostkeys
from cloudctl.cli.common import CliContext, output_option, pass_context
from cloudctl.cli.output import output_result

COLUMNS = ["host", "address", "type", "fingerprint"]


@click.group()
def host() -> None:
    """SSH host keys of the inventory's hosts (the known_hosts file next to hosts.yml).

    Ansible and cloudctl talk only to hosts that show the key recorded there.
    """


@host.command("list")
@output_option
@pass_context
def list_hosts(obj: CliContext, output: str | None) -> None:
    """Each host reached over SSH with the fingerprint of its recorded key, or "unknown"."""
    rows = hostkeys.known(obj.resolve())
    output_result(rows, obj.output_format(output), COLUMNS)


@host.command("trust")
@click.argument("hosts", nargs=-1, metavar="[HOST]...")
@click.option(
    "--replace",
    is_flag=True,
    help="Replace recorded keys that differ from the offered ones (check the new ones first).",
)
@output_option
@pass_context
def trust(obj: CliContext, hosts: tuple[str, ...], replace: bool, output: str | None) -> None:
    """Record the host keys that HOSTs (default: every host reached over SSH) offer now.

    Prints the SHA256 fingerprint of every key recorded; compare them with the host's own
    (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on its console). A host whose
    recorded key differs is refused, unless --replace. Nothing is written unless every host
    can be trusted.
    """
    settings = obj.resolve()  # before the deploy: no state yet
    rows = hostkeys.trust(settings, hosts, replace=replace)
    output_result(rows, obj.output_format(output), [*COLUMNS, "status"])
    click.echo(f"Host keys: {hostkeys.known_hosts_path(settings)}", err=True)
