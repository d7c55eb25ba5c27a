"""Measured peak memory of real trials next to the memory model's estimate for the same trials.

    python benchmarks/bench_memory_model.py results/baselines/quickstart \
        --out benchmarks/results/bench_memory_model.json

Reads the trials of a results folder (each measured in a process of its own: `isolated` must be true) and,
for every trial of full fine-tuning, LoRA, SIFT and classifier-only, puts its measured peak next to what
`sift.analysis.memory` predicts from the trial's own spec (model, method knob, batch size, sequence length,
fp32). A CPU peak also holds the interpreter, the libraries, the weights and the data, so the benchmark
measures that floor once (a fresh process that imports the trial code, loads the model and the task's rows
and trains nothing) and compares what each trial needs above it with the model's gradients + optimizer state
+ activations + method extras. The difference between two methods needs no floor: full minus SIFT is read
the same way from both. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

MIB = 2**20
METHODS = ("full", "lora", "sift", "classifier_only")

FLOOR = """
import json, sys
from pathlib import Path
from sift_bench.spec import TrialSpec
from sift_bench.trial import run_trial  # the imports a trial's process makes
from sift_bench.trial_setup import load_model_with_head, load_rows, load_task
spec = TrialSpec.model_validate_json(sys.argv[1])
task = load_task(spec.task)
rows = load_rows(task, spec.data_dir, spec.train)
loaded = load_model_with_head(spec.model, task)
status = Path("/proc/self/status").read_text().splitlines()
print(json.dumps({"floor_bytes": int(next(l for l in status if l.startswith("VmHWM")).split()[1]) * 1024}))
"""


def measure_floor(spec_json: str) -> int:
    out = subprocess.run([sys.executable, "-c", FLOOR, spec_json], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["floor_bytes"]


def estimate(row: dict) -> dict[str, float]:
    """The memory model's bytes for one trial row, part by part (fp32 on CPU, the trial's batch and length)."""
    from sift.analysis.memory import MemorySetup, MethodSpec, activation_terms, predict_memory
    from sift_bench.methods import METHODS as REGISTRY
    from sift_bench.methods.base import resolve_targets
    from sift_bench.spec import TrialSpec
    from sift_bench.trial_setup import load_model_with_head, load_task

    spec = TrialSpec.model_validate_json(row["spec"])
    model = load_model_with_head(spec.model, load_task(spec.task)).model
    # On CPU torch keeps dropout's scaled noise in the activation dtype, so a mask costs 4 bytes in fp32.
    setup = MemorySetup(
        param_bytes=4, grad_bytes=4, moment_bytes=4, activation_bytes=4, lora_bytes=4, dropout_mask_bytes=4,
        seq_len=spec.train.max_seq_len, batch_size=spec.train.batch_size,
    )  # fmt: skip
    opts = REGISTRY.get(spec.method).parse_options(spec.method_options)
    if spec.method == "classifier_only":
        # Nothing below the head requires a gradient, so autograd keeps no encoder activations; the head's
        # weights get a gradient and two moments.
        head = row["head_params"]
        params = sum(p.numel() for p in model.parameters()) * 4
        return {"params": params, "grads": head * 4, "optimizer": head * 8, "activations": 0, "extra": 0}
    if spec.method == "full":
        method = MethodSpec(kind="full")
    elif spec.method == "lora":
        method = MethodSpec(kind="lora", lora_rank=int(row["knob_value"]),
                            targets=resolve_targets(model, opts.target_modules, "qv"))  # fmt: skip
    else:
        method = MethodSpec(kind="sift", sparsity=float(row["knob_value"]),
                            targets=resolve_targets(model, opts.target_modules, "attention"))  # fmt: skip
    p = predict_memory(model, method, setup)
    base = sum(q.numel() for q in model.parameters()) * 4
    assert activation_terms(model, set(), setup) is not None, "no activation formula for this architecture"
    # The head trains in every method (its gradient and moments are counted by `full` already).
    head = 0 if spec.method == "full" else row["head_params"] * 12
    return {"params": base, "grads": p.grads, "optimizer": p.optimizer + head, "activations": p.activations or 0,
            "extra": p.params - base}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="?", default="results/baselines/quickstart")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    rows = [r for r in pq.read_table(Path(args.results) / "trials.parquet").to_pylist()
            if r["status"] == "ok" and r["method"] in METHODS]  # fmt: skip
    if not rows or not all(r.get("isolated") for r in rows):
        raise SystemExit(f"{args.results}: needs ok trials measured in processes of their own (isolated=true)")
    floor = measure_floor(rows[0]["spec"])
    trials = []
    for r in sorted(rows, key=lambda r: METHODS.index(r["method"])):
        e = estimate(r)
        above = e["grads"] + e["optimizer"] + e["activations"] + e["extra"]
        trials.append({
            "method": r["method"], "budget": r["budget"], "knob": r["knob"], "knob_value": r["knob_value"],
            "trainable_params": r["trainable_params"], "measured_peak_mib": r["peak_memory_bytes"] / MIB,
            "measured_above_floor_mib": (r["peak_memory_bytes"] - floor) / MIB,
            "model_above_weights_mib": above / MIB,
            "model_parts_mib": {k: v / MIB for k, v in e.items()},
        })  # fmt: skip
    by = {t["method"]: t for t in trials}
    report = {"results": args.results, "floor_mib": floor / MIB, "trials": trials}
    if "full" in by and "sift" in by:
        measured = by["full"]["measured_peak_mib"] - by["sift"]["measured_peak_mib"]
        model = by["full"]["model_above_weights_mib"] - by["sift"]["model_above_weights_mib"]
        report["full_minus_sift"] = {"measured_mib": measured, "model_mib": model, "ratio": measured / model}
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    main()
