"""cloudctl: the click command group, global options and error handling."""

from __future__ import annotations

import logging
import traceback
from typing import Any

import click

from cloudctl.cli.api import api
from cloudctl.cli.cloud import cloud, state
from cloudctl.cli.common import CliContext
from cloudctl.cli.deploy import deploy
from cloudctl.cli.event import event
from cloudctl.cli.host import host
from cloudctl.cli.identity import account, quota, user
from cloudctl.cli.image import image
from cloudctl.cli.instance import instance
from cloudctl.cli.keypair import keypair
from cloudctl.cli.network import address, group, zone
from cloudctl.cli.output import FORMATS
from cloudctl.cli.reconcile import reconcile
from cloudctl.cli.report import report
from cloudctl.cli.service import service
from cloudctl.cli.tag import tag
from cloudctl.cli.volume import snapshot, volume
from cloudctl.errors import error_lines, exit_code_for
from cloudctl.identity import acting_as, parse_principal


class CloudGroup(click.Group):
    """Turns every error into `Error: <one line>` and an exit code (a traceback with --debug)."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            raise _one_line_usage(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _one_line_usage(exc) from None
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 (every error ends as one line)
            obj = ctx.find_object(CliContext)
            if obj is not None and obj.debug:
                traceback.print_exc()
            for line in error_lines(exc):
                click.echo(f"Error: {line}", err=True)
            ctx.exit(exit_code_for(exc))


def _one_line_usage(error: click.UsageError) -> click.UsageError:
    """Without its context click prints a usage error as `Error: ...` alone (exit 2), not
    after the usage text and a --help hint."""
    error.ctx = None
    return error


@click.group(cls=CloudGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-o",
    "--output",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--inventory",
    type=click.Path(),
    default=None,
    help="Ansible inventory of the cloud, instead of a named cloud ($CLOUDCTL_INVENTORY).",
)
@click.option(
    "--cloud",
    metavar="NAME",
    default=None,
    help="Named cloud of the clouds file (default: $CLOUDCTL_CLOUD, else its default cloud).",
)
@click.option(
    "--as",
    "as_user",
    metavar="ACCOUNT/USER",
    default=None,
    help="Act as this user: only its account's resources, its quotas (default: the admin).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(package_name="cloudctl", prog_name="cloudctl")
@click.pass_context
def cli(
    ctx: click.Context,
    output: str,
    inventory: str | None,
    cloud: str | None,
    as_user: str | None,
    debug: bool,
) -> None:
    """Operate a Eucalyptus-style private cloud deployed with Ansible."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING)
    if debug:  # botocore's debug log holds request signatures (a presigned URL's is one)
        for name in ("boto3", "botocore", "s3transfer", "urllib3"):
            logging.getLogger(name).setLevel(logging.INFO)
    principal = parse_principal(as_user) if as_user else None
    ctx.obj = CliContext(
        output=output, inventory=inventory, cloud=cloud, debug=debug, principal=principal
    )
    if principal is not None:
        ctx.with_resource(acting_as(principal))


cli.add_command(deploy)
cli.add_command(keypair)
cli.add_command(service)
cli.add_command(instance)
cli.add_command(volume)
cli.add_command(snapshot)
cli.add_command(group)
cli.add_command(address)
cli.add_command(zone)
cli.add_command(image)
cli.add_command(event)
cli.add_command(host)
cli.add_command(reconcile)
cli.add_command(cloud)
cli.add_command(state)
cli.add_command(account)
cli.add_command(user)
cli.add_command(quota)
cli.add_command(tag)
cli.add_command(report)
cli.add_command(api)
