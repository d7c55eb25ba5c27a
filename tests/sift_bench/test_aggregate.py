"""Method-fair selection: the grid point with the best mean over seeds, on dev or on a held-out slice."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from results_factory import result, write_run

from sift_bench.aggregate import Cell, aggregate, format_value
from sift_bench.metrics import heldout_metric, metric_info
from sift_bench.results import load_run
from sift_bench.spec import Budget, TrainSettings, TrialResult, TrialSpec


def trial(seed: int, lr: float, dev: float, *, heldout: float | None = None, method: str = "sift",
          metric: str = "accuracy", budget: str | None = "0.8%", params: int = 1000) -> TrialResult:  # fmt: skip
    """One trial of a grid over the learning rate; `heldout` also makes it select on a held-out 10%."""
    train = TrainSettings(learning_rate=lr, heldout_fraction=0.1 if heldout is not None else 0.0)
    spec = TrialSpec(model="m", task="mrpc", method=method, budget=budget, seed=seed, suite="s",
                     grid={"learning_rate": lr}, train=train)  # fmt: skip
    best = {metric: dev} | ({heldout_metric(metric): heldout} if heldout is not None else {})
    return result(spec, best, primary=metric, trainable_params=params)


def cells(tmp_path: Path, results: list[TrialResult]) -> list[Cell]:
    return aggregate(load_run(write_run(tmp_path, results)).trials)


def test_mean_over_seeds_not_best_per_seed(tmp_path: Path) -> None:
    # lr A is lucky on seed 0 and poor on seed 1; lr B is steady. Per-seed max would report (0.90 + 0.72) / 2
    # = 0.81 from two different grid points; the mean over seeds picks B: 0.71 against A's 0.70.
    (cell,) = cells(tmp_path, [
        trial(0, 1e-3, 0.90), trial(1, 1e-3, 0.50),
        trial(0, 1e-4, 0.70), trial(1, 1e-4, 0.72),
    ])  # fmt: skip
    assert cell.chosen == {"learning_rate": 1e-4} and cell.chosen_text() == "lr=1e-4"
    assert cell.mean == pytest.approx(0.71) and cell.n == 2 and cell.std == pytest.approx(0.0141421, rel=1e-5)
    assert cell.selection == "dev" and cell.n_configs == 2 and cell.selection_score == pytest.approx(0.71)
    b_ids = {TrialSpec(model="m", task="mrpc", method="sift", budget="0.8%", seed=s, suite="s",
                       grid={"learning_rate": 1e-4}, train=TrainSettings(learning_rate=1e-4)).trial_id
             for s in (0, 1)}  # fmt: skip
    assert set(cell.trial_ids) == b_ids


def test_heldout_selection_ignores_dev(tmp_path: Path) -> None:
    # Dev prefers lr A (0.80 vs 0.70 mean); the held-out slice prefers B, and held-out is what chooses.
    (cell,) = cells(tmp_path, [
        trial(0, 1e-3, 0.80, heldout=0.60), trial(1, 1e-3, 0.80, heldout=0.62),
        trial(0, 1e-4, 0.70, heldout=0.75), trial(1, 1e-4, 0.70, heldout=0.77),
    ])  # fmt: skip
    assert cell.selection == "heldout" and cell.heldout_fraction == pytest.approx(0.1)
    assert cell.chosen == {"learning_rate": 1e-4}
    assert cell.mean == pytest.approx(0.70)  # the reported score is dev, of the config held-out chose
    assert cell.selection_score == pytest.approx(0.76)


def test_a_cell_with_a_trial_lacking_heldout_falls_back_to_dev(tmp_path: Path) -> None:
    (cell,) = cells(tmp_path, [trial(0, 1e-3, 0.80, heldout=0.60), trial(0, 1e-4, 0.70)])
    assert cell.selection == "dev" and cell.chosen == {"learning_rate": 1e-3} and cell.heldout_fraction == 0.0


def test_lower_is_better_metric(tmp_path: Path) -> None:
    (cell,) = cells(tmp_path, [
        trial(0, 1e-3, 0.20, metric="eval_loss"), trial(1, 1e-3, 0.60, metric="eval_loss"),
        trial(0, 1e-4, 0.35, metric="eval_loss"), trial(1, 1e-4, 0.37, metric="eval_loss"),
    ])  # fmt: skip
    assert cell.chosen == {"learning_rate": 1e-4} and cell.mean == pytest.approx(0.36)  # 0.36 < 0.40


def test_ties_keep_the_first_config(tmp_path: Path) -> None:
    (cell,) = cells(tmp_path, [
        trial(0, 3e-4, 0.70), trial(1, 3e-4, 0.80),
        trial(0, 1e-4, 0.80), trial(1, 1e-4, 0.70),
    ])  # fmt: skip
    assert cell.chosen == {"learning_rate": 3e-4} and cell.mean == pytest.approx(0.75)


def test_cells_per_method_and_budget_and_filters(tmp_path: Path) -> None:
    got = cells(tmp_path, [
        trial(0, 1e-3, 0.80), trial(0, 1e-4, 0.60),
        trial(0, 1e-3, 0.70, budget="2%", params=3000),
        trial(0, 1e-3, 0.88, method="full", budget=None, params=10**6),
    ])  # fmt: skip
    assert [(c.method, str(c.budget), c.n_configs) for c in got] == [("sift", "0.8%", 2), ("sift", "2%", 1),
                                                                     ("full", "None", 1)]  # fmt: skip
    trials = load_run(tmp_path).trials
    kept = aggregate(trials, budget=Budget.parse("2%"))
    assert [(c.method, c.params) for c in kept] == [("sift", 3000), ("full", 10**6)]  # references stay


def test_older_tables_without_heldout_or_grid(tmp_path: Path) -> None:
    cells(tmp_path, [trial(0, 1e-3, 0.80)])
    trials = load_run(tmp_path).trials.drop(columns=["train.heldout_fraction", "spec"])
    trials["grid"] = ""  # an older row: no grid JSON
    (cell,) = aggregate(pd.DataFrame(trials))
    assert cell.selection == "dev" and cell.chosen == {} and cell.chosen_text() == ""


def test_formats_and_heldout_metric_info() -> None:
    assert [format_value(v) for v in (1e-3, 3e-5, 2.5e-4, 16, 0.1, 0.0, "cosine")] == [
        "1e-3", "3e-5", "2.5e-4", "16", "0.1", "0", "cosine",
    ]  # fmt: skip
    loss = metric_info("heldout_eval_loss")
    assert loss.name == "heldout_eval_loss" and not loss.higher_is_better and not loss.percent
    acc = metric_info("heldout_accuracy")
    assert acc.name == "heldout_accuracy" and acc.higher_is_better and acc.percent
