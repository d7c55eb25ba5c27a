"""Forgetting in the reports: the item bootstrap, the leaderboard column and its marks, `pairs` and `compare`
with `--metric forgetting`, and the dashboard's learned-vs-forgot panel, on constructed results folders."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from results_factory import forgot, result, write_run
from scipy.stats import spearmanr
from typer.testing import CliRunner

from sift_bench import forgetting as F
from sift_bench.cli import app
from sift_bench.compare import compare_paths
from sift_bench.forgetting_bootstrap import (
    HIGHER_IS_BETTER,
    UNITS,
    _midranks,
    _weighted_pearson,
    forgetting_bootstrap,
    item_sets,
)
from sift_bench.leaderboard import write_leaderboard
from sift_bench.pairs import load_pairs
from sift_bench.results import read_forgetting
from sift_bench.significance import draw_counts
from sift_bench.spec import TrainSettings, TrialResult, TrialSpec

N_ITEMS, TOKENS = 200, 10.0  # sentences of the sample, scored tokens each
BEFORE = 30.0 + np.random.default_rng(0).uniform(0, 5, N_ITEMS)  # summed loss per sentence: ~3.25 nats/token


def noise(seed: int, scale: float) -> np.ndarray:
    return np.random.default_rng(100 + seed).normal(0, scale, N_ITEMS)


def trial(method: str, seed: int, acc: float, after: np.ndarray | None, *, budget: str | None = "0.5%",
          lr: float = 1e-3) -> TrialResult:  # fmt: skip
    """An sst2 trial with accuracy `acc`; `after`: its per-sentence losses after training (None: not measured)."""
    spec = TrialSpec(model="m", task="sst2", method=method, budget=budget, seed=seed, suite="s",
                     grid={"learning_rate": lr}, train=TrainSettings(learning_rate=lr))  # fmt: skip
    fields = {} if after is None else forgot("lm_loss", BEFORE, after, weights=[TOKENS] * N_ITEMS)
    return result(spec, {"accuracy": acc}, **fields)


def sift_after(seed: int) -> np.ndarray:
    """sift forgets about 0.2 nats/token, differently on each seed."""
    return BEFORE + TOKENS * 0.2 + noise(seed, 1.0)


def rows(sift_extra: float = 0.0) -> list[TrialResult]:
    out = []
    for seed in (0, 1):
        s = sift_after(seed) + TOKENS * sift_extra
        out += [
            trial("sift", seed, 0.85, s),
            trial("sift", seed, 0.80, BEFORE + TOKENS * 5.0, lr=1e-4),  # forgets most, but scores less: not chosen
            trial("full", seed, 0.90, s + TOKENS, budget=None),  # exactly 1 nat/token more than sift on every item
            trial("lora", seed, 0.84, sift_after(seed)),  # forgets exactly what sift does in the base run
            trial("classifier_only", seed, 0.60, BEFORE.copy(), budget=None),  # the encoder untouched: 0
            trial("random", seed, 0.70, BEFORE + noise(10 + seed, 0.5)),  # forgets about nothing
            trial("adapter", seed, 0.83, None),  # not measured
        ]
    return out


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "run", rows())


def forgetting_of(run: Path, method: str) -> list[float]:
    from sift_bench.results import load_run

    t = load_run(run).trials
    chosen = t[(t["method"] == method) & (t["train.learning_rate"] == 1e-3)]  # sift's other grid point: 1e-4
    return [float(v) for v in chosen["forgetting"]]


# ---------------------------------------------------------------------------------------------------------
# The bootstrap.


def test_units_and_direction_match_the_measures() -> None:
    assert {name: m.units for name, m in F.MEASURES.items()} == UNITS
    assert {name: m.higher_is_better for name, m in F.MEASURES.items()} == HIGHER_IS_BETTER


def test_resampled_spearman_is_scipys_on_the_repeated_items() -> None:
    rng = np.random.default_rng(1)
    x, gold = rng.normal(size=60), rng.integers(0, 6, size=60).astype(float)  # gold full of ties
    x[5] = x[6]
    idx = rng.integers(0, 60, size=(25, 60))
    w = draw_counts(idx)
    ours = _weighted_pearson(w, _midranks(w, x), _midranks(w, gold))
    assert np.allclose(ours, [spearmanr(x[i], gold[i]).statistic for i in idx], atol=1e-12)


def test_one_nat_more_on_every_item_excludes_zero_and_identical_sides_contain_it(run: Path) -> None:
    sets = item_sets(read_forgetting(run))
    ids = {(r.spec.method, r.spec.seed, r.spec.train.learning_rate): r.trial_id for r in rows()}
    side = lambda method: [sets[ids[(method, s, 1e-3)]] for s in (0, 1)]  # noqa: E731
    r = forgetting_bootstrap(side("full"), side("sift"))
    assert r.diff == pytest.approx(1.0) and r.low == pytest.approx(1.0) and r.high == pytest.approx(1.0)
    assert r.distinguishable and r.n_examples == N_ITEMS and r.n_resamples == 1000
    # The observed means are the trials' own forgetting values, averaged over seeds.
    assert r.b_mean == pytest.approx(np.mean(forgetting_of(run, "sift")))
    same = forgetting_bootstrap(side("lora"), side("sift"))
    assert same.diff == 0 and same.low <= 0 <= same.high and not same.distinguishable
    # Noise of mean zero: the interval is not a point, and it holds 0.
    noisy = forgetting_bootstrap(side("random"), side("classifier_only"))
    assert noisy.low < 0 < noisy.high and not noisy.distinguishable


def test_sts_forgetting_bootstrap_on_a_correlation() -> None:
    """An STS-like sample: the forgetful side's cosines lose their link to gold; its Spearman drops more."""
    rng = np.random.default_rng(3)
    gold = rng.integers(0, 11, 400) / 2  # 0-5 in halves: many ties
    before = gold / 5 + rng.normal(0, 0.2, 400)
    calm, lost = before + rng.normal(0, 0.02, 400), before + rng.normal(0, 0.5, 400)

    def run_of(after: np.ndarray, seed: int) -> TrialResult:
        spec = TrialSpec(model="m", task="sst2", method="full", seed=seed, train=TrainSettings())
        return result(spec, {"accuracy": 0.5}, **forgot("sts_zero_shot", before, after, gold=gold))

    a, b = run_of(lost, 0), run_of(calm, 1)
    sets = item_sets({"trial_id": t.trial_id, **i.model_dump()} for t in (a, b) for i in t.forgetting_items)
    r = forgetting_bootstrap([sets[a.trial_id]], [sets[b.trial_id]])
    assert r.diff == pytest.approx(a.forgetting - b.forgetting) and r.diff > 5  # points of Spearman x 100
    assert r.low > 0 and r.distinguishable


