"""`sift-bench analyze ...`: the paper's measurements on a model and a task (sift_bench.analyze)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from sift_bench.cli.common import make_typer, print_all, user_errors

analyze_app = make_typer("Reproduce the paper's evidence on a model and task: Parquet tables + HTML figures.")
_Model = Annotated[str, typer.Option(help="HF id, local path, or alias (minilm-l6).")]
_Task = Annotated[str, typer.Option(help="Task whose training batches are used (e.g. mrpc).")]
_DataDir = Annotated[str | None, typer.Option(envvar="SIFT_BENCH_DATA", help="GLUE folder (classic layout).")]
_Target = Annotated[
    list[str] | None, typer.Option("--target", help="Target module (repeat); default: the attention projections.")
]
_Fraction = Annotated[list[float] | None, typer.Option("--fraction", help="Top fraction x (repeat), 0.01 = 1%.")]
_Random = Annotated[bool, typer.Option(help="Also analyse a random-init copy (same config and seed).")]
_Out = Annotated[str, typer.Option(help="Output folder for <analysis>.parquet and .html.")]
_Batches = Annotated[int, typer.Option(help="First training batches used (file order).")]
_BatchSize = Annotated[int, typer.Option(help="Examples per batch.")]
_SeqLen = Annotated[int, typer.Option(help="Tokens per example after truncation.")]
_Seed = Annotated[int, typer.Option(help="Seeds the task head, the directions and the random-init copy.")]
_Device = Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda or cuda:N.")]


def _analyze(body: Callable[[], list[object]]) -> None:
    """Print what a command body returns (tables, file paths); bad input becomes a red line and exit 2."""
    with user_errors():
        items = body()
    print_all(items)


@analyze_app.command("landscape")
def analyze_landscape(
    model: _Model = "minilm-l6", task: _Task = "mrpc", data_dir: _DataDir = None,
    mode: Annotated[str, typer.Option(help="random: directions around each model; interpolate: the paper's "
                                      "random-init -> pre-trained line.")] = "random",
    dims: Annotated[int, typer.Option(help="1 (a line) or 2 (a plane).")] = 1,
    span: Annotated[float, typer.Option(help="Grid half-width (random mode).")] = 1.0,
    points: Annotated[int, typer.Option(help="Grid points per axis.")] = 21,
    num_batches: _Batches = 2, batch_size: _BatchSize = 16, max_seq_len: _SeqLen = 128,
    compare_random: _Random = True, seed: _Seed = 0, device: _Device = "auto", out: _Out = "results/analysis",
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
    fraction: _Fraction = None, num_batches: _Batches = 4, batch_size: _BatchSize = 16, max_seq_len: _SeqLen = 128,
    compare_random: _Random = True, seed: _Seed = 0, device: _Device = "auto", out: _Out = "results/analysis",
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
    fraction: _Fraction = None,
    steps: Annotated[int, typer.Option(help="Training steps (one batch each).")] = 20,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate of the SGD steps.")] = 2e-5,
    batch_size: _BatchSize = 16, max_seq_len: _SeqLen = 128,
    compare_random: _Random = True, seed: _Seed = 0, device: _Device = "auto", out: _Out = "results/analysis",
) -> None:  # fmt: skip
    """How much of each step's gradient the first batch's top-x% holds, and index-set overlap (Figure 4)."""
    from sift_bench import analyze as an

    def body() -> list[object]:
        loaded = an.load(model, task, data_dir, batch_size, max_seq_len, steps, target, device, seed)
        return an.run_stability(loaded, fraction or [0.01], steps, lr, compare_random, seed, out)

    _analyze(body)


@analyze_app.command("memory")
def analyze_memory(
    sparsity: Annotated[float, typer.Option(help="SIFT's trained share of each targeted weight.")] = 0.05,
    lora_rank: Annotated[int, typer.Option(help="LoRA rank to compare with.")] = 8,
    check_model: Annotated[str | None, typer.Option(help="Also measure full/LoRA/SIFT on this (small) model.")] = None,
    task: _Task = "mrpc", data_dir: _DataDir = None, target: _Target = None, batch_size: _BatchSize = 16,
    max_seq_len: _SeqLen = 128, device: _Device = "auto", out: _Out = "results/analysis",
) -> None:  # fmt: skip
    """Predicted memory of full FT, LoRA and SIFT (Table 1, Llama-7B), checked on a small model."""
    from sift_bench import analyze as an

    def body() -> list[object]:
        loaded = None
        if check_model:
            loaded = an.load(check_model, task, data_dir, batch_size, max_seq_len, 1, target, device)
        return an.run_memory(sparsity, lora_rank, out, loaded)

    _analyze(body)
