"""The `sift-bench` commands for trials and suites. Each one parses its flags and calls library functions."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape

from sift_bench import __version__
from sift_bench.cli.analyze import analyze_app
from sift_bench.cli.common import console, err_console, fail, make_typer, user_errors
from sift_bench.cli.evaluate import eval_app
from sift_bench.cli.export import export
from sift_bench.cli.pairs import pairs
from sift_bench.defaults import MEMORY_THRESHOLD, TIME_THRESHOLD, TOLERANCE

app = make_typer("Benchmark sparse fine-tuning (SIFT) against full fine-tuning, LoRA, adapters and more.")
app.add_typer(eval_app, name="eval")
app.add_typer(analyze_app, name="analyze")

_JobAddress = Annotated[str, typer.Option(envvar="RAY_ADDRESS", help="Ray job server, e.g. http://HEAD:8265.")]
_JobId = Annotated[str, typer.Argument(help="Job id printed by `sift-bench submit`.")]


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


def method_options(pairs: list[str] | None) -> dict[str, object]:
    """`-o KEY=VALUE` pairs; a VALUE that parses as JSON is read as JSON (8, 0.1, true, ["query"])."""
    options: dict[str, object] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            from sift_bench.errors import SiftBenchError

            raise SiftBenchError(f"-o/--option '{pair}': write -o KEY=VALUE, e.g. -o rank=8 or -o dropout=0.0.")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return options


@app.command()
def trial(
    model: Annotated[str, typer.Option(help="HF id, local path, or alias (minilm-l6).")] = "minilm-l6",
    task: Annotated[str, typer.Option(help="GLUE task (mrpc, rte, sst2, ...) or instruction set (alpaca).")] = "mrpc",
    method: Annotated[str, typer.Option(help="full, classifier_only, lora, adapter, sift, random.")] = "sift",
    budget: Annotated[str | None, typer.Option(help="'0.8%' of the model's parameters or a count.")] = None,
    option: Annotated[
        list[str] | None, typer.Option("--option", "-o", help="Method option KEY=VALUE (JSON value); repeat.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seeds the head, the data order and dropout.")] = 0,
    epochs: Annotated[float, typer.Option(help="Passes over the training set.")] = 3,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate.")] = 2e-4,
    batch_size: Annotated[int, typer.Option(help="Examples per optimizer step.")] = 16,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches accumulated per step.")] = 1,
    max_seq_len: Annotated[int, typer.Option(help="Tokens per example after truncation.")] = 128,
    max_train_samples: Annotated[int | None, typer.Option(help="Use the first N training examples.")] = None,
    max_eval_samples: Annotated[int | None, typer.Option(help="Use the first N dev examples.")] = None,
    precision: Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16.")] = "auto",
    gradient_checkpointing: Annotated[
        bool, typer.Option("--gradient-checkpointing", help="Recompute activations in backward (less memory).")
    ] = False,
    data_dir: Annotated[
        str | None, typer.Option(envvar="SIFT_BENCH_DATA", help="GLUE folder (classic layout).")
    ] = None,
    out: Annotated[str | None, typer.Option(help="Write the TrialResult here as JSON.")] = None,
) -> None:
    """Run one trial from flags and print its per-epoch dev metrics. Exit 1: the trial failed."""
    from sift_bench.models import resolve_model
    from sift_bench.spec import Budget, TrialSpec
    from sift_bench.tasks import TASKS
    from sift_bench.trial import run_trial, summary_table, validate

    with user_errors():  # everything the flags can get wrong fails here, before a model is loaded
        train = {"learning_rate": lr, "batch_size": batch_size, "grad_accum": grad_accum, "epochs": epochs,
                 "max_seq_len": max_seq_len, "max_train_samples": max_train_samples,
                 "max_eval_samples": max_eval_samples, "precision": precision,
                 "gradient_checkpointing": gradient_checkpointing}  # fmt: skip
        spec = TrialSpec(model=model, task=task, method=method, method_options=method_options(option), seed=seed,
                         budget=None if budget is None else Budget.parse(budget, "--budget"), train=train,
                         data_dir=data_dir)  # fmt: skip
        validate(spec)
        resolve_model(model, TASKS.get(task).kind)
    result = run_trial(spec)
    if out:
        with open(out, "w") as f:
            json.dump(result.model_dump(mode="json"), f, indent=2)
    if result.status != "ok":
        err_console.print(f"[red]trial failed:[/red] {result.error}")
        raise typer.Exit(1)
    console.print(summary_table(result))


# ---- suites: plan, run, and Ray Jobs (sift_bench.driver / schedulers / jobs) -----------------------------


def _warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False, soft_wrap=True)


@app.command()
def run(
    suite: Annotated[str, typer.Argument(help="Suite YAML, e.g. suites/quickstart.yaml.")],
    results: Annotated[str | None, typer.Option(help="Results folder (default: results/<suite name>).")] = None,
    address: Annotated[str | None, typer.Option(help="Join a running Ray cluster (e.g. auto or HEAD:6379).")] = None,
    serial: Annotated[bool, typer.Option("--serial", help="Run trials one by one, without Ray.")] = False,
    max_failures: Annotated[int, typer.Option(help="Retries of a failed trial before it is recorded failed.")] = 1,
    max_concurrent: Annotated[int | None, typer.Option(help="At most this many trials at once.")] = None,
    isolate: Annotated[
        bool,
        typer.Option(
            help="Run each trial in a fresh process, so its recorded memory is its alone. --no-isolate: run "
            "them in this process (--serial) or the Ray worker; faster to start, a debugger can step in, but "
            "later trials' memory figures then include what earlier ones left behind."
        ),
    ] = True,
    track: Annotated[
        str | None, typer.Option(help="Also log each trial to mlflow[=URI], tensorboard[=DIR] or wandb[=DIR].")
    ] = None,
) -> None:
    """Run a suite's trials (skipping those already ok in the results folder) and write Parquet tables.
    Exit 1: some trial failed (its row says why; rerun the same command to retry it)."""
    from sift_bench.driver import run_suite
    from sift_bench.schedulers import configure_ray_driver
    from sift_bench.suite import load_suite
    from sift_bench.trackers import LiveTracking

    with user_errors():
        loaded = load_suite(suite)
        tracking = LiveTracking(track, warn=_warn) if track else None
        if not serial:
            configure_ray_driver()
        try:
            summary = run_suite(loaded, results, serial=serial, address=address, max_failures=max_failures,
                                max_concurrent=max_concurrent, console=console, isolate=isolate,
                                on_recorded=tracking)  # fmt: skip
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/yellow]: finished trials are saved; rerun the command to resume.")
            raise typer.Exit(130) from None
    if summary.failed:
        err_console.print(f"[yellow]{summary.failed} trial(s) failed[/yellow]; see the error column of "
                          f"{summary.results_dir}/trials.parquet; rerun the same command to retry them.")  # fmt: skip
        raise typer.Exit(1)  # scripts and CI must notice; the finished trials are saved all the same


@app.command()
def plan(
    suite: Annotated[str, typer.Argument(help="Suite YAML.")],
    results: Annotated[str | None, typer.Option(help="Results folder to mark done trials from.")] = None,
    detail: Annotated[bool, typer.Option("--detail", help="List every trial instead of the summary.")] = False,
) -> None:
    """Print what a suite would run: trials per task x method, how many are done, where each model comes
    from. Runs nothing, writes nothing."""
    from sift_bench.cli.plan_view import detail_table, model_sources, search_line, summary_table, totals_line
    from sift_bench.driver import default_results_dir, preflight, trial_statuses
    from sift_bench.expand import expand, plan_rows
    from sift_bench.suite import load_suite

    with user_errors():
        loaded = load_suite(suite)
        specs = expand(loaded)
        rows = plan_rows(specs, trial_statuses(results or default_results_dir(loaded)))
        sources = model_sources(loaded.models)
        preflight(loaded)
    console.print(detail_table(f"Suite {loaded.name}", rows) if detail else summary_table(rows))
    console.print(f"Suite [bold]{loaded.name}[/bold]: {totals_line(rows)}")
    if extension := search_line(loaded, specs):
        console.print(extension, highlight=False)
    console.print("Models:")
    for name, where, ok in sources:
        console.print(f"  {name}: " + (where if ok else f"[red]{where}[/red]"), highlight=False)
    bad = [name for name, _, ok in sources if not ok]
    if bad:
        raise fail(f"{suite}: models: {', '.join(bad)} cannot be loaded (see above); fix the `models:` list.")


@app.command()
def submit(
    suite: Annotated[str, typer.Argument(help="Suite YAML inside --working-dir.")],
    address: _JobAddress,
    results: Annotated[str | None, typer.Option(help="Results folder on the cluster (absolute to keep it).")] = None,
    working_dir: Annotated[str, typer.Option(help="Folder uploaded to the cluster as the job's working dir.")] = ".",
    max_failures: Annotated[int, typer.Option(help="Retries of a failed trial.")] = 1,
) -> None:
    """Send `sift-bench run SUITE` to a Ray cluster as a Ray Job and print the job id."""
    from sift_bench.jobs import submit_suite

    with user_errors():
        job_id = submit_suite(suite, address, results_dir=results, working_dir=working_dir, max_failures=max_failures)
    console.print(f"Submitted job [bold]{job_id}[/bold] to {address}")
    console.print(f"Follow it: sift-bench logs {job_id} --address {address} --follow  (or: sift-bench status ...)")
    typer.echo(job_id)


@app.command()
def status(job_id: _JobId, address: _JobAddress) -> None:
    """Print a submitted job's status."""
    from sift_bench.jobs import job_status

    with user_errors():
        info = job_status(address, job_id)
    for key, value in info.items():
        console.print(f"{key}: {value}")


