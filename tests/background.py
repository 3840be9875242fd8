"""Long set-up work that the suite starts as soon as it begins: the shared clouds' deploys
and the molecule scenarios. Each job runs in a small pool beside the tests that need none of
it (the integration tests run last, see tests/conftest.py), on the core that those leave
idle; the fixture that needs a job's result waits for it (docs/benchmarks.md, the suite's
time).

A module registers a job with @job(name, wanted=...) at import (collection) time; the session
starts the jobs that some selected test wants, in `order`, and a job nobody selected never
runs. A job's `cleanup` runs at the end of the session whether or not its result was used
(the lab of a run stopped early is not left behind); cleanups must be idempotent.
Jobs run their commands as subprocesses: the in-process cloudctl (cloud_client.cloudctl_here)
swaps sys.stdout and must stay in the test's thread.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

WORKERS = 2  # beside the test thread: three busy processes on the machine's 2 cores


@dataclass
class Job:
    build: Callable[[pytest.TempPathFactory], Any]
    wanted: Callable[[pytest.Item], bool]
    order: int
    cleanup: Callable[[], None] | None


_JOBS: dict[str, Job] = {}


def job(
    name: str,
    wanted: Callable[[pytest.Item], bool],
    order: int = 50,
    cleanup: Callable[[], None] | None = None,
):
    """Register `build(tmp_path_factory)` as background job NAME (a decorator)."""

    def register(build):
        _JOBS[name] = Job(build, wanted, order, cleanup)
        return build

    return register


def uses(fixture: str) -> Callable[[pytest.Item], bool]:
    """A test wants the job when it uses FIXTURE (directly or through other fixtures)."""
    return lambda item: fixture in item.fixturenames


class Background:
    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="background")
        self.futures: dict[str, Future] = {}

    def start(self, items: list[pytest.Item]) -> None:
        wanted = [n for n, j in _JOBS.items() if any(j.wanted(item) for item in items)]
        for name in sorted(wanted, key=lambda n: _JOBS[n].order):
            self.submit(name)

    def submit(self, name: str) -> Future:
        if name not in self.futures:
            self.futures[name] = self.pool.submit(_JOBS[name].build, self.tmp_path_factory)
        return self.futures[name]

    def result(self, name: str) -> Any:
        """The job's result (started now if the session did not start it); its error."""
        return self.submit(name).result()

    def close(self) -> None:
        """Wait for the jobs that started (the others never will), then clean up after them."""
        ran = [name for name, future in self.futures.items() if not future.cancel()]
        self.pool.shutdown(wait=True)
        for name in ran:
            if _JOBS[name].cleanup is not None:
                _JOBS[name].cleanup()
