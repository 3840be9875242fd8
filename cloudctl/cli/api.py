"""cloudctl api ...: the cloud's EC2-compatible Query API service."""

from __future__ import annotations

import click

from cloudctl.cli.common import CliContext, pass_context
from cloudctl.errors import InputError

_FILE = click.Path(exists=True, dir_okay=False)


@click.group()
def api() -> None:
    """The EC2-compatible Query API of the Cloud Controller."""


@api.command("serve")
@click.option(
    "--bind",
    metavar="HOST:PORT",
    default="127.0.0.1:8773",
    show_default=True,
    help="Address to listen on.",
)
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Worker processes.")  # fmt: skip
@click.option("--threads", type=click.IntRange(1, 256), default=4, show_default=True,
              help="Threads per worker.")  # fmt: skip
@click.option("--certfile", type=_FILE, help="TLS certificate (PEM, with its chain): serve HTTPS.")
@click.option("--keyfile", type=_FILE, help="The certificate's private key (PEM).")
@pass_context
def serve(
    obj: CliContext,
    bind: str,
    workers: int,
    threads: int,
    certfile: str | None,
    keyfile: str | None,
) -> None:
    """Serve the API in the foreground until SIGTERM or Ctrl-C (one log line per request)."""
    from cloudctl.api.app import Api  # gunicorn and the handlers: only for this command
    from cloudctl.api.server import ServeOptions, serve

    host, _, port = bind.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or " " in host:
        raise InputError(f"bad --bind {bind[:60]!r}: HOST:PORT, e.g. 0.0.0.0:8773")
    if bool(certfile) != bool(keyfile):
        raise InputError("--certfile and --keyfile go together")
    app = Api(obj.settings)
    app.config()  # a cloud without its configuration or state stops here, not per request
    serve(app, ServeOptions(bind, workers, threads, certfile, keyfile))
