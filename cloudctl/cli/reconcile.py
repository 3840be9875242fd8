"""cloudctl reconcile"""

from __future__ import annotations

import sys
from dataclasses import asdict

import click

from cloudctl.cli.common import CliContext, output_option, pass_context, task_progress
from cloudctl.cli.output import output_result
from cloudctl.errors import InputError
from cloudctl.reconcile import Drift, Reconciler

COLUMNS = ["kind", "resource", "host", "detail", "fix", "fixed"]


@click.command()
@click.option("--fix", is_flag=True, help="Repair what drifted (remove orphans, mark lost).")
@click.option(
    "--delete-orphans",
    is_flag=True,
    help="With --fix, also remove what the state never knew (instances, volumes...): lists "
    "them and asks first.",
)
@click.option("--yes", is_flag=True, help="Do not ask before --delete-orphans removes them.")
@output_option
@pass_context
def reconcile(
    obj: CliContext, fix: bool, delete_orphans: bool, yes: bool, output: str | None
) -> None:
    """Compare the state with the hosts and report each drift.

    Looks at libvirt domains, instance files, firewall chains and image cache files on the
    NCs, tgt targets and backing stores on the SCs, DHCP reservations and elastic IP NAT
    rules on the CCs, address allocations and interrupted operations in the state. Exits 0
    when nothing drifted (or, with --fix, everything was repaired), 1 otherwise.

    --fix never removes an instance, volume or cache file that the state has never known
    (it may hold the data of a cloud whose state was lost): only --delete-orphans does.
    """
    if delete_orphans and not fix:
        raise InputError("--delete-orphans works with --fix")
    if delete_orphans and not yes and not sys.stdin.isatty():
        raise InputError(
            "--delete-orphans asks before it deletes: give --yes when no one can answer"
        )
    with task_progress("Reconciling", None) as progress:
        drifts = Reconciler(obj.settings).run(
            fix=fix,
            progress=progress,
            delete_orphans=delete_orphans,
            confirm=(lambda orphans: True) if yes else _ask,
        )
    output_result([asdict(d) for d in drifts], obj.output_format(output), COLUMNS)
    left = [d for d in drifts if not d.fixed]
    click.echo(
        f"{len(drifts)} drift(s)" + (f", {len(drifts) - len(left)} repaired" if fix else ""),
        err=True,
    )
    if left:
        raise click.exceptions.Exit(1)


def _ask(orphans: list[Drift]) -> bool:
    click.echo("Unknown to the state, to be deleted with what they hold:", err=True)
    for d in orphans:
        click.echo(f"  {d.kind} {d.resource} on {d.host}: {d.detail}", err=True)
    return click.confirm(f"Delete these {len(orphans)}?", default=False, err=True)
