"""Typed errors of cloudctl and the one place that maps them to exit codes."""

from __future__ import annotations


class CloudError(Exception):
    """Base of every error cloudctl reports to the operator as one line."""

    exit_code = 1


class ConfigError(CloudError):
    """cloudctl itself is not set up right (project, inventory, home directory)."""

    exit_code = 3


class InputError(CloudError):
    """The operator asked for something invalid."""

    exit_code = 2


class CapacityError(CloudError):
    """The cloud has no room for what was asked (nodes full, address pool exhausted)."""

    exit_code = 4


class IncorrectState(InputError):
    """The resource is in a state that does not allow what was asked."""


class NotFound(InputError):
    """A resource named by the operator does not exist."""


class HostFailed(CloudError):
    """A task failed on a host."""

    def __init__(self, host: str, task: str, message: str) -> None:
        self.host = host
        self.task = task
        self.message = message
        super().__init__(f"{host}: task '{task}' failed: {message}")


class HostUnreachable(CloudError):
    """Ansible could not reach a host."""

    def __init__(self, host: str, message: str, task: str = "") -> None:
        self.host = host
        self.task = task
        self.message = message
        super().__init__(f"{host}: unreachable: {message}")


class HostKeyError(HostUnreachable):
    """SSH refused a host: its key is not the one recorded in the inventory's known_hosts."""

    def __str__(self) -> str:
        return self.message  # names the host and what to do


class PlaybookError(CloudError):
    """A playbook run failed as a whole, or on several hosts (see `failures`)."""

    def __init__(
        self, message: str, failures: list[HostFailed | HostUnreachable] | None = None
    ) -> None:
        self.failures = list(failures or [])
        super().__init__(message)


def exit_code_for(error: BaseException) -> int:
    """Exit code of the process for an error that ends a command."""
    if isinstance(error, CloudError):
        return error.exit_code
    return 1


def error_lines(error: BaseException) -> list[str]:
    """The lines that describe an error to the operator, one per failed host when known."""
    if isinstance(error, PlaybookError) and error.failures:
        return [_one_line(str(f)) for f in error.failures]
    text = str(error) or type(error).__name__
    if not isinstance(error, CloudError):
        text = f"{type(error).__name__}: {text}"
    return [_one_line(text)]


def _one_line(text: str) -> str:
    return " ".join(text.split())
