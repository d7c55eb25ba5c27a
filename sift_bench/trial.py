"""One trial: fine-tune one (model, task, method, budget, seed) and score it on dev after every epoch.

    sift-bench trial --model minilm-l6 --task mrpc --method sift --budget 0.8% --epochs 3
    python -m sift_bench trial --model minilm-l6 --task rte --method lora --budget 0.8% --max-train-samples 256

`run_trial(spec) -> TrialResult` is a pure function of its spec: the same function runs under pytest, the
CLI, Ray Tune and a Ray Job. It reads top to bottom: seed, data, model, method (SIFT selects on the
first training batches), optimizer, loop, eval, early stopping (`train.early_stopping`), result; the set-up
steps are the small functions of `trial_setup.py`, which `sift-bench analyze` reuses. A failure (an
out-of-memory error included) comes back as status="failed" with the error text, never as an exception.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import resource
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from sift_bench import forgetting
from sift_bench.errors import SiftBenchError
from sift_bench.methods import METHODS, PrepareContext
from sift_bench.metrics import heldout_metric, metric_info
from sift_bench.spec import ForgettingItem, Prediction, TrainSettings, TrialResult, TrialSpec
from sift_bench.tasks import TASKS, Batch, Task
from sift_bench.trial_setup import (
    autocast_for,
    device_label,
    enable_checkpointing,
    load_model_with_head,
    load_rows,
    load_task,
    make_loss_fn,
    pick_device,
    seed_everything,
    to_device,
)


def validate(spec: TrialSpec) -> None:
    """Cheap checks before any model is loaded: names and options. Raises SiftBenchError."""
    TASKS.get(spec.task)
    METHODS.get(spec.method).parse_options(spec.method_options)
    if spec.evaluators:  # bad evaluator options fail before training, not after it
        from sift_bench.evaluators import EVALUATORS

        for name, raw in spec.evaluators.items():
            EVALUATORS.get(name).parse_options(raw)


def run_trial(spec: TrialSpec, progress: bool | None = None) -> TrialResult:
    """Run one trial. `progress`: show a rich bar (default: only when stdout is a terminal)."""
    started = time.perf_counter()
    record: dict[str, Any] = {"trial_id": spec.trial_id, "spec": spec}
    try:
        return _run(spec, record, sys.stdout.isatty() if progress is None else progress)
    except Exception as e:  # torch.OutOfMemoryError included: a failed trial is data
        detail = "" if isinstance(e, SiftBenchError) else "\n" + traceback.format_exc(limit=-3)
        record.setdefault("train_seconds", time.perf_counter() - started)
        return TrialResult(**record, status="failed", error=f"{type(e).__name__}: {e}{detail}")


def _run(spec: TrialSpec, record: dict[str, Any], show_progress: bool) -> TrialResult:
    from transformers import get_linear_schedule_with_warmup

    from sift_bench.budget import resolve_knob

    cfg: TrainSettings = spec.train
    # -- seed --------------------------------------------------------------------------------------------
    seed_everything(spec.seed)
    device = pick_device()
    record["device"] = device_label(device)
    _reset_peak_memory(device)

    # -- data --------------------------------------------------------------------------------------------
    validate(spec)
    task = load_task(spec.task)
    record["primary_metric"] = task.primary_metric
    train_rows, heldout_rows, dev_rows = load_rows(task, spec.data_dir, cfg)

    # -- model -------------------------------------------------------------------------------------------
    loaded = load_model_with_head(spec.model, task)
    model, tokenizer, head = loaded.model, loaded.tokenizer, loaded.head
    record["total_params"] = sum(p.numel() for p in model.parameters())
    if cfg.gradient_checkpointing:
        enable_checkpointing(model)
    model.to(device).train()

    # -- forgetting: the pre-trained ability before training (cached per weights and machine) ------------
    t0 = time.perf_counter()
    probe, record["forgetting_note"] = forgetting.start(
        spec.forgetting, spec.model, task.kind == "causal_lm", model, tokenizer, device
    )
    forgetting_seconds = time.perf_counter() - t0

    collate = task.collate(tokenizer, cfg.max_seq_len)

    def train_loader() -> DataLoader:
        # Its own seeded generator: every method (and SIFT's selection pass) sees the same batch order.
        gen = torch.Generator().manual_seed(spec.seed)
        order = task.batch_order(train_rows, tokenizer, cfg.batch_size, spec.seed)
        if order is not None:  # instruction tasks: length-grouped batches waste less on padding
            return DataLoader(train_rows, batch_size=cfg.batch_size, sampler=order, collate_fn=collate)
        return DataLoader(train_rows, batch_size=cfg.batch_size, shuffle=True, generator=gen, collate_fn=collate)

    def eval_loader(rows: list[Any], order: list[int]) -> DataLoader:
        # Its own generator: each pass over a DataLoader draws a seed from it, and from the global generator
        # (dropout's) without one, so how often dev is scored would change the training that follows.
        return DataLoader(
            [rows[i] for i in order], batch_size=cfg.eval_batch_size, collate_fn=collate, generator=torch.Generator()
        )

    # Scored in the task's eval order (GLUE: shortest first, so batches pad little); no score depends on it,
    # and predictions are mapped back to their rows in the split.
    dev_orders = {s: eval_order(task, rows, tokenizer) for s, rows in dev_rows.items()}
    dev_loaders = {s: eval_loader(rows, dev_orders[s]) for s, rows in dev_rows.items()}
    # The held-out slice is scored under the first eval split's name, so its metrics are named like dev's.
    heldout_loaders = (
        {task.eval_splits[0]: eval_loader(heldout_rows, eval_order(task, heldout_rows, tokenizer))}
        if heldout_rows else {}
    )  # fmt: skip
    autocast = autocast_for(cfg.precision, device)
    loss_fn = make_loss_fn(device, autocast)

    def selection_batches() -> Iterator[Batch]:
        return iter(train_loader())

    # -- method ------------------------------------------------------------------------------------------
    method = METHODS.get(spec.method)
    opts = method.parse_options(spec.method_options)
    value = resolve_knob(method, model, opts, spec.budget, head)
    record["knob"], record["knob_value"] = method.knob, value
    ctx = PrepareContext(head=head, loss_fn=loss_fn, selection_batches=selection_batches, seed=spec.seed)
    prepared = method.prepare(model, opts, value, ctx)
    model = prepared.model
    record["trainable_params"], record["head_params"] = prepared.trainable_params, prepared.head_params

    # -- optimizer ---------------------------------------------------------------------------------------
    optimizer = torch.optim.AdamW(prepared.params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    prepared.attach(optimizer)
    loader = train_loader()
    steps_per_epoch = math.ceil(len(loader) / cfg.grad_accum)
    total_steps = math.ceil(steps_per_epoch * cfg.epochs)
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, round(cfg.warmup_ratio * total_steps), total_steps)
    # fp16 needs loss scaling (bf16 and fp32 do not).
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16" and device.type == "cuda")

    # -- loop --------------------------------------------------------------------------------------------
    epochs: list[dict[str, float]] = []
    step, tokens, train_seconds, eval_seconds = 0, 0, 0.0, 0.0
    info = metric_info(task.primary_metric)
    # The best epoch is picked on the held-out slice when there is one, so dev is only reported, never used.
    select = heldout_metric(task.primary_metric) if heldout_loaders else task.primary_metric
    best: tuple[int, dict[str, float], list[Prediction]] | None = None

    def improves(score: float) -> bool:  # ties keep the earlier epoch
        return best is None or info.is_better(score, best[1][select])

    # The evaluators score the best epoch's weights: keep a CPU copy of them while a later epoch may follow.
    n_epochs = math.ceil(cfg.epochs)  # a fractional last epoch is cut by total_steps
    keep_best_weights = bool(spec.evaluators) and n_epochs > 1
    best_weights: dict[str, torch.Tensor] | None = None
    after: forgetting.Scores | None = None  # the forgetting measure on the best epoch's weights
    bar = _progress_bar(show_progress, total_steps, f"{spec.method} {spec.task}")
    with bar as progress:
        for epoch in range(n_epochs):
            if step >= total_steps:
                break
            t0 = time.perf_counter()
            model.train()
            loss_sum, micro = 0.0, 0
            for i, batch in enumerate(loader):
                loss = loss_fn(model, batch)
                scaler.scale(loss / cfg.grad_accum).backward()
                loss_sum, micro = loss_sum + float(loss.detach()), micro + 1
                tokens += (
                    int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
                )
                if (i + 1) % cfg.grad_accum == 0 or i + 1 == len(loader):
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    prepared.after_step()
                    step += 1
                    progress(step, float(loss.detach()))
                    if step >= total_steps:
                        break
            train_seconds += time.perf_counter() - t0

            # -- eval ----------------------------------------------------------------------------------
            t0 = time.perf_counter()
            model.eval()

            @torch.no_grad()
            def forward(batch: Batch, m: torch.nn.Module = model) -> Any:
                with autocast():
                    return m(**to_device(batch, device))

            held = (
                {heldout_metric(k): v for k, v in task.evaluate(forward, heldout_loaders).items()}
                if heldout_loaders else {}
            )  # fmt: skip
            # With held-out selection, dev is only reported: it is scored on the epochs that become the best
            # (the only dev scores a report reads), not on every epoch.
            dev: dict[str, float] = {}
            predictions: list[Prediction] = []
            if not held or DEV_EVERY_EPOCH or improves(held[select]):
                dev = task.evaluate(forward, dev_loaders, predictions=predictions)
                predictions = sorted(
                    (p.model_copy(update={"example": dev_orders[p.split][p.example]}) for p in predictions),
                    key=lambda p: (p.split, p.example),
                )
            metrics = {"epoch": float(epoch + 1), "train_loss": loss_sum / max(micro, 1), **dev, **held}
            eval_seconds += time.perf_counter() - t0
            epochs.append(metrics)
            if improves(metrics[select]):
                best = (epoch + 1, metrics, predictions)
                if probe is not None:  # measured on each new best, so the scored epoch's weights have it
                    t0 = time.perf_counter()
                    after = probe.run(model)
                    metrics["forgetting"] = forgetting.drop(
                        probe.measure, probe.before_value, forgetting.ability(probe.measure, after)
                    )
                    forgetting_seconds += time.perf_counter() - t0
                if keep_best_weights:
                    best_weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

            # -- early stopping: `patience` epochs without a better selection score end the trial ---------
            # Only while epochs remain: a trial that ends on its last epoch (or on max_steps) was not stopped.
            stalled = epoch + 1 - best[0]
            more_to_run = epoch + 1 < n_epochs and step < total_steps
            if cfg.early_stopping is not None and stalled >= cfg.early_stopping.patience and more_to_run:
                record["stopped_epoch"] = epoch + 1
                break

    # -- evaluators (MMLU, HumanEval): the best epoch's weights, recorded with the best epoch ----------------
    assert best is not None
    if spec.evaluators:
        from sift_bench.evaluators import run_evaluators

        t0 = time.perf_counter()
        if best_weights is not None and best[0] != len(epochs):
            model.load_state_dict(best_weights)
        record["scored_epoch"] = best[0]
        scores = run_evaluators(model, tokenizer, spec.evaluators)
        epochs[best[0] - 1].update(scores)
        best[1].update(scores)
        eval_seconds += time.perf_counter() - t0

    # -- result ------------------------------------------------------------------------------------------
    if probe is not None and after is not None:
        record.update(forgetting_record(probe, after))
    record.update(
        best_epoch=best[0],
        best={k: v for k, v in best[1].items() if k != "epoch"},
        predictions=best[2],
        epochs=epochs,
        train_seconds=train_seconds,
        eval_seconds=eval_seconds + forgetting_seconds,
        tokens_per_second=tokens / train_seconds if train_seconds > 0 else 0.0,
    )
    record["peak_memory_bytes"], record["peak_reserved_bytes"] = _peak_memory(device)
    return TrialResult(**record, status="ok")


# Off only to measure what each saves (benchmarks/bench_trial_speedups.py): scoring shortest first, and
# scoring dev only on new-best epochs when a held-out slice selects.
EVAL_BY_LENGTH = True
DEV_EVERY_EPOCH = False


def eval_order(task: Task, rows: list[Any], tokenizer: Any) -> list[int]:
    """The order `rows` are scored in: the task's (`Task.eval_order`), else as given."""
    order = task.eval_order(rows, tokenizer) if EVAL_BY_LENGTH else None
    return list(range(len(rows))) if order is None else order


