"""Parameter constraints declared once per class and checked by one function.

In scikit-learn's habit (``_parameter_constraints``): each class lists the values every parameter
may take, and :func:`validate_params` checks them all at the boundary, in ``__init__``, before any
work, so a bad config value fails in the first second with every problem named at once::

    _parameter_constraints = {
        "cd_k": [Interval(int, 1, None)],
        "sparsity_target": [None, Interval(float, 0, 1, closed="neither")],
    }

Float intervals refuse NaN and infinities whatever their bounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Callable, Iterator, Literal, Sequence

__all__ = [
    "UsageError",
    "MissingFileError",
    "FileTakenError",
    "OutputError",
    "error_chain",
    "usage_cause",
    "Interval",
    "Options",
    "ListOf",
    "Rule",
    "validate_params",
    "check_count",
]


class UsageError(ValueError):
    """A value the user gave is wrong; entry points print it as one line, without a traceback.
    Anything else that escapes is a bug and keeps its traceback."""


class MissingFileError(UsageError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class FileTakenError(UsageError, FileExistsError):
    """Writing where the user asked would overwrite something that exists."""


class OutputError(UsageError, OSError):
    """A file could not be written where the user asked (a full disk, a read-only folder)."""


def error_chain(err: BaseException | None) -> Iterator[BaseException]:
    """``err`` and the errors it was raised from or while handling, newest first (jsonargparse
    wraps what a class's ``__init__`` raises)."""
    while err is not None:
        yield err
        err = err.__cause__ or err.__context__


def usage_cause(err: BaseException | None) -> BaseException | None:
    """The :class:`UsageError` (or missing file) in ``err``'s chain (:func:`error_chain`); None if
    a bug, not the user, raised it."""
    return next((e for e in error_chain(err) if isinstance(e, (UsageError, FileNotFoundError))), None)


@dataclass(frozen=True)
class Interval:
    """Numbers of ``kind`` (int or float) between ``low`` and ``high`` (None: unbounded)."""

    kind: type
    low: float | None
    high: float | None
    closed: Literal["left", "right", "both", "neither"] = "left"

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, Integral if self.kind is int else Real):
            return False
        low_ok = self.low is None or (value >= self.low if self.closed in ("left", "both") else value > self.low)
        high_ok = self.high is None or (value <= self.high if self.closed in ("right", "both") else value < self.high)
        return math.isfinite(value) and low_ok and high_ok

    def __str__(self) -> str:
        left = "[" if self.closed in ("left", "both") and self.low is not None else "("
        right = "]" if self.closed in ("right", "both") and self.high is not None else ")"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{'an integer' if self.kind is int else 'a finite number'} in {left}{low}, {high}{right}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values."""

    values: tuple

    def accepts(self, value: Any) -> bool:
        return value in self.values

    def __str__(self) -> str:
        return f"one of {list(self.values)}"


@dataclass(frozen=True)
class ListOf:
    """A list whose every item meets ``item``, with at least ``min_len`` items."""

    item: Interval | Options
    min_len: int = 1

    def accepts(self, value: Any) -> bool:
        return (
            isinstance(value, (list, tuple)) and len(value) >= self.min_len and all(self.item.accepts(v) for v in value)
        )

    def __str__(self) -> str:
        return f"a list of at least {self.min_len} item(s), each {self.item}"


Constraint = Interval | Options | ListOf | None


@dataclass(frozen=True)
class Rule:
    """A constraint between parameters, declared beside the per-parameter ones: ``holds(params)``
    must be true, else ``message`` (the problem and the fix) is reported, formatted with the
    parameters and ``prefix`` (``"{prefix}hidden is {hidden}"``)."""

    holds: Callable[[dict[str, Any]], bool]
    message: str


def check_count(value: int, name: str, minimum: int, why: str) -> None:
    """Raise ValueError unless ``value`` is an integer (not a bool) >= ``minimum``; ``why`` says what it counts."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"expected {name} an integer >= {minimum} ({why}), got {value!r}")


def validate_params(
    owner: str,
    params: dict[str, Any],
    constraints: dict[str, Sequence[Constraint]],
    prefix: str = "",
    rules: Sequence[Rule] = (),
) -> None:
    """Raise one :class:`UsageError` naming every parameter of ``params`` that meets none of its
    constraints, and every ``rules`` entry that does not hold (checked once each parameter is
    valid); parameters without constraints are not checked. ``prefix`` is the option's place in a
    config (``"model."``, ``"data."``), for the message; the CLI spells it as its flag."""
    problems = []
    for name, allowed in constraints.items():
        value = params.get(name)
        if name in params and not any(value is None if c is None else c.accepts(value) for c in allowed):
            expected = " or ".join("null" if c is None else str(c) for c in allowed)
            problems.append(f"{prefix}{name}: expected {expected}, got {value!r}")
    if not problems:
        problems = [rule.message.format(**params, prefix=prefix) for rule in rules if not rule.holds(params)]
    if problems:
        raise UsageError(f"{owner}: " + "; ".join(problems))
