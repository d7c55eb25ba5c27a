"""The device check: everything that must work on a GPU, in one run of at most 5 minutes. Prints JSON.

    benchmarks/device_check.sh                      # on a CUDA machine; JSON on stdout
    benchmarks/device_check.sh --out benchmarks/results/device_check_h200.json
    benchmarks/device_check.sh --dry-run            # the same code paths on the CPU at tiny sizes (seconds)

Sections of the JSON:
  engine   benchmarks/bench_engine.py on CUDA (full, lora, sift_fused, sift_hook, floor): step times, their
           ratios and each variant's peak torch.cuda.max_memory_allocated, on BERT-base and on a random-init
           Llama of 1.24 B parameters in bf16 (dry run: bert-tiny and a bf16 llama-tiny, on the CPU)
  trials   one short MRPC trial each for full, lora and sift with MiniLM-L6 (`sift_bench.trial.run_trial`;
           the embedded MRPC copy, no data dir)
  oom      a trial run under a memory cap it cannot fit in, on purpose: it must come back status "failed"
           with an out-of-memory error, and the process must carry on. The cap: on CUDA a per-process
           memory fraction; on the CPU an address-space limit (RLIMIT_AS) a little above what the process
           already maps, so the trial's activations are refused at once and nothing is eaten.
  ok       true when every trial but the OOM one is "ok" and the OOM one is "failed" for lack of memory
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Tokenizers' Rust thread pool would start threads under the OOM trial's address-space cap.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench_engine

from sift_bench.spec import TrainSettings, TrialResult, TrialSpec
from sift_bench.trial import run_trial

ENGINE_SHAPES = {"cuda": ["bert-base", "llama-1b"], "dry-run": ["bert-tiny", "llama-tiny-bf16"]}
ENGINE_REPS = {"cuda": 10, "dry-run": 2}
TRIAL_METHODS = {"full": None, "lora": "0.8%", "sift": "0.8%"}  # method -> budget
MODEL = "minilm-l6"
# The OOM trial: full fine-tuning of MiniLM on 512 examples x 128 tokens in one batch needs several GB of
# activations; the cap leaves it far less than that.
OOM_TRAIN = {"batch_size": 512, "max_train_samples": 512, "max_seq_len": 128, "max_eval_samples": 8}
OOM_CAP_BYTES = 512 * 2**20
OOM_WORDS = ("out of memory", "can't allocate memory", "cannot allocate memory", "outofmemoryerror")


def trial_settings(dry_run: bool) -> TrainSettings:
    if dry_run:
        return TrainSettings(epochs=1, batch_size=8, max_seq_len=32, max_train_samples=16, max_eval_samples=16)
    return TrainSettings(epochs=1, batch_size=32, max_seq_len=128, max_train_samples=1024, max_eval_samples=408)


def summary(result: TrialResult, seconds: float) -> dict[str, Any]:
    return {
        "status": result.status,
        "error": (result.error or "").splitlines()[0] if result.error else None,
        "device": result.device,
        "primary_metric": result.primary_metric,
        "score": result.best.get(result.primary_metric) if result.best else None,
        "trainable_params": result.trainable_params,
        "train_seconds": round(result.train_seconds, 3),
        "tokens_per_second": round(result.tokens_per_second, 1),
        "peak_memory_bytes": result.peak_memory_bytes,
        "wall_seconds": round(seconds, 2),
    }


def run_timed(spec: TrialSpec) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = run_trial(spec, progress=False)
    return summary(result, time.perf_counter() - t0)


def engine_section(mode: str) -> dict[str, Any]:
    device = "cuda" if mode == "cuda" else "cpu"
    return {
        name: bench_engine.bench_shape(bench_engine.SHAPES[name], device, ENGINE_REPS[mode], rss=False)
        for name in ENGINE_SHAPES[mode]
    }


def trials_section(dry_run: bool) -> dict[str, Any]:
    train = trial_settings(dry_run)
    return {
        method: run_timed(TrialSpec(model=MODEL, task="mrpc", method=method, budget=budget, train=train))
        for method, budget in TRIAL_METHODS.items()
    }


@contextmanager
def memory_cap(device: str, cap_bytes: int) -> Iterator[None]:
    """Let the block allocate about `cap_bytes` more than the process holds now; restored afterwards."""
    if device == "cuda":
        torch.cuda.empty_cache()  # the cap counts cached blocks too
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_allocated() + cap_bytes) / total)
        try:
            yield
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0)
            torch.cuda.empty_cache()
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    mapped = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (mapped + cap_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def oom_section(device: str) -> dict[str, Any]:
    spec = TrialSpec(model=MODEL, task="mrpc", method="full", train=TrainSettings(epochs=1, **OOM_TRAIN))
    run_trial(  # load the model and data once uncapped, so the cap catches the training step, not an import
        TrialSpec(model=MODEL, task="mrpc", method="classifier_only", train=trial_settings(dry_run=True)),
        progress=False,
    )
    with memory_cap(device, OOM_CAP_BYTES):
        out = run_timed(spec)
    error = (out["error"] or "").lower()
    out["cap_bytes"] = OOM_CAP_BYTES
    out["out_of_memory"] = out["status"] == "failed" and any(w in error for w in OOM_WORDS)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="the same code paths on the CPU at tiny sizes")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON to this file")
    args = ap.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("device_check: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU "
              "machine, or pass --dry-run to run the same code paths on the CPU.", file=sys.stderr)  # fmt: skip
        return 2
    mode = "dry-run" if args.dry_run else "cuda"
    if args.dry_run:
        # A GPU in the box must not be used: the dry run is what CI runs, and it must mean the same anywhere.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    device = "cpu" if args.dry_run else "cuda"
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "mode": mode,
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    report["engine"] = engine_section(mode)
    report["trials"] = trials_section(args.dry_run)
    report["oom"] = oom_section(device)
    report["ok"] = all(t["status"] == "ok" for t in report["trials"].values()) and report["oom"]["out_of_memory"]
    report["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