# ---------------------------------------------------------------------------------------------------------
# The leaderboard.


def test_leaderboard_forgetting_column_at_the_chosen_grid_point(run: Path, tmp_path: Path) -> None:
    board, md, csv_path = write_leaderboard(run, out_dir=tmp_path / "lb")
    text = md.read_text()
    assert "| method | budget | params | sst2 (accuracy) | avg | sst2 forgetting (nats/token) |" in text
    cell = {r.method: board.cells(r)[-1] for r in board.rows}
    sift = forgetting_of(run, "sift")
    assert len(sift) == 2 and max(sift) < 1  # the chosen lr's seeds, not lr=1e-4's 5 nats/token
    assert cell["sift"] == f"{np.mean(sift):.3f} ± {np.std(sift, ddof=1):.3f}"
    assert cell["classifier_only"] == "0.000 ± 0.000 ★"  # lowest: best
    assert cell["random"].endswith(" ≈")  # about 0, not distinguishable from classifier_only
    assert not cell["full"].endswith(("★", "≈")) and not cell["sift"].endswith(("★", "≈"))
    assert cell["adapter"] == "-"  # not measured
    assert "lm_loss = the rise of the next-token loss on general text (nats/token)" in text
    assert "a paired bootstrap over the items of the forgetting sample pooled over seeds (1000 resamples)" in text
    csv_rows = {r["method"]: r for r in csv.DictReader(io.StringIO(csv_path.read_text()))}
    assert float(csv_rows["full"]["sst2.forgetting_mean"]) - float(csv_rows["sift"]["sst2.forgetting_mean"]) == (
        pytest.approx(1.0)
    )
    assert csv_rows["sift"]["sst2.forgetting_measure"] == "lm_loss" and csv_rows["sift"]["sst2.forgetting_n"] == "2"
    assert (
        csv_rows["adapter"]["sst2.forgetting_mean"] == "" and csv_rows["classifier_only"]["sst2.forgetting_mark"] == "★"
    )
    assert list(csv_rows["sift"])[-7:] == [  # after avg, then the tuning marks (added later) last
        "avg",
        *[f"sst2.forgetting_{c}" for c in ("measure", "mean", "std", "n", "mark")],
        "sst2.tuning",
    ]


