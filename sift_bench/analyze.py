"""`sift-bench analyze ...`: the paper's measurements on a model and a task, as Parquet tables and figures.

Each command loads the model and the first training batches (file order, no shuffling), runs an analysis
from `sift.analysis`, and writes `<out>/<name>.parquet` (pyarrow) and `<out>/<name>.html` (plotly, the
library embedded, so it opens offline; matplotlib/kaleido are not dependencies, hence no PNG).
`--compare-random` repeats the analysis on a random-init copy built from the same config and seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from sift_bench import analyze_figures as figures
from sift_bench.errors import SiftBenchError
from sift_bench.tasks import Batch
from sift_bench.trial_setup import load_model_with_head, load_task, make_loss_fn, pick_device, seed_everything


@dataclass
class Loaded:
    model: nn.Module
    batches: list[Batch]
    loss_fn: Callable[[nn.Module, Batch], torch.Tensor]
    targets: list[str] | str


def load(
    model_name: str,
    task_name: str,
    data_dir: str | None,
    batch_size: int,
    max_seq_len: int,
    num_batches: int,
    targets: list[str] | None = None,
    device: str = "auto",
    seed: int = 0,
) -> Loaded:
    """The model with the task's head, set up as a trial sets it up (seeded), and its first
    `num_batches` training batches in file order (no shuffling: every analysis sees the same data)."""
    from sift import find_target_modules
    from sift_bench.methods.base import default_targets

    seed_everything(seed)  # the fresh task head, and later the dropout masks
    task = load_task(task_name)
    loaded = load_model_with_head(model_name, task)
    rows = task.load(data_dir, "train", batch_size * num_batches)
    if len(rows) < batch_size * num_batches:
        raise SiftBenchError(
            f"Task '{task_name}' has {len(rows)} training rows; --num-batches {num_batches} "
            f"x --batch-size {batch_size} needs more. Fix: lower one of them."
        )
    collate = task.collate(loaded.tokenizer, max_seq_len)
    batches = [collate(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]
    dev = pick_device(device)
    model = loaded.model.to(dev).train()  # gradients as fine-tuning sees them (dropout on)
    try:  # default: the attention projections, as SIFT (and the paper) target them
        chosen: list[str] | str = targets or default_targets(model)
        find_target_modules(model, chosen)
    except SiftBenchError:
        raise SiftBenchError(
            f"--target: cannot guess the attention modules of {type(model).__name__}. "
            "Fix: pass --target NAME for each module to analyse."
        ) from None
    except ValueError as e:
        raise SiftBenchError(f"--target: {e} Fix: pass --target NAME for each module to analyse.") from None
    return Loaded(model, batches, make_loss_fn(dev), chosen)


def random_init(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy with the same config (and head) but freshly initialised weights, as training from scratch."""
    torch.manual_seed(seed)
    fresh = type(model)(model.config)
    return fresh.to(next(model.parameters()).device).train(model.training)


def _models(loaded: Loaded, compare_random: bool, seed: int) -> list[tuple[str, nn.Module]]:
    out = [("pre-trained", loaded.model)]
    if compare_random:
        out.append(("random init", random_init(loaded.model, seed)))
    return out


def write_outputs(table: pd.DataFrame, fig: Any, out_dir: str | Path, name: str) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table_path, fig_path = out / f"{name}.parquet", out / f"{name}.html"
    table.to_parquet(table_path, engine="pyarrow", index=False)
    fig.write_html(fig_path, include_plotlyjs=True)
    return table_path, fig_path


