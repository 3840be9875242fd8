"""cloudctl reconcile"""

from __future__ import annotations

from dataclasses import asdict

import click

from cloudctl.cli.common import CliContext, output_option, pass_context, task_progress
from cloudctl.cli.output import output_result
from cloudctl.reconcile import Reconciler

COLUMNS = ["kind", "resource", "host", "detail", "fix", "fixed"]


@click.command()
@click.option("--fix", is_flag=True, help="Repair what drifted (remove orphans, mark lost).")
@output_option
@pass_context
def reconcile(obj: CliContext, fix: bool, output: str | None) -> None:
    """Compare the state with the hosts and report each drift.

    Looks at libvirt domains, instance files, firewall chains and image cache files on the
    NCs, tgt targets and backing stores on the SCs, DHCP reservations and elastic IP NAT
    rules on the CCs, address allocations and interrupted operations in the state. Exits 0
    when nothing drifted (or, with --fix, everything was repaired), 1 otherwise.
    """
    with task_progress("Reconciling", None) as progress:
        drifts = Reconciler(obj.settings).run(fix=fix, progress=progress)
    output_result([asdict(d) for d in drifts], obj.output_format(output), COLUMNS)
    left = [d for d in drifts if not d.fixed]
    click.echo(
        f"{len(drifts)} drift(s)" + (f", {len(drifts) - len(left)} repaired" if fix else ""),
        err=True,
    )
    if left:
        raise click.exceptions.Exit(1)
