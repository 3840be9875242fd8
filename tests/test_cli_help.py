"""Every command of cloudctl has a --help page that renders."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from cloudctl.cli.main import cli


def walk(command: click.Command, path: tuple[str, ...] = ()):
    yield path
    if isinstance(command, click.Group):  # cloudctl's group loads its commands on demand
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            yield from walk(command.get_command(ctx, name), (*path, name))


COMMANDS = list(walk(cli))


def test_the_walk_finds_the_commands():
    assert ("deploy",) in COMMANDS and ("service", "status") in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "cloudctl")
def test_help(path):
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="cloudctl")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: cloudctl")
    assert "Traceback" not in result.output