# ------------------------------------------------------------------------------------------ landscape
def landscape(
    loaded: Loaded,
    mode: str,
    dims: int,
    span: float,
    points: int,
    num_batches: int,
    compare_random: bool,
    seed: int,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[pd.DataFrame, Any]:
    """mode "random": random filter-normalised directions around each model (pre-trained, random init);
    mode "interpolate": the paper's own construction, from a random init (alpha=0) to the model (alpha=1)."""
    from sift.analysis import interpolation_landscape, loss_landscape

    def cb(init: str) -> Callable[[int, int], None] | None:
        return (lambda d, t: progress(init, d, t)) if progress else None

    if mode == "interpolate":
        init = "random init -> pre-trained"
        start = random_init(loaded.model, seed)
        table = interpolation_landscape(
            loaded.model,
            start,
            loaded.batches,
            loaded.loss_fn,
            dims=dims,
            points=points,
            num_batches=num_batches,
            seed=seed,
            progress=cb(init),
        )
        table = table.assign(init=init)  # fmt: skip
    elif mode == "random":
        tables = [
            loss_landscape(model, loaded.batches, loaded.loss_fn, dims=dims, span=span, points=points,
                           num_batches=num_batches, seed=seed, progress=cb(init)).assign(init=init)
            for init, model in _models(loaded, compare_random, seed)
        ]  # fmt: skip
        table = pd.concat(tables, ignore_index=True)
    else:
        raise SiftBenchError(f"--mode must be 'random' or 'interpolate', got {mode!r}.")
    return table, figures.landscape_figure(table, dims, mode)


# ------------------------------------------------------------------------------------------ quasi-sparsity
def quasi_sparsity(
    loaded: Loaded, fractions: list[float], num_batches: int, compare_random: bool, seed: int
) -> tuple[pd.DataFrame, Any]:
    from sift.analysis import quasi_sparsity as analyse

    tables = [
        analyse(m, loaded.batches, loaded.loss_fn, loaded.targets, fractions, num_batches).assign(init=init)
        for init, m in _models(loaded, compare_random, seed)
    ]
    table = pd.concat(tables, ignore_index=True)
    return table, figures.quasi_sparsity_figure(table)


# ------------------------------------------------------------------------------------------ stability
def stability(
    loaded: Loaded, fractions: list[float], steps: int, lr: float, compare_random: bool, seed: int
) -> tuple[pd.DataFrame, Any]:
    from sift.analysis import selection_stability

    tables = [
        selection_stability(m, loaded.batches, loaded.loss_fn, loaded.targets, fractions, steps, lr).assign(init=init)
        for init, m in _models(loaded, compare_random, seed)
    ]
    table = pd.concat(tables, ignore_index=True)
    return table, figures.stability_figure(table)


# ------------------------------------------------------------------------------------------ memory
def memory_table1(sparsity: float, lora_rank: int) -> tuple[pd.DataFrame, Any]:
    """The paper's Table 1 rows for Llama-7B next to the model's prediction (GiB)."""
    import plotly.graph_objects as go

    from sift.analysis import table1_comparison

    table = table1_comparison(sparsity=sparsity, lora_rank=lora_rank)
    labels = [f"{r.source}: {r.method}{' + GC' if r.gc else ''}" for r in table.itertuples()]
    fig = go.Figure(
        [
            go.Bar(y=labels, x=table[part], name=part, orientation="h")
            for part in ("params", "grads", "optimizer", "activations")
        ]
    )
    fig.update_layout(
        barmode="stack",
        title=f"Llama-7B fine-tuning memory (Table 1; SIFT at {sparsity:g})",
        xaxis_title="GiB",
        yaxis={"autorange": "reversed"},
        height=600,
    )
    return table, fig


def memory_check(loaded: Loaded, sparsity: float, lora_rank: int) -> pd.DataFrame:
    """Predicted vs measured bytes on a real (small) model: one AdamW step each of full FT, LoRA and SIFT.

    Params, gradients and optimizer state are counted tensor by tensor and must match exactly;
    activations are the saved-tensor bytes of one forward (and the CUDA peak where present), which the
    formula only approximates.
    """
    import copy

    from sift.analysis import MemorySetup, MethodSpec, measured_activation_bytes, measured_state_bytes, predict_memory
    from sift_bench.methods import METHODS, PrepareContext

    batch = loaded.batches[0]
    dtype_bytes = next(loaded.model.parameters()).element_size()
    cuda = next(loaded.model.parameters()).is_cuda
    setup = MemorySetup(
        param_bytes=dtype_bytes,
        moment_bytes=dtype_bytes,
        lora_bytes=dtype_bytes,
        dropout=True,  # measured in training mode, as fine-tuning runs
        dropout_mask_bytes=1 if cuda else dtype_bytes,
        seq_len=batch["input_ids"].shape[1],
        batch_size=batch["input_ids"].shape[0],
    )
    # The trial's own methods; no head (`head=[]`), so only what the method itself trains is counted.
    ctx = PrepareContext(head=[], loss_fn=loaded.loss_fn, selection_batches=lambda: iter([batch]))
    options = {"full": {}, "lora": {"rank": lora_rank, "dropout": 0.0, "target_modules": loaded.targets},
               "sift": {"sparsity": sparsity, "target_modules": loaded.targets}}  # fmt: skip
    rows = []
    for kind in ("full", "lora", "sift"):
        model = copy.deepcopy(loaded.model).train()
        spec = MethodSpec(
            kind=kind, lora_rank=lora_rank, sparsity=sparsity, targets=None if kind == "full" else loaded.targets
        )
        pred = predict_memory(model, spec, setup)
        method = METHODS.get(kind)
        prepared = method.prepare(model, method.parse_options(options[kind]), None, ctx)
        model, params = prepared.model, prepared.params
        # SIFT's selected values and their indices are state the formula counts; the engine holds them.
        extra = [*params, *prepared.state.indices().values()] if kind == "sift" else []
        opt = torch.optim.AdamW(params, lr=1e-5)
        prepared.attach(opt)
        act = measured_activation_bytes(model, loaded.loss_fn, batch)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start = torch.cuda.memory_allocated()
        loaded.loss_fn(model, batch).backward()
        opt.step()
        peak = torch.cuda.max_memory_allocated() - start if cuda else None
        measured = measured_state_bytes(model, opt, extra)
        for part in ("params", "grads", "optimizer"):
            rows.append(
                {
                    "method": spec.label,
                    "part": part,
                    "predicted": getattr(pred, part),
                    "measured": measured[part],
                    "match": getattr(pred, part) == measured[part],
                }
            )
        rows.append(
            {"method": spec.label, "part": "activations", "predicted": pred.activations, "measured": act, "match": None}
        )
        if peak is not None:
            rows.append(
                {
                    "method": spec.label,
                    "part": "cuda peak during step (above resident)",
                    "predicted": None,
                    "measured": peak,
                    "match": None,
                }
            )
        del model, opt
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ command bodies
# Each returns what the CLI prints: rich tables with the headline numbers, then the files written.
def _summary(title: str, columns: list[str], rows: list[list[Any]]) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="left" if c == columns[0] else "right")
    for r in rows:
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in r])
    return table


