"""`sift-bench compare` with per-example dev predictions: the paired bootstrap's noise band, and the
fallback to the seed spread (the seed-spread rule itself is tested in test_compare.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from results_factory import result, write_run
from typer.testing import CliRunner

from sift_bench.cli import app
from sift_bench.compare import CellComparison, Comparison, compare_paths, to_markdown
from sift_bench.spec import TrainSettings, TrialSpec


def run_cli(*args: Any) -> Any:
    return CliRunner().invoke(app, ["compare", *map(str, args)])


def by_method(cmp: Comparison) -> dict[str, CellComparison]:
    return {c.method: c for c in cmp.cells}


DEV = np.random.default_rng(0).integers(0, 2, 400)  # the dev labels every trial below predicts


def preds(wrong: np.ndarray | list[int]) -> np.ndarray:
    """Dev predictions right everywhere except at `wrong` (flipped)."""
    p = DEV.copy()
    p[np.asarray(wrong, dtype=int)] ^= 1
    return p


def store_run(
    root: Path, configs: dict[str, list[np.ndarray]], *, labels: np.ndarray = DEV, lr: float | None = None
) -> Path:
    """A results folder (through the factory): per method one trial per seed, with its dev predictions.
    `lr`: the trials are that point of a learning-rate grid (call again on the same folder for another)."""
    rows = []
    for method, per_seed in configs.items():
        for seed, p in enumerate(per_seed):
            spec = TrialSpec(model="minilm-l6", task="mrpc", method=method, budget="0.8%", seed=seed, suite="qs")
            if lr is not None:
                spec = spec.model_copy(update={"train": TrainSettings(learning_rate=lr), "grid": {"learning_rate": lr}})
            best = {"accuracy": float(np.mean(p == labels)), "eval_loss": 0.5}
            predictions = [(i, v, y) for i, (v, y) in enumerate(zip(p, labels, strict=True))]
            rows.append(result(spec, best, trainable_params=10, predictions=predictions))
    return write_run(root, rows)


def test_bootstrap_band_when_both_sides_have_predictions(tmp_path: Path) -> None:
    # Seeds spread widely (60/70/80%: seed std 10 pt), but the new run loses the same 8 examples on every
    # seed (-2 pt). The seed-std band calls that noise; the paired bootstrap sees it is no accident.
    seeds = [preds(range(s * 40, 160)) for s in range(3)]  # 160, 120, 80 wrong
    lost = list(range(300, 308))  # right on every seed in the baseline
    base = store_run(tmp_path / "a", {"sift": seeds, "lora": seeds})
    new = store_run(tmp_path / "b", {"sift": [preds([*range(s * 40, 160), *lost]) for s in range(3)], "lora": seeds})
    assert (base / "predictions.parquet").is_file()
    cmp = by_method(compare_paths(base, new, tolerance=1.0))
    sift, lora = cmp["sift"].primary, cmp["lora"].primary
    assert sift.band_kind == "bootstrap" and sift.n_examples == 400
    assert sift.delta == pytest.approx(-2.0) and sift.ci_low < sift.ci_high < 0  # the interval excludes 0
    assert sift.band == pytest.approx(max(1.0, sift.ci_high - sift.delta)) and sift.verdict == "regressed"
    assert cmp["sift"].regressed and "beyond the noise band" in cmp["sift"].flags[0]
    assert lora.band_kind == "bootstrap" and (lora.ci_low, lora.ci_high, lora.verdict) == (0.0, 0.0, "noise")
    # The same folders without predictions: today's rule, seed std, and the drop is noise.
    for root in (base, new):
        (root / "predictions.parquet").unlink()
    plain = by_method(compare_paths(base, new, tolerance=1.0))["sift"].primary
    assert plain.band_kind == "seed std" and plain.band == pytest.approx(10.0) and plain.verdict == "noise"
    assert plain.ci_low is None


def test_bootstrap_resamples_the_chosen_grid_points_only(tmp_path: Path) -> None:
    # lr=1e-3 is the better point on both sides; lr=3e-3 (80 of 400 wrong) must not enter the bootstrap.
    # The new run's chosen point loses the same 8 examples on both seeds: -2 pt, an interval below 0.
    base, new = tmp_path / "a", tmp_path / "b"
    for root, lost in ((base, []), (new, list(range(300, 308)))):
        store_run(root, {"sift": [preds([*range(s * 10, 20), *lost]) for s in range(2)]}, lr=1e-3)
        store_run(root, {"sift": [preds(range(80)) for _ in range(2)]}, lr=3e-3)
    (c,) = compare_paths(base, new, tolerance=1.0).cells
    assert c.chosen == "lr=1e-3" and c.n_configs == 2 and c.base_seeds == c.new_seeds == [0, 1]
    p = c.primary
    assert p.band_kind == "bootstrap" and p.n_examples == 400 and p.delta == pytest.approx(-2.0)
    assert p.ci_low < p.ci_high < 0 and p.verdict == "regressed" and c.regressed


def test_bootstrap_band_keeps_the_tolerance_floor(tmp_path: Path) -> None:
    # 6 examples of 400 lost on the only seed: -1.5 pt, clearly outside the interval's noise; the tolerance
    # still forgives changes smaller than itself, as with the seed-std band.
    base = store_run(tmp_path / "a", {"sift": [preds([])]})
    new = store_run(tmp_path / "b", {"sift": [preds(range(6))]})
    for tolerance, verdict in ((2.0, "noise"), (1.0, "regressed"), (0.0, "regressed")):
        p = compare_paths(base, new, tolerance=tolerance).cells[0].primary
        assert p.band_kind == "bootstrap" and p.ci_high < 0 and p.verdict == verdict, tolerance
    # A gain of 1 example in 400 (+0.25 pt) is not distinguishable: noise even with --tolerance 0.
    up = store_run(tmp_path / "c", {"sift": [preds(range(5))]})
    p = compare_paths(new, up, tolerance=0.0).cells[0].primary
    assert p.delta == pytest.approx(0.25) and p.ci_low == 0.0 and p.verdict == "noise"


def test_seed_std_band_without_per_example_metric_or_same_examples(tmp_path: Path) -> None:
    base = store_run(tmp_path / "a", {"sift": [preds([]), preds([1])]})
    # eval_loss has no per-example form: seed std, as the CI's second gate expects.
    p = compare_paths(base, base, metric="eval_loss", tolerance=0.005).cells[0].primary
    assert p.band_kind == "seed std" and p.verdict == "noise"
    # Other dev labels in the new run (other data): the means are still compared, by seed std, and it says why.
    other = store_run(tmp_path / "b", {"sift": [preds([]), preds([1])]}, labels=1 - DEV)
    p = compare_paths(base, other).cells[0].primary
    assert p.band_kind == "seed std" and "bootstrap not used" in p.band_note and "disagree on the labels" in p.band_note
    # Only one side with predictions: seed std.
    (other / "predictions.parquet").unlink()
    assert compare_paths(base, other).cells[0].primary.band_kind == "seed std"


def test_output_says_which_band(tmp_path: Path) -> None:
    base = store_run(tmp_path / "a", {"sift": [preds([])], "lora": [preds([])]})
    new = store_run(tmp_path / "b", {"sift": [preds(range(20))], "lora": [preds([])]})
    md = to_markdown(compare_paths(base, new))
    assert "| 95% CI |" in md
    sift = next(ln for ln in md.splitlines() if ln.startswith("| mrpc | sift"))
    assert "bootstrap" in sift and "**REGRESSED**" in sift and "-5.00pt" in sift
    table = run_cli(base, new)
    assert table.exit_code == 1 and "bootstrap" in table.output
    data = json.loads(run_cli(base, new, "--format", "json").output)
    assert {c["metrics"][0]["band_kind"] for c in data["cells"]} == {"bootstrap"}
    plain = to_markdown(compare_paths(base, new, metric="eval_loss"))
    assert "seed std" in plain and "95% CI" not in plain
