"""cloudctl deploy."""

from __future__ import annotations

import click

from cloudctl import deploy as deploy_service
from cloudctl.cli.cloud import migration_text
from cloudctl.cli.common import CliContext, output_option, pass_context, task_progress
from cloudctl.cli.output import output_result


@click.command()
@click.option("--check", is_flag=True, help="Dry run: Ansible check mode with diffs.")
@click.option("--limit", metavar="HOSTS", help="Deploy only these hosts or groups.")
@click.option("--tags", metavar="TAGS", help="Run only tasks with these tags (comma-separated).")
@click.option(
    "-e",
    "--extra-var",
    "extra_vars",
    multiple=True,
    metavar="KEY=VALUE",
    help="Extra variable for the playbooks (repeatable).",
)
@output_option
@pass_context
def deploy(
    obj: CliContext,
    check: bool,
    limit: str | None,
    tags: str | None,
    extra_vars: tuple[str, ...],
    output: str | None,
) -> None:
    """Deploy or update the cloud on every host of the inventory (cloudctl.cloud.site)."""
    extravars = deploy_service.parse_extravars(extra_vars)
    settings = obj.resolve()  # the deploy makes the state of a new cloud
    if not check and (pending := deploy_service.merge_pending(settings)):  # an earlier one's
        click.echo(migration_text(pending, settings.state_path, settings.state_etcd), err=True)
    expected = deploy_service.expected_tasks(settings, check)
    with task_progress("Deploying", expected) as progress:
        result = deploy_service.deploy(
            settings, check=check, limit=limit, tags=tags, extravars=extravars, progress=progress
        )
    if result.stats:
        output_result(deploy_service.host_summary(result), obj.output_format(output))
        if check:
            click.echo("Check mode: nothing was changed.", err=True)
    result.raise_for_failures()
    if check:
        return
    settings, written, merged = deploy_service.record_cloud(settings)
    if merged:
        click.echo(migration_text(merged, settings.state_path, settings.state_etcd), err=True)
    if written:
        click.echo(f"State {settings.state_location} records this cloud.", err=True)
