"""Steps of a pipeline and the kinds of step there are (pure).

A *step* is one unit of a recipe's plan: a registered *kind* (what runs), a typed
config (what it runs with), a location under the run directory (where it writes), the
steps it reads (derived from its inputs, which are references to other steps' named
outputs, never hand-built paths), and optionally what it *publishes* (e.g. "this model
is the new scorer" for a running scoring service).

A *kind* declares its config type, its named outputs (relative paths under a step's
location), the function that runs it (a dotted ``module:function`` path, imported only
when a step of that kind runs, so that plans stay pure and testable in milliseconds),
the result keys worth a progress line, and how to read a rate from its result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

Rate = tuple[float | None, str | None]


@dataclass(frozen=True)
class Ref:
    """A named output of an earlier step: resolved to a path when the plan is built."""

    step: str
    output: str


@dataclass(frozen=True)
class Publish:
    """After the step, publish its ``model`` output to services following the run."""

    role: Literal["current", "backward"] = "current"
    scorer_format: str | None = None


@dataclass(frozen=True)
class StepKind:
    name: str
    config_type: type[BaseModel]
    run: str  # "package.module:function", called as function(config, context) -> dict
    outputs: Mapping[str, str]  # named output -> path relative to the location ("" = itself)
    location_field: str = "output"  # the config field that receives the step's location
    headline: tuple[str, ...] = ()  # result keys for the step's "finished" line
    rate: Callable[[Mapping[str, Any], float], Rate] | None = None
    needs_ray: bool = True  # False: the runner does not start Ray for it (small data steps)


@dataclass(frozen=True)
class Step:
    name: str
    kind: str
    location: str  # URI of what the step writes (a directory, or a file)
    config: BaseModel
    needs: tuple[str, ...] = ()
    publishes: Publish | None = None
    description: str = ""
    # Free-form facts for reports ("model": "m1", "iteration": 1): reports read these,
    # never the step's name.
    labels: Mapping[str, Any] = field(default_factory=dict)
    fingerprint: str = ""

    def output(self, name: str) -> str:
        """The URI of this step's named output."""
        relative = KINDS[self.kind].outputs[name]
        return f"{self.location}/{relative}" if relative else self.location


KINDS: dict[str, StepKind] = {}


def register(kind: StepKind) -> StepKind:
    """Add a step kind (recipes may register their own); a name is registered once."""
    existing = KINDS.get(kind.name)
    if existing is not None and existing != kind:
        raise ValueError(f"step kind {kind.name!r} is already registered")
    KINDS[kind.name] = kind
    return kind


def kind_of(name: str) -> StepKind:
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown step kind {name!r}; registered: {sorted(KINDS)}") from None
