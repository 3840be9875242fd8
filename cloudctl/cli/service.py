"""cloudctl service ..."""

from __future__ import annotations

import click

from cloudctl import health
from cloudctl.cli.common import CliContext, output_option, pass_context, task_progress
from cloudctl.cli.output import output_result
from cloudctl.errors import CloudError


@click.group()
def service() -> None:
    """The cloud's services (components) on each host."""


@service.command("status")
@click.option("--limit", metavar="HOSTS", help="Only these hosts or groups.")
@output_option
@pass_context
def status(obj: CliContext, limit: str | None, output: str | None) -> None:
    """Check that every component answers on every host.

    Exits 1 when a component is unhealthy or a host is unreachable.
    """
    with task_progress("Checking", None) as progress:
        # Reads the hosts only: works on a cloud whose state is missing too.
        rows = health.service_status(obj.resolve(), limit=limit, progress=progress)
    output_result(rows, obj.output_format(output), ["host", "component", "status", "detail"])
    if not health.all_healthy(rows):
        bad = [r for r in rows if r.status != health.HEALTHY]
        raise CloudError(f"{len(bad)} of {len(rows)} components are not healthy")
