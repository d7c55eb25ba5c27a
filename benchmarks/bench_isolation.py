"""True costs: does a trial record the same peak memory alone, first or last in a suite, and next to others?

    python benchmarks/bench_isolation.py --out benchmarks/results/bench_isolation.json     # ~10 min, 2 cores
    python benchmarks/bench_isolation.py --samples 64 --modes alone,serial                 # smoke test

Three trials (full fine-tuning, classifier-only, SIFT at 0.5%; MiniLM-L6 on the embedded SST-2 slice) run:
- `alone`: each with `sift-bench trial` in a process of its own (the reference);
- `serial` / `serial_reversed`: as one suite under `sift-bench run --serial`, in both orders;
- `ray`: under local Ray, two at a time;
- `serial_shared` / `ray_shared`: the same with `--no-isolate` (trials share a process, as before the fix).
Prints one JSON object: per mode and trial the recorded peak memory and its ratio to the alone figure, and
per mode the summed time inside trials and the run's wall time, so isolation's cost reads as a ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

METHODS = {"full": 1e-4, "classifier_only": 1e-2, "sift": 1e-3}  # method -> learning rate (the quickstart's)
ALL_MODES = ("alone", "serial", "serial_reversed", "ray", "serial_shared", "ray_shared")


def suite_yaml(name: str, methods: list[str], samples: int, epochs: float) -> str:
    entries = "\n".join(f"  {m}:\n    train: {{learning_rate: {METHODS[m]}}}" for m in methods)
    return f"""name: {name}
schema_version: 1
models: [minilm-l6]
tasks: [sst2]
methods:
{entries}
budgets: ["0.5%"]
seeds: [0]
train: {{batch_size: 16, epochs: {epochs}, max_seq_len: 64, max_train_samples: {samples},
        max_eval_samples: {samples}, precision: fp32}}
resources: {{cpu: 1, gpu: 0}}
"""


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "sift_bench", *args], check=True, stdout=subprocess.DEVNULL)


def run_alone(method: str, samples: int, epochs: float, out: Path) -> dict:
    budget = ["--budget", "0.5%"] if method == "sift" else []
    t0 = time.perf_counter()
    cli("trial", "--model", "minilm-l6", "--task", "sst2", "--method", method, *budget, "--seed", "0",
        "--epochs", str(epochs), "--lr", str(METHODS[method]), "--batch-size", "16", "--max-seq-len", "64",
        "--max-train-samples", str(samples), "--max-eval-samples", str(samples), "--precision", "fp32",
        "--out", str(out))  # fmt: skip
    wall = time.perf_counter() - t0
    r = json.loads(out.read_text())
    return {"trial_id": r["trial_id"], "method": method, "peak_mib": r["peak_memory_bytes"] / 2**20,
            "train_seconds": r["train_seconds"], "wall_seconds": wall}  # fmt: skip


def run_suite_mode(mode: str, samples: int, epochs: float, tmp: Path) -> tuple[list[dict], dict]:
    methods = list(METHODS)[::-1] if mode == "serial_reversed" else list(METHODS)
    path = tmp / f"{mode}.yaml"
    path.write_text(suite_yaml(f"iso_{mode}", methods, samples, epochs))
    flags = ["--serial"] if mode.startswith("serial") else []
    flags += ["--no-isolate"] if mode.endswith("shared") else []
    results = tmp / f"results_{mode}"
    t0 = time.perf_counter()
    cli("run", str(path), "--results", str(results), *flags)
    wall = time.perf_counter() - t0
    rows = sorted(pq.read_table(results / "trials.parquet").to_pylist(), key=lambda r: r["started_at"])
    manifest = json.loads((results / "manifest.json").read_text())
    trials = [{"trial_id": r["trial_id"], "method": r["method"], "peak_mib": r["peak_memory_bytes"] / 2**20,
               "train_seconds": r["train_seconds"], "isolated": r["isolated"]} for r in rows]  # fmt: skip
    run = manifest["runs"][-1]
    return trials, {
        "wall_seconds": wall,
        "trial_seconds": run["trial_seconds"],
        "run_wall_seconds": run["wall_seconds"],
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=200, help="training and dev sentences")
    ap.add_argument("--epochs", type=float, default=1)
    ap.add_argument("--modes", default=",".join(ALL_MODES))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    modes = args.modes.split(",")
    report: dict = {
        "settings": {"samples": args.samples, "epochs": args.epochs, "methods": METHODS, "budget": "0.5%"},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "modes": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-isolation-") as d:
        tmp = Path(d)
        alone = {}
        if "alone" in modes:
            for m in METHODS:
                alone[m] = run_alone(m, args.samples, args.epochs, tmp / f"alone_{m}.json")
            report["modes"]["alone"] = {"trials": list(alone.values())}
        for mode in modes:
            if mode == "alone":
                continue
            trials, timing = run_suite_mode(mode, args.samples, args.epochs, tmp)
            for t in trials:
                ref = alone.get(t["method"])
                if ref:
                    assert ref["trial_id"] == t["trial_id"], "the suite's trial is not the one run alone"
                    t["ratio_to_alone"] = t["peak_mib"] / ref["peak_mib"]
                    t["diff_to_alone_mib"] = t["peak_mib"] - ref["peak_mib"]
            report["modes"][mode] = {"trials": trials, **timing}
    for iso, shared in (("serial", "serial_shared"), ("ray", "ray_shared")):
        if iso in report["modes"] and shared in report["modes"]:
            a, b = report["modes"][iso], report["modes"][shared]
            report[f"{iso}_isolation_cost"] = {
                "trial_seconds_ratio": a["trial_seconds"] / b["trial_seconds"],
                "wall_seconds_ratio": a["wall_seconds"] / b["wall_seconds"],
            }
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    main()
