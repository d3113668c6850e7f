"""Errors that servesim reports to users as one line (CLI exit code 2)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# Characters that str.splitlines() breaks at, as escapes: a key or a value quoted from user
# input may hold them, and the message must stay one line.
_ONE_LINE = {ord(c): repr(c)[1:-1] for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


class ServesimError(ValueError):
    """A user-facing error: bad scenario, trace, profile or CLI input.

    The message is a single line that names the field (or file:line), the bad value and what
    is allowed. The CLI prints it without a traceback and exits with code 2. Line breaks that
    reach the message from user input are shown escaped (``\\n``).
    """

    def __str__(self) -> str:
        return super().__str__().translate(_ONE_LINE)


class ScenarioError(ServesimError):
    """A scenario document failed validation."""


class TraceError(ServesimError):
    """A trace or length-table file could not be read (the message names file:line)."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(str(name).lower(), [c.lower() for c in choices], n=1)
    if not close:
        return ""
    lowered = {c.lower(): c for c in choices}
    return f" (did you mean '{lowered[close[0]]}'?)"


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> ServesimError:
    """Build the standard error for an unknown catalog name."""
    choices = sorted(choices)
    return ServesimError(
        f"unknown {kind} '{name}'{did_you_mean(name, choices)}; known: {', '.join(choices)}"
    )
