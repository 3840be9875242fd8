"""cloudctl account ..., cloudctl user ..., cloudctl quota ..."""

from __future__ import annotations

from pathlib import Path

import click

from cloudctl import identity
from cloudctl.cli.common import CliContext, output_option, pass_context
from cloudctl.cli.output import output_result
from cloudctl.cloudconfig import get_config
from cloudctl.errors import InputError
from cloudctl.identity import Identity, parse_principal
from cloudctl.quotas import KEYS, Quotas
from cloudctl.state import open_store

ACCOUNT_COLUMNS = ["name", "number", "created"]
USER_COLUMNS = ["account", "name", "created"]
KEY_COLUMNS = ["access_key_id", "account", "user", "status", "created"]


def _identity(obj: CliContext) -> Identity:
    return Identity(open_store(obj.settings))


@click.group()
def account() -> None:
    """Accounts: each owns its resources, users and quotas (the admin account sees all)."""


@account.command("create")
@click.argument("name")
@output_option
@pass_context
def account_create(obj: CliContext, name: str, output: str | None) -> None:
    """Create account NAME with its user `admin`."""
    record = _identity(obj).create_account(name)
    output_result([record], obj.output_format(output), ACCOUNT_COLUMNS)


@account.command("list")
@output_option
@pass_context
def account_list(obj: CliContext, output: str | None) -> None:
    """List the accounts."""
    output_result(_identity(obj).list_accounts(), obj.output_format(output), ACCOUNT_COLUMNS)


@account.command("show")
@click.argument("name")
@output_option
@pass_context
def account_show(obj: CliContext, name: str, output: str | None) -> None:
    """Show account NAME."""
    output_result([_identity(obj).account(name)], obj.output_format(output), ACCOUNT_COLUMNS)


@account.command("delete")
@click.argument("name")
@pass_context
def account_delete(obj: CliContext, name: str) -> None:
    """Delete account NAME, its users and keys (refused while it owns resources)."""
    _identity(obj).delete_account(name)
    click.echo(f"account {name} deleted")


@click.group()
def user() -> None:
    """Users of accounts (ACCOUNT/USER) and their access keys."""


@user.command("create")
@click.argument("name", metavar="ACCOUNT/USER")
@output_option
@pass_context
def user_create(obj: CliContext, name: str, output: str | None) -> None:
    """Create a user in an account."""
    record = _identity(obj).create_user(parse_principal(name))
    output_result([record], obj.output_format(output), USER_COLUMNS)


@user.command("list")
@click.option("--account", "account_name", metavar="ACCOUNT", help="Only this account's users.")
@output_option
@pass_context
def user_list(obj: CliContext, account_name: str | None, output: str | None) -> None:
    """List the users."""
    users = _identity(obj).list_users(account_name)
    output_result(users, obj.output_format(output), USER_COLUMNS)


@user.command("delete")
@click.argument("name", metavar="ACCOUNT/USER")
@pass_context
def user_delete(obj: CliContext, name: str) -> None:
    """Delete a user and its access keys (its resources stay its account's)."""
    principal = parse_principal(name)
    _identity(obj).delete_user(principal)
    click.echo(f"user {principal} deleted")


@user.group("key")
def key() -> None:
    """Access keys (id + secret) for the EC2 and S3 APIs."""


@key.command("create")
@click.argument("name", metavar="ACCOUNT/USER")
@output_option
@pass_context
def key_create(obj: CliContext, name: str, output: str | None) -> None:
    """Create an access key and print its secret: the only time it is shown."""
    record = _identity(obj).create_key(parse_principal(name))
    output_result(
        [record], obj.output_format(output), ["access_key_id", "secret_access_key", "status"]
    )


@key.command("list")
@click.argument("name", metavar="ACCOUNT/USER", required=False)
@output_option
@pass_context
def key_list(obj: CliContext, name: str | None, output: str | None) -> None:
    """List access keys (of one user, or all); never their secrets."""
    principal = parse_principal(name) if name else None
    output_result(_identity(obj).list_keys(principal), obj.output_format(output), KEY_COLUMNS)


@key.command("deactivate")
@click.argument("key_id", metavar="ACCESS_KEY_ID")
@pass_context
def key_deactivate(obj: CliContext, key_id: str) -> None:
    """Make a key inactive: requests signed with it are refused."""
    _identity(obj).set_key_status(key_id, active=False)
    click.echo(f"access key {key_id} is inactive")


@key.command("activate")
@click.argument("key_id", metavar="ACCESS_KEY_ID")
@pass_context
def key_activate(obj: CliContext, key_id: str) -> None:
    """Make a key active again."""
    _identity(obj).set_key_status(key_id, active=True)
    click.echo(f"access key {key_id} is active")


@key.command("delete")
@click.argument("key_id", metavar="ACCESS_KEY_ID")
@pass_context
def key_delete(obj: CliContext, key_id: str) -> None:
    """Delete an access key."""
    _identity(obj).delete_key(key_id)
    click.echo(f"access key {key_id} deleted")


@user.command("credentials")
@click.argument("name", metavar="ACCOUNT/USER")
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="New directory for the files `credentials`, `config` and `eucarc` (0600).",
)
@pass_context
def user_credentials(obj: CliContext, name: str, output_dir: Path) -> None:
    """Create an access key and write ready-to-use credentials files for it.

    `credentials` and `config` are an AWS profile named ACCOUNT-USER with the cloud's
    endpoints (AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE), `eucarc` the same as exports.
    """
    principal = parse_principal(name)
    if output_dir.exists():
        raise InputError(f"{output_dir} already exists: give a new directory")
    config = get_config(obj.settings)
    if config.api is None:
        raise InputError("the cloud has no API endpoint in its configuration (deploy it)")
    key_record = _identity(obj).create_key(principal)
    # sts: clients (amazon.aws) ask GetCallerIdentity of the same service.
    endpoints = dict.fromkeys(("ec2", "s3", "sts"), config.api.endpoint)
    paths = identity.credentials_files(
        output_dir, principal, key_record, endpoints, config.api.region, config.api.ca_file
    )
    click.echo(f"access key {key_record['access_key_id']} of {principal}:")
    for path in paths:
        click.echo(f"  {path}")


@click.group()
def quota() -> None:
    """Quotas of accounts and users (Eucalyptus's quota keys)."""


@quota.command("set")
@click.argument("target", metavar="ACCOUNT[/USER]")
@click.argument("key_name", metavar="KEY", type=click.Choice(list(KEYS)))
@click.argument("limit", metavar="LIMIT")
@pass_context
def quota_set(obj: CliContext, target: str, key_name: str, limit: str) -> None:
    """Set a quota (LIMIT `none` removes it). Units: vCPUs, MB of memory and of S3
    storage, GB of disk and volumes, else counts."""
    if limit == "none":
        value = None
    else:
        try:
            value = int(limit)
        except ValueError:
            raise InputError(f"bad limit {limit!r}: a whole number or `none`") from None
    Quotas(open_store(obj.settings)).set(target, key_name, value)
    click.echo(f"{key_name} of {target}: {limit}")


@quota.command("show")
@click.argument("target", metavar="ACCOUNT[/USER]")
@output_option
@pass_context
def quota_show(obj: CliContext, target: str, output: str | None) -> None:
    """Every quota key of an account or user with its limit and what is in use."""
    rows = Quotas(open_store(obj.settings)).show(target)
    output_result(rows, obj.output_format(output), ["key", "limit", "used"])
