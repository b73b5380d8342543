"""Building a recipe's plan: typed steps, references resolved, fingerprints chained (pure).

A recipe adds steps in order; each ``add`` validates the step's config at once (a bad
setting fails before anything runs, with the step named), resolves references to
earlier steps' named outputs into paths under the run directory, derives what the step
needs, and fingerprints it: the hash of its kind, location and settings and of the
fingerprints of the steps it reads. A changed setting therefore changes its step and
everything downstream of it, and nothing else. Where a step runs (the placement fields)
is not part of what it computes, and is left out.

    plan = Plan("humback", config.run_dir, config.placement())
    seed = plan.add("ingest_seed", "ingest_seed", settings=config.seed, location="seed")
    split = plan.add("split", "split", planned={"input": seed.ref("pairs")})
    ...
    return plan.steps
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from selfalign.core.claims import fingerprint
from selfalign.core.config import PLACEMENT_FIELDS, deep_merge
from selfalign.core.errors import ConfigError
from selfalign.pipeline import kinds as _builtin_kinds  # noqa: F401 - registers the kinds
from selfalign.pipeline.step import Publish, Ref, Step, kind_of


@dataclass(frozen=True)
class Handle:
    """What ``Plan.add`` returns: the step, and references to its named outputs."""

    step: Step

    def ref(self, output: str) -> Ref:
        if output not in kind_of(self.step.kind).outputs:
            outputs = sorted(kind_of(self.step.kind).outputs)
            raise AssertionError(
                f"step {self.step.name} ({self.step.kind}) has no output {output!r}: {outputs}"
            )
        return Ref(self.step.name, output)


class Plan:
    def __init__(self, recipe: str, run_dir: str, placement: Mapping[str, Any] | None = None):
        self.recipe = recipe
        self.run_dir = run_dir.rstrip("/")
        self.placement = dict(placement or {})
        self._steps: dict[str, Step] = {}

    @property
    def steps(self) -> list[Step]:
        return list(self._steps.values())

    def add(
        self,
        name: str,
        kind: str,
        *,
        settings: Mapping[str, Any] | None = None,
        planned: Mapping[str, Any] | None = None,
        location: str | None = None,
        publishes: Publish | None = None,
        description: str = "",
        labels: Mapping[str, Any] | None = None,
        section: str | None = None,
    ) -> Handle:
        """Add a step.

        ``settings``: the user's section for it (any config field the recipe does not
        decide); ``planned``: what the recipe decides (values, or ``Ref``s anywhere inside
        them); ``location``: its path under the run directory (default: its name);
        ``section``: how the user's config names the settings, for error messages.
        """
        if name in self._steps:
            raise AssertionError(f"step {name!r} is planned twice")
        step_kind = kind_of(kind)
        fields = step_kind.config_type.model_fields
        planned = dict(planned or {})
        settings = dict(settings or {})
        where = section or name
        decided = set(planned) | {step_kind.location_field} | (PLACEMENT_FIELDS & set(fields))
        refused = sorted(decided & set(settings))
        if refused:
            raise ConfigError(
                f"{self.recipe} config, {where}: {', '.join(refused)} cannot be set here; the "
                "recipe sets them (use run_dir, model, profile, ray_config, ray_address at "
                "the top level)"
            )
        needs: list[str] = []
        resolved = self._resolve(planned, needs)
        uri = f"{self.run_dir}/{location or name}"
        values = {**resolved, step_kind.location_field: uri}
        values.update({k: v for k, v in self.placement.items() if k in fields})
        try:
            config = step_kind.config_type.model_validate(deep_merge(settings, values))
        except ValueError as err:
            raise ConfigError(f"{self.recipe} config, {where} (step {name}): {err}") from None
        payload = {
            "kind": kind,
            "location": uri,
            "settings": config.model_dump(mode="json", exclude=PLACEMENT_FIELDS & set(fields)),
            "needs": {n: self._steps[n].fingerprint for n in needs},
        }
        step = Step(
            name=name,
            kind=kind,
            location=uri,
            config=config,
            needs=tuple(needs),
            publishes=publishes,
            description=description,
            labels=dict(labels or {}),
            fingerprint=fingerprint(payload),
        )
        self._steps[name] = step
        return Handle(step)

    def _resolve(self, value: Any, needs: list[str]) -> Any:
        if isinstance(value, Ref):
            if value.step not in self._steps:
                raise AssertionError(f"reference to {value.step!r}, which is not planned before")
            if value.step not in needs:
                needs.append(value.step)
            return self._steps[value.step].output(value.output)
        if isinstance(value, Mapping):
            return {k: self._resolve(v, needs) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._resolve(v, needs) for v in value]
        return value