def test_no_forgetting_no_column(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [trial("sift", s, 0.8, None) for s in (0, 1)])
    board, md, csv_path = write_leaderboard(run)
    assert "forgetting" not in md.read_text().lower() and "forgetting" not in csv_path.read_text()
    assert board.header() == ["method", "budget", "params", "sst2 (accuracy)", "avg"]


# ---------------------------------------------------------------------------------------------------------
# pairs and compare.


def test_pairs_metric_forgetting(run: Path) -> None:
    report = load_pairs(run, "full", "sift", metric="forgetting")
    (p,) = report.pairs
    assert p.result is not None and p.result.diff == pytest.approx(1.0) and p.verdict == "sift better"  # forgot less
    assert report.to_markdown().count("+1.000") == 3  # the difference and both ends of its interval
    first = report.footer()[0]
    assert "bootstrap over items of the forgetting sample" in first and "lm_loss in nats/token" in first
    (same,) = load_pairs(run, "lora", "sift", metric="forgetting").pairs
    assert same.verdict == "indistinguishable"
    (none,) = load_pairs(run, "adapter", "sift", metric="forgetting").pairs
    assert none.result is None and "adapter's trials have no forgetting measured" in none.note
    out = CliRunner().invoke(app, ["pairs", str(run), "full", "sift", "--metric", "forgetting", "--markdown"])
    assert out.exit_code == 0 and "| sst2 (forgetting) |" in out.output and "**sift better**" in out.output


def test_pairs_metric_forgetting_without_per_item_rows_is_exit_2(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [trial(m, 0, 0.8, None) for m in ("sift", "lora")])
    out = CliRunner().invoke(app, ["pairs", str(run), "sift", "lora", "--metric", "forgetting"])
    assert out.exit_code == 2 and "no per-item forgetting" in " ".join(out.output.split())


def test_compare_gates_on_forgetting(tmp_path: Path) -> None:
    base = write_run(tmp_path / "base", rows())
    new = write_run(tmp_path / "new", rows(sift_extra=0.5))  # sift (and full, built on it) forget 0.5 more
    cmp = compare_paths(base, new, metric="forgetting", tolerance=0.02)
    cells = {c.method: c for c in cmp.cells}
    change = cells["sift"].primary
    assert change.metric == "forgetting" and not change.higher_is_better and change.band_kind == "bootstrap"
    assert change.delta == pytest.approx(0.5) and change.verdict == "regressed" and cells["sift"].regressed
    assert cells["lora"].primary.verdict == "noise" and not cells["lora"].regressed  # unchanged
    assert cells["adapter"].primary is None or cells["adapter"].primary.delta is None  # not measured: no gate
    # Less forgetting is an improvement; the default tolerance (1, meant for points) hides half a nat.
    assert compare_paths(new, base, metric="forgetting", tolerance=0.02).regressed is False
    assert compare_paths(base, new, metric="forgetting").regressed is False
    args = ["compare", str(base), str(new), "--metric", "forgetting", "--tolerance", "0.02", "--format", "md"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 1 and "forgetting +0.50 beyond the noise band ±0.02" in out.output


# ---------------------------------------------------------------------------------------------------------
# The dashboard.


def test_dashboard_learned_vs_forgot_panel_with_its_pareto_front(run: Path, tmp_path: Path) -> None:
    from sift_bench.aggregate import aggregate
    from sift_bench.dashboard import build_dashboard, cell_frame, learned_vs_forgot
    from sift_bench.results import load_run

    cfg = cell_frame(aggregate(load_run(run).trials))
    (fig,) = learned_vs_forgot(cfg, {m: "#000" for m in cfg["method"]})
    traces = {t.name: t for t in fig.data}
    assert set(traces) == {"sift", "full", "lora", "classifier_only", "random", "Pareto front"}  # adapter: unmeasured
    assert list(traces["sift"].x) == [85.0] and traces["sift"].y[0] == pytest.approx(
        np.mean(forgetting_of(run, "sift"))
    )
    # Scores 60 / 70 / 85 / 90 forgetting 0 / ~0 / 0.2 / 1.2 are the front; lora (84, the same 0.2 as sift) is not.
    assert list(traces["Pareto front"].x) == [60.0, 70.0, 85.0, 90.0]
    assert "lm_loss, nats/token" in fig.layout.yaxis.title.text
    page = build_dashboard([run])
    assert 'id="learned-vs-forgot"' in page and 'id="forgot-0"' in page and "sst2 forgetting (nats/token)" in page
    plain = write_run(tmp_path / "plain", [trial("sift", s, 0.8, None) for s in (0, 1)])
    assert "learned-vs-forgot" not in build_dashboard([plain])  # only when some trial measured forgetting
