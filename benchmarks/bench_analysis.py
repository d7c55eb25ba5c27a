"""The paper's gradient evidence on MiniLM + MRPC: quasi-sparsity (Figure 3(d)) and selection stability (Figure 4).

    python benchmarks/bench_analysis.py                      # ~5 min on 2 busy CPU cores
    python benchmarks/bench_analysis.py --steps 5 --num-batches 2   # smoke test

Targets the attention projections (query, key, value, attention.output.dense) of the pre-trained model
and of a random-init copy (same config, seed 0), on the first MRPC training batches in file order (the
embedded copy, or --data-dir), in training mode (dropout on). Prints one JSON object: settings, timings
and the headline numbers (share of the squared gradient norm in the top-x% entries; stability means);
the full tables and figures go to --out (Parquet + HTML, as `sift-bench analyze` writes them).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import pandas as pd
import torch

from sift.analysis import DEFAULT_FRACTIONS
from sift_bench import analyze as an


def _quasi_sparsity_numbers(table: pd.DataFrame) -> dict:
    last = table["batch"].max()
    acc = table[(table["mode"] == "accumulated") & (table["batch"] == last)]
    single = table[(table["mode"] == "batch") & (table["scope"] == "overall")]
    out: dict = {}
    for init, g in acc.groupby("init", sort=False):
        out[init] = {
            f"top_{100 * f:g}%": {
                "overall": round(float(r[r.scope == "overall"]["share"].iloc[0]), 4),
                "global": round(float(r[r.scope == "global"]["share"].iloc[0]), 4),
                "weight_min": round(float(r[r.scope == "weight"]["share"].min()), 4),
                "weight_max": round(float(r[r.scope == "weight"]["share"].max()), 4),
                "single_batch_overall_mean": round(
                    float(single[(single["init"] == init) & (single["fraction"] == f)]["share"].mean()), 4
                ),
            }
            for f, r in g.groupby("fraction")
        }
    return out


def _stability_numbers(table: pd.DataFrame) -> dict:
    later = table[(table["scope"] == "overall") & (table["step"] > 0)]
    return {
        f"{init}, top {100 * f:g}%": {
            "share_own_mean": round(float(g["share_own"].mean()), 4),
            "share_first_mean": round(float(g["share_first"].mean()), 4),
            "share_first_min": round(float(g["share_first"].min()), 4),
            "jaccard_first_mean": round(float(g["jaccard_first"].mean()), 4),
            "jaccard_first_last": round(float(g.sort_values("step")["jaccard_first"].iloc[-1]), 4),
            "jaccard_prev_mean": round(float(g["jaccard_prev"].mean()), 4),
        }
        for (init, f), g in later.groupby(["init", "fraction"], sort=False)
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--task", default="mrpc")
    ap.add_argument("--data-dir", default=None, help="GLUE folder; default: the embedded MRPC copy")
    ap.add_argument("--num-batches", type=int, default=4, help="batches for quasi-sparsity")
    ap.add_argument("--steps", type=int, default=12, help="AdamW steps (= batches) for stability")
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-seq-len", type=int, default=128)
    ap.add_argument("--stability-fractions", default="0.01,0.05")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/analysis", help="folder for the Parquet tables and HTML figures")
    args = ap.parse_args(argv)

    report: dict = {"settings": vars(args), "torch": torch.__version__, "machine": platform.machine()}
    started = time.perf_counter()
    loaded = an.load(args.model, args.task, args.data_dir, args.batch_size, args.max_seq_len,
                     max(args.num_batches, args.steps), seed=args.seed)  # fmt: skip
    report["settings"]["targets"] = loaded.targets
    report["load_seconds"] = round(time.perf_counter() - started, 1)

    t = time.perf_counter()
    table, fig = an.quasi_sparsity(loaded, list(DEFAULT_FRACTIONS), args.num_batches, True, args.seed)
    paths = an.write_outputs(table, fig, args.out, "quasi_sparsity")
    report["quasi_sparsity"] = {"seconds": round(time.perf_counter() - t, 1), "files": [str(p) for p in paths],
                                "share_of_squared_grad_norm": _quasi_sparsity_numbers(table)}  # fmt: skip

    t = time.perf_counter()
    fractions = [float(f) for f in args.stability_fractions.split(",")]
    table, fig = an.stability(loaded, fractions, args.steps, args.lr, True, args.seed)
    paths = an.write_outputs(table, fig, args.out, "stability")
    report["stability"] = {"seconds": round(time.perf_counter() - t, 1), "files": [str(p) for p in paths],
                           "steps_1_to_end": _stability_numbers(table)}  # fmt: skip
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
