"""Errors that say what happened, what was tried and what to do next (labelled in the learner's edition)."""
from __future__ import annotations

from .language import text


class LabkitError(RuntimeError):
    """A failure a learner can act on: `what` happened, `fix` tells them how to get past it."""

    def __init__(self, what: str, *, fix: str = "", tried: str = "", log_tail: str = "") -> None:
        self.what, self.fix, self.tried, self.log_tail = what, fix, tried, log_tail
        parts = [what]
        if tried:
            parts.append(text("Tried: ", "尝试过：") + tried)
        if fix:
            parts.append(text("Fix: ", "解决办法：") + fix)
        if log_tail:
            parts.append(text("Last lines of the log:", "日志的最后几行：") + "\n" + log_tail)
        super().__init__("\n".join(parts))


class ModelError(LabkitError):
    """The model file is missing, corrupt or cannot be fetched."""


class BinaryError(LabkitError):
    """A server binary is missing and cannot be built (toolchain missing, build failed)."""


class PortBusyError(LabkitError):
    """Something that is not the server we want is listening on the port."""


class ServerMismatchError(PortBusyError):
    """The server already on the port runs with other options than the ones asked for (context, slots, flags)."""

    def __init__(self, what: str, *, differences: list[str], **kwargs) -> None:
        self.differences = differences
        super().__init__(what, **kwargs)


class ServerStartError(LabkitError):
    """The server process exited or never became healthy in time."""