def _wrote(paths: tuple[Path, ...]) -> str:
    return "Wrote " + ", ".join(str(p) for p in paths)


def run_landscape(
    loaded: Loaded, mode: str, dims: int, span: float, points: int, num_batches: int, compare_random: bool,
    seed: int, out: str,
) -> list[Any]:  # fmt: skip
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task_ids: dict[str, Any] = {}

        def progress(init: str, done: int, total: int) -> None:
            if init not in task_ids:
                task_ids[init] = bar.add_task(f"loss landscape ({init})", total=total)
            bar.update(task_ids[init], completed=done)

        table, fig = landscape(loaded, mode, dims, span, points, num_batches, compare_random, seed, progress)
    name = f"landscape_{'interp' if mode == 'interpolate' else 'random'}_{dims}d"
    paths = write_outputs(table, fig, out, name)
    # Reference points: the centre (random mode), or alpha = 0 (random init) and 1 (pre-trained).
    refs = [0.0, 1.0] if mode == "interpolate" else [0.0]
    on_axis = table["beta"] == 0 if "beta" in table else True
    rows = [
        [init, float(g["loss"].min()), float(g["loss"].max())]
        + [float(g[on_axis & (g["alpha"] == a)]["loss"].iloc[0]) for a in refs]
        for init, g in table.groupby("init", sort=False)
    ]
    cols = ["init", "min loss", "max loss"] + [f"loss at alpha={a:g}" for a in refs]
    title = f"Loss landscape ({mode}, {dims}-D, {points} points/axis)"
    return [_summary(title, cols, rows), _wrote(paths)]


