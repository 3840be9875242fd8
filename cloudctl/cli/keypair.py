"""cloudctl keypair ..."""

from __future__ import annotations

import os
from pathlib import Path

import click

from cloudctl.cli.common import CliContext, output_option, pass_context
from cloudctl.cli.output import output_result
from cloudctl.errors import CloudError, InputError, error_lines
from cloudctl.keypairs import KeyPairs
from cloudctl.state import open_store

LIST_COLUMNS = ["name", "type", "fingerprint", "created", "account"]
SHOW_COLUMNS = ["name", "type", "fingerprint", "account", "user", "created", "public_key"]


def _service(obj: CliContext) -> KeyPairs:
    return KeyPairs(open_store(obj.settings))


@click.group()
def keypair() -> None:
    """SSH key pairs for instances (only the public key is kept)."""


@keypair.command("create")
@click.argument("name")
@click.option(
    "--output-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the private key to this new file (mode 0600) instead of stdout.",
)
@pass_context
def create(obj: CliContext, name: str, output_file: Path | None) -> None:
    """Generate an ed25519 key pair NAME and print its private key once.

    Only the public key is stored: save the private key now, it cannot be shown again.
    """
    service = _service(obj)
    if output_file is None:
        _, private = service.create(name)
        click.echo(private, nl=not private.endswith("\n"))
        return
    try:
        fd = os.open(output_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise InputError(f"{output_file} already exists: not overwriting it") from None
    except OSError as exc:
        raise InputError(f"cannot create {output_file}: {exc.strerror}") from None
    os.fchmod(fd, 0o600)  # whatever the umask
    key_file = os.fdopen(fd, "w")

    def deliver(private: str) -> None:
        try:
            with key_file:
                key_file.write(private)
                key_file.flush()
                os.fsync(key_file.fileno())
        except OSError as exc:
            raise CloudError(f"cannot write {output_file}: {exc.strerror}") from None

    try:
        record, _ = service.create(name, deliver=deliver)
    except BaseException:
        key_file.close()
        output_file.unlink(missing_ok=True)
        raise
    finally:
        key_file.close()
    click.echo(f"key pair {name!r} created ({record['fingerprint']}); private key in {output_file}")


@keypair.command("import")
@click.argument("name")
@click.option(
    "--public-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="File holding one OpenSSH public key line (ed25519, RSA >= 2048, ECDSA P-256).",
)
@pass_context
def import_(obj: CliContext, name: str, public_key_file: Path) -> None:
    """Store an existing public key as key pair NAME."""
    try:
        raw = public_key_file.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {public_key_file}: {exc.strerror}") from None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise InputError(
            f"{public_key_file}: not text, expected one OpenSSH public key line"
        ) from None
    record = _service(obj).import_(name, text, source=str(public_key_file))
    click.echo(f"key pair {name!r} imported ({record['fingerprint']})")


@keypair.command("list")
@output_option
@pass_context
def list_(obj: CliContext, output: str | None) -> None:
    """List the key pairs."""
    output_result(_service(obj).list(), obj.output_format(output), LIST_COLUMNS)


@keypair.command("show")
@click.argument("name")
@output_option
@pass_context
def show(obj: CliContext, name: str, output: str | None) -> None:
    """Show key pair NAME with its public key."""
    output_result([_service(obj).show(name)], obj.output_format(output), SHOW_COLUMNS)


@keypair.command("delete")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@pass_context
def delete(obj: CliContext, names: tuple[str, ...]) -> None:
    """Delete key pairs. With several names, exits 1 when any could not be deleted."""
    service = _service(obj)
    failed = 0
    for name in names:
        try:
            service.delete(name)
        except CloudError as exc:
            if len(names) == 1:  # one name: its error is the one line
                raise
            failed += 1
            for line in error_lines(exc):
                click.echo(f"Error: {line}", err=True)
        else:
            click.echo(f"key pair {name!r} deleted")
    if failed:
        raise CloudError(f"{failed} of {len(names)} key pairs could not be deleted")