@app.command()
def logs(
    job_id: _JobId,
    address: _JobAddress,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")] = False,
) -> None:
    """Print a submitted job's logs (the driver's output: progress and per-trial lines)."""
    import sys

    from sift_bench.jobs import job_logs

    with user_errors():
        job_logs(address, job_id, follow=follow, write=lambda s: (sys.stdout.write(s), sys.stdout.flush()))


# ---- reports: leaderboard, compare, dashboard (sift_bench.leaderboard / compare / dashboard) ------------


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


@app.command()
def compare(
    baseline: Annotated[str, typer.Argument(help="Baseline results folder (results/<suite>/).")],
    new: Annotated[str, typer.Argument(help="New results folder, judged against the baseline.")],
    tolerance: Annotated[
        float, typer.Option(help="Noise band with one seed; floor of the seed-std and bootstrap bands (points for %).")
    ] = TOLERANCE,
    time_threshold: Annotated[
        float, typer.Option(help="Flag cells whose mean train time grew by more than this ratio (0: off).")
    ] = TIME_THRESHOLD,
    memory_threshold: Annotated[
        float, typer.Option(help="Flag cells whose mean peak memory grew by more than this ratio (0: off).")
    ] = MEMORY_THRESHOLD,
    fmt: Annotated[str, typer.Option("--format", help="Output: table, json or md.")] = "table",
    metric: Annotated[
        str | None, typer.Option(help="Gate on this metric (eval_loss, forgetting) instead of each task's primary one.")
    ] = None,
) -> None:
    """Compare two runs cell by cell, each at its chosen grid point. Exit 0: ok, 1: regression, 2: bad input."""
    from rich.console import Console

    from sift_bench.compare import compare_paths, summary_line, to_markdown, to_rich

    if fmt not in ("table", "json", "md"):
        raise fail(f"--format must be table, json or md, not '{fmt}'.")
    with user_errors():
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
    serve: Annotated[
        bool, typer.Option("--serve", help="Serve it on --host:--port, rebuilt as results change.")
    ] = False,
    host: Annotated[str, typer.Option(help="Address to serve on (--serve).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on (--serve); 0 picks a free one.")] = 8000,
    tolerance: Annotated[float, typer.Option(help="Regression view: as `compare --tolerance`.")] = TOLERANCE,
) -> None:
    """Write one self-contained HTML report (leaderboard, budget curves, Pareto plots, regressions, manifest)."""
    from sift_bench.dashboard import write_dashboard
    from sift_bench.dashboard_server import DashboardServer
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


# `pairs` (A vs B at every budget, bootstrap intervals) lives in cli/pairs.py; listed after the reports.
app.command()(pairs)
app.command()(export)  # cli/export.py: results into MLflow, TensorBoard or W&B
