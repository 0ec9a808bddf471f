"""ProcessState: the only place has_exited / exit_code / failure_message live."""

from __future__ import annotations

import attrs

__all__ = ["ProcessState"]


def _check(instance: ProcessState, _attr: object, _value: object) -> None:
    if not instance.has_exited and (
        instance.exit_code is not None or instance.failure_message is not None
    ):
        raise ValueError("a process that has not exited has no exit code or failure")


@attrs.frozen
class ProcessState:
    """What is known about how a process ended.

    Immutable: transitions return a new value, so a snapshot handed to a caller can
    never change under them.
    """

    has_exited: bool = attrs.field(default=False, validator=_check)
    exit_code: int | None = None
    failure_message: str | None = None

    def exited(self, exit_code: int) -> ProcessState:
        """The process exited with ``exit_code``; an earlier failure is kept."""
        return attrs.evolve(self, has_exited=True, exit_code=exit_code)

    def failed(self, message: str) -> ProcessState:
        """Something broke (launch, transport, backend); the first failure wins."""
        return attrs.evolve(
            self,
            has_exited=True,
            failure_message=self.failure_message if self.failure_message is not None else message,
        )
