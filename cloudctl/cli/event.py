"""cloudctl event ..."""

from __future__ import annotations

import click

from cloudctl.cli.common import CliContext, output_option, pass_context
from cloudctl.cli.output import output_result
from cloudctl.events import list_events, show_event

LIST_COLUMNS = ["id", "operation", "started", "seconds", "status", "hosts_failed"]
SHOW_COLUMNS = ["id", "operation", "started", "seconds", "status", "tasks", "hosts_failed"]
RESULT_COLUMNS = ["task", "host", "status", "message"]


@click.group()
def event() -> None:
    """Operations cloudctl ran through Ansible (kept under $CLOUDCTL_HOME/runs)."""


@event.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Show the N newest.")
@click.option("--operation", default=None, help="Only events of this operation (e.g. deploy).")
@output_option
@pass_context
def list_(obj: CliContext, limit: int | None, operation: str | None, output: str | None) -> None:
    """List events, newest first (seconds: how long the operation took)."""
    events = list_events(obj.settings, limit=limit, operation=operation)
    output_result(events, obj.output_format(output), LIST_COLUMNS)


@event.command("show")
@click.argument("event_id", metavar="ID")
@output_option
@pass_context
def show(obj: CliContext, event_id: str, output: str | None) -> None:
    """Show event ID: its summary and, per task and host, the status and a message."""
    detail = show_event(obj.settings, event_id)
    fmt = obj.output_format(output)
    if fmt != "table":
        output_result([detail], fmt)
        return
    output_result([detail], fmt, SHOW_COLUMNS)
    if detail.get("error"):
        click.echo(f"error: {detail['error']}")
    if detail["results"]:
        click.echo()
        output_result(detail["results"], fmt, RESULT_COLUMNS)
