"""Suite -> trials: a pure, deterministic expansion (no I/O, no randomness, no clock).

The order is models x tasks x methods x budgets x grid points x seeds, as written in the file. Each trial's
id is `TrialSpec.trial_id`, a hash of its resolved config, so renaming the suite or reordering its lists
changes nothing for finished work. Two entries that resolve to the same config are one trial.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from sift_bench.spec import TrainSettings, TrialSpec
from sift_bench.suite import MethodEntry, Suite, patch_values


@dataclass(frozen=True)
class PlannedTrial:
    """A trial spec plus what only the suite knows: its method label and its grid point."""

    spec: TrialSpec
    variant: str
    grid: dict[str, Any] = field(default_factory=dict)

    @property
    def trial_id(self) -> str:
        return self.spec.trial_id


def _matches(wanted: str | list[str] | None, *values: str) -> bool:
    if wanted is None:
        return True
    wanted = [wanted] if isinstance(wanted, str) else wanted
    return any(v in wanted for v in values)


def _grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    if not grid:
        return [{}]
    keys = list(grid)
    return [dict(zip(keys, combo, strict=False)) for combo in itertools.product(*(grid[k] for k in keys))]


def _budgets(suite: Suite, entry: MethodEntry, has_knob: bool) -> list[str | int | None]:
    if not has_knob:
        return [None]  # full / classifier_only: one trial, whatever the suite's budgets
    budgets = entry.budgets if "budgets" in entry.model_fields_set else suite.budgets
    return list(budgets) if budgets else [None]  # no budget: the method's own knob option


def plan(suite: Suite) -> list[PlannedTrial]:
    """All trials of a suite, in file order, without duplicates."""
    from sift_bench.methods import METHODS

    planned: dict[str, PlannedTrial] = {}
    base = patch_values(suite.train)
    for model, (task, task_entry), (label, entry) in itertools.product(
        suite.models, suite.tasks.items(), suite.methods.items()
    ):
        method_name = entry.method or label
        method = METHODS.get(method_name)
        # Canonical options: validated, and values equal to the defaults dropped, so `{}` and
        # `{sparsity: 0.008}` are one trial, and a budget never meets an explicit knob option in the trial.
        options = method.options.model_validate(entry.options()).model_dump(mode="json", exclude_defaults=True)
        train = {**base, **patch_values(task_entry.train), **patch_values(entry.train)}
        for ov in suite.overrides:
            w = ov.when
            if _matches(w.model, model) and _matches(w.task, task) and _matches(w.method, label, method_name):
                train.update(patch_values(ov.train))
        grid = {**suite.grid, **(entry.grid or {})}
        for budget, point, seed in itertools.product(
            _budgets(suite, entry, method.knob is not None), _grid_points(grid), suite.seeds
        ):
            spec = TrialSpec(
                model=model,
                task=task,
                method=method_name,
                method_options=options,
                budget=budget,
                seed=seed,
                train=TrainSettings.model_validate({**train, **point}),
                evaluators=suite.evaluators,
                data_dir=task_entry.data_dir or suite.data_dir,
                suite=suite.name,
                resources=entry.resources or suite.resources,
            )
            planned.setdefault(spec.trial_id, PlannedTrial(spec, label, point))
    return list(planned.values())


def expand(suite: Suite) -> list[TrialSpec]:
    """The suite's trial specs (see `plan` for the labels and grid points)."""
    return [p.spec for p in plan(suite)]


def grid_label(point: dict[str, Any]) -> str:
    return json.dumps(point, sort_keys=True) if point else ""
