"""What each trial speed-up saves, and that it changes no result: one budget-curve-sized trial, run in-process
with each speed-up added in turn.

    python benchmarks/bench_trial_speedups.py --out benchmarks/results/bench_trial_speedups.json   # ~10 min

The trial: MiniLM-L6, SIFT at 0.5% on the first 600 sentences of the embedded SST-2 slice (20% held out to
select the epoch), all 872 dev sentences, 3 epochs, forgetting measured (its "before" value cached by a
warm-up run). Variants, each added to the one before:

- `file_order`: dev and held-out scored in file order, dev scored every epoch (before these speed-ups);
- `by_length`: scored shortest first (`Task.eval_order`): same predictions, less padding;
- `dev_at_best`: with held-out selection, dev scored only on epochs that became the best on held-out (the
  only dev scores a report reads);
- `early_stop`: `train.early_stopping: {patience: 1}` on top (a different trial id: it may stop before an
  epoch that would have scored better, so its result is compared, not required equal).

Each variant runs `--repeats` times, interleaved, and the report gives the median wall time of `run_trial`,
its ratio to `file_order`, and whether the best epoch's metrics and predictions equal `file_order`'s.
Run it alone on the machine: it measures wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from sift_bench import trial
from sift_bench.spec import TrainSettings, TrialSpec
from sift_bench.trial import run_trial

VARIANTS = ("file_order", "by_length", "dev_at_best", "early_stop")


def spec(early_stop: bool) -> TrialSpec:
    train = TrainSettings(
        learning_rate=1e-3, epochs=3, batch_size=16, eval_batch_size=16, max_seq_len=64,
        max_train_samples=600, heldout_fraction=0.2, precision="fp32",
        early_stopping={"patience": 1} if early_stop else None,
    )  # fmt: skip
    return TrialSpec(model="minilm-l6", task="sst2", method="sift", budget="0.5%", seed=0, train=train)


def run_variant(name: str) -> tuple[float, Any]:
    trial.EVAL_BY_LENGTH = name != "file_order"
    trial.DEV_EVERY_EPOCH = name in ("file_order", "by_length")
    t0 = time.perf_counter()
    result = run_trial(spec(early_stop=name == "early_stop"), progress=False)
    wall = time.perf_counter() - t0
    if result.status != "ok":
        raise SystemExit(f"{name}: {result.error}")
    return wall, result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    run_variant("by_length")  # warm-up: loads the model files and caches the forgetting "before" value
    walls: dict[str, list[float]] = {v: [] for v in VARIANTS}
    results: dict[str, Any] = {}
    for _ in range(args.repeats):
        for name in VARIANTS:
            wall, results[name] = run_variant(name)
            walls[name].append(wall)
    base = results["file_order"]
    base_wall = statistics.median(walls["file_order"])
    report: dict[str, Any] = {"torch_threads": torch.get_num_threads(), "repeats": args.repeats, "variants": {}}
    for name in VARIANTS:
        r = results[name]
        dev_evals = sum(1 for e in r.epochs if "accuracy" in e)
        report["variants"][name] = {
            "wall_seconds": walls[name],
            "median_wall_seconds": statistics.median(walls[name]),
            "ratio_to_file_order": statistics.median(walls[name]) / base_wall,
            "eval_seconds": r.eval_seconds,
            "epochs_run": len(r.epochs),
            "dev_evaluations": dev_evals,
            "best_epoch": r.best_epoch,
            "stopped_epoch": r.stopped_epoch,
            "accuracy": r.best["accuracy"],
            # Summation order moves the mean losses (dev and held-out) in their last digits; the rest must be equal.
            "same_best_metrics": all(
                abs(v - base.best[k]) <= (1e-6 if k.endswith("eval_loss") else 0.0)
                for k, v in r.best.items()
                if k in base.best
            ),
            "max_abs_metric_difference": max(abs(v - base.best[k]) for k, v in r.best.items() if k in base.best),
            "same_predictions": [p.prediction for p in r.predictions] == [p.prediction for p in base.predictions],
            "forgetting": r.forgetting,
        }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
