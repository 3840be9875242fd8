"""What every command shares: the context object, the output option, progress bars."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from cloudctl import journal
from cloudctl.cli.output import FORMATS
from cloudctl.config import Settings, resolve_settings
from cloudctl.errors import NotFound
from cloudctl.identity import ADMIN, USERS, Principal
from cloudctl.runner import PlayEvent, PlayResult, ProgressCallback
from cloudctl.services import checked_state

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliContext:
    output: str = "table"
    inventory: str | None = None
    cloud: str | None = None
    debug: bool = False
    principal: Principal | None = None  # --as: who commands act as (None: the admin)
    _settings: Settings | None = field(default=None, repr=False)

    def resolve(self) -> Settings:
        """Which cloud, and where its files are; the state is not looked at (deploy and
        `state init` make it)."""
        return resolve_settings(self.inventory, cloud=self.cloud)

    @property
    def settings(self) -> Settings:
        """Resolved on first use, so that --help works without a project or inventory.

        Every command that gets here works on a state that exists and is of its cloud
        (services.checked_state), and first hears of operations that were interrupted.
        """
        if self._settings is None:
            settings = self.resolve()
            with checked_state(settings) as snap:
                interrupted = journal.unfinished(snap)
                if (
                    self.principal is not None
                    and snap.table(USERS).get(str(self.principal)) is None
                    and self.principal != ADMIN
                ):
                    raise NotFound(f"user {self.principal} does not exist (--as)")
            for entry in interrupted:
                click.echo(f"Warning: {journal.describe(entry)}: run cloudctl reconcile", err=True)
            self._settings = settings
        return self._settings

    def output_format(self, override: str | None) -> str:
        return override or self.output


pass_context = click.make_pass_decorator(CliContext, ensure=True)


def output_option(func: F) -> F:
    """-o on a command, overriding the global -o."""
    return click.option(
        "-o",
        "--output",
        "output",
        type=click.Choice(FORMATS),
        default=None,
        help="Output format (default: the global -o, else table).",
    )(func)


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()


@contextmanager
def task_progress(label: str, length: int | None) -> Iterator[ProgressCallback | None]:
    """A progress bar advanced per task start, shown only when stdout is a terminal.

    `length` is an estimate (tasks of the last run); without one the bar only pulses.
    """
    if not stdout_is_tty():
        yield None
        return
    # An endless iterator has no length: click then draws a bar of unknown length.
    steps = None if length else itertools.count()
    with click.progressbar(
        steps,
        length=length or None,
        label=label,
        show_pos=True,
        show_eta=False,
        width=24,
        item_show_func=lambda task: _short(task) if task else None,
    ) as bar:

        def on_event(event: PlayEvent) -> None:
            if event.kind == "task":
                bar.update(1, current_item=event.task)

        yield on_event
        if bar.length and bar.pos < bar.length:  # the estimate was high: the play is done
            bar.update(bar.length - bar.pos)


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def echo_check(result: PlayResult, fmt: str) -> None:
    """What a --check run would change, one row per host and task."""
    from cloudctl.cli.output import output_result

    rows = []
    for change in result.changes():
        items = [
            str(item.get("_ansible_item_label", item.get("item", "")))
            for item in change.res.get("results") or []
            if item.get("changed")
        ]
        # Modules that handle many instances in one run (node_instances, cc_instances)
        # name them in their own results.
        items += [
            str(entry.get("name", ""))
            for key in ("reservations", "instances")
            for entry in change.res.get(key) or []
            if isinstance(entry, dict) and entry.get("changed")
        ]
        rows.append({"host": change.host, "task": change.task, "items": ", ".join(items)})
    output_result(rows, fmt, ["host", "task", "items"])
    click.echo(f"Check mode: nothing was changed ({len(rows)} task(s) would change).", err=True)
