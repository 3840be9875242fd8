"""cloudctl: the click command group, global options and error handling."""

from __future__ import annotations

import importlib
import logging
import traceback
from typing import Any

import click

from cloudctl.cli.common import CliContext
from cloudctl.cli.output import FORMATS
from cloudctl.errors import error_lines, exit_code_for
from cloudctl.identity import acting_as, parse_principal

# Command -> the module that defines it. A command's module, and the service layer behind
# it, is imported when the command runs: importing them all made every start-up slower.
COMMANDS = {
    "account": "cloudctl.cli.identity",
    "address": "cloudctl.cli.network",
    "api": "cloudctl.cli.api",
    "cloud": "cloudctl.cli.cloud",
    "deploy": "cloudctl.cli.deploy",
    "event": "cloudctl.cli.event",
    "group": "cloudctl.cli.network",
    "host": "cloudctl.cli.host",
    "image": "cloudctl.cli.image",
    "instance": "cloudctl.cli.instance",
    "keypair": "cloudctl.cli.keypair",
    "quota": "cloudctl.cli.identity",
    "reconcile": "cloudctl.cli.reconcile",
    "report": "cloudctl.cli.report",
    "service": "cloudctl.cli.service",
    "snapshot": "cloudctl.cli.volume",
    "state": "cloudctl.cli.cloud",
    "tag": "cloudctl.cli.tag",
    "user": "cloudctl.cli.identity",
    "volume": "cloudctl.cli.volume",
    "zone": "cloudctl.cli.network",
}


class CloudGroup(click.Group):
    """Turns every error into `Error: <one line>` and an exit code (a traceback with --debug);
    loads each command when it is used (COMMANDS)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS and cmd_name not in self.commands:
            self.add_command(getattr(importlib.import_module(COMMANDS[cmd_name]), cmd_name))
        return super().get_command(ctx, cmd_name)

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
