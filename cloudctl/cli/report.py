"""cloudctl report ..."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from cloudctl import reports, usage
from cloudctl.cli.common import CliContext, pass_context
from cloudctl.cli.output import render
from cloudctl.identity import current_owner
from cloudctl.services import checked_state

REPORT_FORMATS = ("table", "csv", "json", "yaml", "html")


@click.group()
def report() -> None:
    """Usage reports from the cloud's accounting records."""


@report.command("usage")
@click.option(
    "--type", "report_type", type=click.Choice(reports.REPORT_TYPES), required=True,
    help="What to report on.",
)  # fmt: skip
@click.option("--from", "start", metavar="T", help="Start (UTC ISO date or date and time; "
              "default: 24 hours before --to).")  # fmt: skip
@click.option("--to", "end", metavar="T", help="End, excluded (default: now).")
@click.option("--account", metavar="NAME", default=None, help="Only this account.")
@click.option(
    "--format", "fmt", type=click.Choice(REPORT_FORMATS), default=None,
    help="Output format (default: the global -o, else table).",
)  # fmt: skip
@click.option(
    "--output-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Write the report to this file instead of standard output.",
)  # fmt: skip
@pass_context
def usage_(
    obj: CliContext,
    report_type: str,
    start: str | None,
    end: str | None,
    account: str | None,
    fmt: str | None,
    output_file: Path | None,
) -> None:
    """Instance-hours by type, GB-hours, address-hours and counts per account and user over
    [--from, --to), from the state (read only). Semantics: cloudctl/reports.py."""
    window = reports.Window.parse(start, end)
    owner = current_owner()
    if not owner.admin:  # a user reports on their own account only
        if account not in (None, owner.account):
            raise click.UsageError(f"--account: {owner} may report on account {owner.account} only")
        account = owner.account
    with checked_state(obj.settings) as snap:
        docs = snap.table(usage.TABLE).all()
    result = reports.usage_report(docs, report_type, window, account)
    text = _render(result, fmt or obj.output)
    if output_file is None:
        click.echo(text)
        return
    output_file.write_text(text + "\n", encoding="utf-8")
    click.echo(f"{report_type} usage report written to {output_file}", err=True)


def _render(result: reports.Report, fmt: str) -> str:
    if fmt == "table":
        title = f"{result.type} usage from {reports.iso(result.window.start)} to "
        title += reports.iso(result.window.end)
        return title + "\n\n" + render(result.shown_rows(), "table", result.columns)
    if fmt == "yaml":
        return yaml.safe_dump(result.document(), sort_keys=False).rstrip("\n")
    renderers = {"csv": reports.to_csv, "json": reports.to_json, "html": reports.to_html}
    return renderers[fmt](result)
