"""MRPC with MiniLM: full, LoRA, SIFT and random sparse at one budget (the paper's Table 4 / Figure 6 question).

    python benchmarks/bench_mrpc.py --out /tmp/bench_mrpc.json          # full train set, 3 epochs (CPU: hours)
    python benchmarks/bench_mrpc.py --max-train-samples 64 --epochs 1        # smoke test

Prints one JSON object: the settings and, per method, dev F1/accuracy of the best epoch, trainable
parameters, train time and peak memory. With --out the file is rewritten after every method, so a long
run that is cut short keeps what finished. Peak memory on CPU is the process's peak RSS, so methods that
run later in the same process can only report the same or a higher figure (run one method per process
with --methods to compare memory).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch

from sift_bench.spec import TrainSettings, TrialSpec
from sift_bench.trial import run_trial

# Peak learning rates: full fine-tuning wants a small one; the PEFT methods share one larger rate so
# SIFT, random and LoRA are compared at equal footing.
LEARNING_RATES = {"full": 5e-5, "lora": 5e-4, "sift": 5e-4, "random": 5e-4, "adapter": 5e-4, "classifier_only": 1e-3}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="sift,random,lora,full")
    ap.add_argument("--budget", default="0.8%")
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-train-samples", type=int, default=None)
    ap.add_argument("--max-eval-samples", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None, help="GLUE folder; default: the embedded MRPC copy")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    report: dict = {
        "benchmark": "mrpc-minilm",
        "settings": vars(args) | {"learning_rates": LEARNING_RATES},
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": [],
    }  # fmt: skip
    for method in args.methods.split(","):
        train = TrainSettings(
            learning_rate=LEARNING_RATES[method], batch_size=args.batch_size, epochs=args.epochs,
            max_train_samples=args.max_train_samples, max_eval_samples=args.max_eval_samples,
        )  # fmt: skip
        budget = None if method in ("full", "classifier_only") else args.budget
        spec = TrialSpec(model="minilm-l6", task="mrpc", method=method, budget=budget, seed=args.seed,
                         train=train, data_dir=args.data_dir, suite="bench_mrpc")  # fmt: skip
        r = run_trial(spec, progress=False)
        row = {
            "method": method, "status": r.status, "error": r.error, "budget": budget,
            "knob": r.knob, "knob_value": r.knob_value, "best_epoch": r.best_epoch,
            "f1": r.best.get("f1"), "accuracy": r.best.get("accuracy"),
            "trainable_params": r.trainable_params, "head_params": r.head_params, "total_params": r.total_params,
            "train_seconds": round(r.train_seconds, 1), "tokens_per_second": round(r.tokens_per_second, 1),
            "peak_memory_mib": round(r.peak_memory_bytes / 2**20, 1), "epochs": r.epochs,
        }  # fmt: skip
        report["results"].append(row)
        print(f"[bench_mrpc] {method}: {r.status} f1={row['f1']} acc={row['accuracy']} "
              f"{row['train_seconds']}s", file=sys.stderr, flush=True)  # fmt: skip
        if args.out:
            with open(args.out, "w") as f:
                json.dump(report, f, indent=2)
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
