"""Suite -> trials: a pure, deterministic expansion (no I/O, no randomness, no clock).

The order is models x tasks x methods x budgets x grid points x seeds, as written in the file. Each trial's
id is `TrialSpec.trial_id`, a hash of its resolved config, so renaming the suite or reordering its lists
changes nothing for finished work. Two entries that resolve to the same config are one trial (the first
entry's method label names it). `plan_rows` lays the trials out for `sift-bench plan`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Any

from sift_bench.spec import TrainSettings, TrialSpec
from sift_bench.suite import MethodEntry, Suite, patch_values


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


def expand(suite: Suite) -> list[TrialSpec]:
    """All trials of a suite, in file order, without duplicates; each spec carries its method label
    (`variant`) and grid point."""
    from sift_bench.methods import METHODS

    planned: dict[str, TrialSpec] = {}
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
        if suite.selection == "heldout":
            train.setdefault("heldout_fraction", suite.heldout_fraction)
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
                forgetting=suite.forgetting,
                data_dir=task_entry.data_dir or suite.data_dir,
                suite=suite.name,
                resources=entry.resources or suite.resources,
                variant=label,
                grid=point,
            )
            planned.setdefault(spec.trial_id, spec)
    return list(planned.values())


# What a trial's row in the results table says, as `sift-bench plan` shows it.
PLAN_STATES = {"ok": "done", "failed": "failed"}


def plan_rows(specs: list[TrialSpec], statuses: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per trial for `sift-bench plan`; `statuses` maps trial ids to their status in a results
    table (ok / failed), and a trial without one is "to run"."""
    statuses = statuses or {}
    return [
        {
            "trial_id": s.trial_id,
            "model": s.model,
            "task": s.task,
            "method": s.label,
            "budget": "" if s.budget is None else str(s.budget),
            "seed": s.seed,
            "lr": s.train.learning_rate,
            "epochs": s.train.epochs,
            "grid": json.dumps(s.grid) if s.grid else "",
            "resources": f"cpu={s.resources.cpu:g} gpu={s.resources.gpu:g}",
            "state": PLAN_STATES.get(statuses.get(s.trial_id, ""), "to run"),
        }
        for s in specs
    ]
