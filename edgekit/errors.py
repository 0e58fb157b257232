"""One error hierarchy. Only the CLI entry point turns these into messages and exit codes.

Exit codes: 1 generic failure (a converter failing: ConversionError), 2 usage / bad input,
3 missing optional dependency, 4 parity check failed, 5 external tool failed.

An error raised for another one chains it (``raise ... from exc``); with EDGEKIT_DEBUG=1 the CLI
prints that cause's traceback in full.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgekitError(Exception):
    """Base class: a one-line, user-facing message and an exit code."""

    exit_code = 1


class InputError(EdgekitError):
    """The user gave something we cannot use (unknown name, bad value, unreadable file)."""

    exit_code = 2


class ConversionError(EdgekitError):
    """A backend's converter failed on a model it was given (not the user's input): exit 1,
    "<backend> could not convert <model> to <precision>: <first line of the cause>"."""

    exit_code = 1

    def __init__(self, backend: str, model: str, precision: str, cause: BaseException | str):
        self.backend, self.model, self.precision = backend, model, precision
        self.detail = cause if isinstance(cause, str) else first_line(cause)
        super().__init__(f"{backend} could not convert {model} to {precision}: {self.detail}")

    def __reduce__(self):  # crosses the convert worker's process boundary whole
        return type(self), (self.backend, self.model, self.precision, self.detail)


class MissingDependencyError(EdgekitError):
    exit_code = 3

    def __init__(self, package: str, extra: str):
        super().__init__(
            f"{package} is not installed; install it with: pip install 'edgekit[{extra}]'"
        )
        self.package = package
        self.extra = extra

    def __reduce__(self):  # crosses the convert worker's process boundary whole
        return type(self), (self.package, self.extra)


class MissingToolError(EdgekitError):
    """A system program (not a pip package) is missing; the message says how to install it."""

    exit_code = 3


class ParityError(EdgekitError):
    exit_code = 4


class ExternalToolError(EdgekitError):
    exit_code = 5


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none: what a
    one-line error shows of a library's multi-line one."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def suggest(name: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' or, failing a close match, the list of valid choices."""
    choices = sorted(choices)
    close = sorted(difflib.get_close_matches(name, choices, n=3, cutoff=0.6))
    if close:
        return " (did you mean " + " or ".join(f"'{c}'" for c in close) + "?)"
    return f" (choose from: {', '.join(choices)})"


def unknown(kind: str, name: str, choices: Iterable[str]) -> InputError:
    return InputError(f"unknown {kind} '{name}'{suggest(name, choices)}")