def run_quasi_sparsity(
    loaded: Loaded, fractions: list[float], num_batches: int, compare_random: bool, seed: int, out: str
) -> list[Any]:
    table, fig = quasi_sparsity(loaded, fractions, num_batches, compare_random, seed)
    paths = write_outputs(table, fig, out, "quasi_sparsity")
    acc = table[(table["mode"] == "accumulated") & (table["batch"] == table["batch"].max())]
    per = table[table["mode"] == "batch"]
    rows = []
    for init in dict.fromkeys(table["init"]):
        for f in sorted(set(table["fraction"])):
            pick = (acc["init"] == init) & (acc["fraction"] == f)
            pb = per[(per["init"] == init) & (per["fraction"] == f) & (per["scope"] == "overall")]["share"]
            w = acc[pick & (acc["scope"] == "weight")]["share"]
            rows.append(
                [
                    init,
                    f"{100 * f:g}%",
                    float(acc[pick & (acc["scope"] == "overall")]["share"].iloc[0]),
                    float(acc[pick & (acc["scope"] == "global")]["share"].iloc[0]),
                    float(w.min()),
                    float(w.max()),
                    f"{pb.min():.4f}-{pb.max():.4f}",
                ]
            )
    title = f"Share of the squared gradient norm in the top x% ({int(table['batch'].max()) + 1} batches accumulated)"
    cols = ["init", "top x%", "overall", "global", "min weight", "max weight", "overall, single batches"]
    return [_summary(title, cols, rows), _wrote(paths)]


def run_stability(
    loaded: Loaded, fractions: list[float], steps: int, lr: float, compare_random: bool, seed: int, out: str
) -> list[Any]:
    table, fig = stability(loaded, fractions, steps, lr, compare_random, seed)
    paths = write_outputs(table, fig, out, "stability")
    overall = table[(table["scope"] == "overall") & (table["step"] > 0)]
    rows = [
        [
            init,
            f"{100 * f:g}%",
            float(g["share_own"].mean()),
            float(g["share_first"].mean()),
            float(g["share_first"].min()),
            float(g["jaccard_first"].mean()),
            float(g["jaccard_prev"].mean()),
        ]
        for (init, f), g in overall.groupby(["init", "fraction"], sort=False)
    ]
    cols = [
        "init",
        "top x%",
        "own share",
        "first-batch share",
        "min first-batch share",
        "Jaccard first",
        "Jaccard previous",
    ]
    return [_summary(f"Selection stability over steps 1-{steps - 1} (means)", cols, rows), _wrote(paths)]


def _verdict(r: Any) -> str:
    if r.match is not None and not pd.isna(r.match):
        return "exact" if r.match else "DIFFERS"
    if r.predicted is None or pd.isna(r.predicted):
        return ""
    return f"{r.measured / r.predicted:.3f}x"  # activations: the formula is an estimate


def run_memory(sparsity: float, lora_rank: int, out: str, check: Loaded | None) -> list[Any]:
    table, fig = memory_table1(sparsity, lora_rank)
    paths = write_outputs(table, fig, out, "memory_table1")
    cols = ["source", "method", "GC", "params", "grads", "optimizer", "activations", "total"]
    rows = [
        [r.source, r.method, "yes" if r.gc else "no", r.params, r.grads, r.optimizer, r.activations, r.total]
        for r in table.itertuples()
    ]
    report: list[Any] = [
        _summary("Llama-7B, bf16 weights, fp32 AdamW, seq 2048, batch 1 (GiB)", cols, rows),
        _wrote(paths),
    ]
    if check is not None:
        measured = memory_check(check, sparsity, lora_rank)
        path = Path(out) / "memory_check.parquet"
        measured.to_parquet(path, engine="pyarrow", index=False)
        rows = [[r.method, r.part, r.predicted, r.measured, _verdict(r)] for r in measured.itertuples()]
        report += [
            _summary(
                "Predicted vs measured bytes (one AdamW step)",
                ["method", "part", "predicted", "measured", "match / ratio"],
                rows,
            ),
            f"Wrote {path}",
        ]
    return report