def forgetting_record(probe: forgetting.Probe, after: forgetting.Scores) -> dict[str, Any]:
    """The result fields of a trial's forgetting: the measure, its value before and after, and per item."""
    before = probe.before
    value_after = forgetting.ability(probe.measure, after)
    items = [
        ForgettingItem(item=i, before=float(b), after=float(a), weight=float(w),
                       gold=None if before.gold is None else float(before.gold[i]))
        for i, (b, a, w) in enumerate(zip(before.values, after.values, before.weights, strict=True))
    ]  # fmt: skip
    return {
        "forgetting_measure": probe.measure.name,
        "forgetting_before": probe.before_value,
        "forgetting_after": value_after,
        "forgetting": forgetting.drop(probe.measure, probe.before_value, value_after),
        "forgetting_items": items,
    }


def _reset_peak_memory(device: torch.device) -> None:
    """Start this trial's memory high-water marks afresh.

    In a fresh process (the schedulers' default, `sift_bench.isolation`) this changes nothing that matters. In
    a process that ran earlier trials (`--no-isolate`, tests) it gets as close as a shared process can: free
    what they left (garbage, the CUDA cache, the C allocator's idle pages) before the marks are reset to the
    current level, which still holds the interpreter, the libraries and whatever the allocator keeps."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        return
    _trim_c_heap()
    with contextlib.suppress(OSError):  # Linux >= 4.0: "5" resets the process's peak RSS (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")


def _trim_c_heap() -> None:
    """Return glibc's free heap pages to the system (malloc_trim); a no-op on other C libraries."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _peak_memory(device: torch.device) -> tuple[int, int | None]:
    """(peak, reserved) since `_reset_peak_memory`. CUDA: the max bytes allocated to tensors, and the max
    bytes the caching allocator reserved from the driver. CPU: the peak resident set size (VmHWM) and None;
    where /proc is missing, the process's lifetime peak RSS (ru_maxrss: KiB on Linux, bytes on macOS)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), int(torch.cuda.max_memory_reserved(device))
    with contextlib.suppress(OSError, StopIteration):
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("VmHWM")).split()[1]) * 1024, None
    scale = 1 if sys.platform == "darwin" else 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale), None


@contextlib.contextmanager
def _progress_bar(show: bool, total: int, label: str) -> Iterator[Callable[[int, float], None]]:
    """A rich bar (only in a terminal); yields update(step, loss)."""
    if not show:
        yield lambda step, loss: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("loss {task.fields[loss]:.4f}"))  # fmt: skip
    with Progress(*columns, transient=True) as p:
        bar = p.add_task(label, total=total, loss=float("nan"))
        yield lambda step, loss: p.update(bar, completed=step, loss=loss)


def summary_table(result: TrialResult) -> Any:
    """A rich table of one trial: per-epoch metrics, with the best epoch marked."""
    from rich.table import Table

    spec = result.spec
    budget = f", budget {spec.budget}" if spec.budget is not None else ""
    knob = f", {result.knob}={result.knob_value:g}" if result.knob and result.knob_value is not None else ""
    title = f"{spec.model} · {spec.task} · {spec.label}{budget}{knob} · seed {spec.seed}"
    keys = [k for k in (result.epochs[0] if result.epochs else {}) if k != "epoch"]
    table = Table(title=title, caption=(
        f"trainable {result.trainable_params:,} (+ head {result.head_params:,}) of {result.total_params:,} · "
        f"train {result.train_seconds:.1f}s · {result.tokens_per_second:,.0f} tok/s · "
        f"peak {result.peak_memory_bytes / 2**20:,.0f} MiB · {result.device}"
        + (f" · stopped early after epoch {result.stopped_epoch}" if result.stopped_epoch is not None else "")
    ))  # fmt: skip
    table.add_column("epoch", justify="right")
    for k in keys:
        table.add_column(k, justify="right")
    for row in result.epochs:
        e = int(row["epoch"])
        mark = " *" if e == result.best_epoch else ""
        cells = [metric_info(k).text(row[k]) for k in keys]
        table.add_row(f"{e}{mark}", *cells)
    return table
