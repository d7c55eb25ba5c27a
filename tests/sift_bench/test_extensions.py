"""Adding a method, a task, an evaluator and a metric: one module (here: the classes below) plus one
registration line each, then a suite runs them end to end (serial, in this process) and every report reads
the new metric's direction and scale from its one description, as docs/architecture.md says."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from rich.console import Console
from torch import nn

from sift_bench.compare import compare_paths, judge
from sift_bench.driver import run_suite
from sift_bench.errors import SiftBenchError
from sift_bench.evaluators import EVALUATORS, Evaluator, EvaluatorOptions, register_evaluator
from sift_bench.leaderboard import build
from sift_bench.methods import METHODS, Method, MethodOptions, PrepareContext, Prepared
from sift_bench.metrics import METRICS, metric_info, register_metric
from sift_bench.results import load_run
from sift_bench.spec import Prediction
from sift_bench.suite import validate_suite
from sift_bench.tasks import TASKS, Batch, Example, Forward, Task, register_task

WORDS = ["good", "great", "fine", "bad", "awful", "poor"]


class ToyTask(Task):
    """Is the word positive? Lower `toy_error` (a raw share, lower is better, like `forgetting`) is better."""

    name = "toy_words"
    kind = "classification"
    num_labels = 2
    primary_metric = "toy_error"

    def load(self, data_dir: str | None, split: str, max_samples: int | None = None) -> list[Example]:
        rows = [{"text": w, "label": int(i < 3)} for i, w in enumerate(WORDS * (8 if split == "train" else 2))]
        return rows[:max_samples] if max_samples else rows

    def collate(self, tokenizer: Any, max_seq_len: int) -> Callable[[list[Example]], Batch]:
        def collate(examples: list[Example]) -> Batch:
            batch = tokenizer([e["text"] for e in examples], padding=True, truncation=True,
                              max_length=max_seq_len, return_tensors="pt")  # fmt: skip
            return {**batch, "labels": torch.tensor([e["label"] for e in examples])}

        return collate

    def evaluate(
        self, forward: Forward, loaders: dict[str, Iterable[Batch]], predictions: list[Prediction] | None = None
    ) -> dict[str, float]:
        wrong = total = 0
        for batch in loaders["dev"]:
            pred = forward(batch).logits.argmax(-1).cpu()
            wrong, total = wrong + int((pred != batch["labels"]).sum()), total + len(pred)
        return {"toy_error": wrong / total}


class BiasOnly(Method):
    """Trains the biases (and the head)."""

    name = "bias_only"
    options = MethodOptions

    def prepare(self, model: nn.Module, opts: MethodOptions, value: float | None, ctx: PrepareContext) -> Prepared:
        head = set(ctx.head)
        for p in model.parameters():
            p.requires_grad_(False)
        chosen = [(n, p) for n, p in model.named_parameters() if n in head or n.endswith(".bias")]
        params = [p.requires_grad_(True) for _, p in chosen]
        head_n = sum(p.numel() for n, p in chosen if n in head)
        return Prepared(model, params, trainable_params=sum(p.numel() for p in params) - head_n, head_params=head_n)


class ToyProbeOptions(EvaluatorOptions):
    scale: float = 1.0


class ToyProbe(Evaluator):
    """The mean |bias| of the trained model: a percent-style score in [0, 1]."""

    name = "toy_probe"
    options = ToyProbeOptions
    metrics = ("toy_probe",)
    preflights: ClassVar[list[str]] = []

    def preflight(self, opts: EvaluatorOptions) -> None:
        self.preflights.append(self.name)

    def evaluate(self, model: Any, tokenizer: Any, opts: EvaluatorOptions) -> dict[str, float]:
        assert isinstance(opts, ToyProbeOptions)
        biases = [p.detach().abs().mean() for n, p in model.named_parameters() if n.endswith(".bias")]
        return {"toy_probe": min(1.0, float(torch.stack(biases).mean()) * opts.scale)}


@pytest.fixture
def toys() -> Iterator[None]:
    """The four registration lines; afterwards the registries are as they were."""
    register_metric("toy_error", higher_is_better=False, percent=False)
    register_metric("toy_probe")
    register_task(ToyTask())
    METHODS.add(BiasOnly.name, BiasOnly())
    register_evaluator(ToyProbe())
    yield
    for registry, name in ((METRICS, "toy_error"), (METRICS, "toy_probe"), (TASKS, "toy_words"),
                           (METHODS, "bias_only"), (EVALUATORS, "toy_probe")):  # fmt: skip
        registry._items.pop(name)


def test_toy_extensions_run_end_to_end(tmp_path: Path, toys: None) -> None:
    suite = validate_suite(
        {
            "name": "toys", "schema_version": 1, "models": ["minilm-l6"], "tasks": ["toy_words"],
            "methods": {"bias_only": {}, "classifier_only": {}}, "seeds": [0],
            "evaluators": {"toy_probe": {"scale": 10.0}},
            "train": {"learning_rate": 1e-2, "epochs": 2, "batch_size": 8, "max_seq_len": 8},
        },
        "toys.yaml",
    )  # fmt: skip
    with open(os.devnull, "w") as devnull:
        # In this process: the toys are registered here, not in a module a trial's own process would import.
        summary = run_suite(suite, tmp_path, serial=True, isolate=False, console=Console(file=devnull))
    assert summary.ok == 2 and summary.failed == 0
    assert ToyProbe.preflights == ["toy_probe"]  # the driver asked the evaluator itself, once
    trials = load_run(tmp_path).trials
    assert set(trials["method"]) == {"bias_only", "classifier_only"}
    assert trials["primary_metric"].tolist() == ["toy_error"] * 2
    assert trials["metric.toy_error"].between(0, 1).all() and trials["metric.toy_probe"].between(0, 1).all()

    board = build(trials)
    cells = {row.method: row.cells["toy_words"] for row in board.rows}
    for c in cells.values():  # raw units: not multiplied by 100
        assert c.display()[0] == pytest.approx(c.mean) and c.text() == f"{c.mean:.2f}"

    same = compare_paths(tmp_path, tmp_path)
    assert not same.regressed and {c.primary.metric for c in same.cells} == {"toy_error"}
    assert all(not c.primary.higher_is_better and c.primary.unit == "" for c in same.cells)


def test_lower_is_better_metric_is_judged_the_right_way(toys: None) -> None:
    worse = judge("toy_error", [0.10], [0.30], primary=True, tolerance=0.05)
    better = judge("toy_error", [0.30], [0.10], primary=True, tolerance=0.05)
    assert (worse.verdict, better.verdict) == ("regressed", "improved")
    assert worse.delta == pytest.approx(0.20)  # raw units: no x100
    assert metric_info("heldout_toy_error").is_better(0.1, 0.3)


def test_unknown_metrics_are_errors() -> None:
    with pytest.raises(SiftBenchError, match=r"Unknown metric 'acuracy'.*Did you mean 'accuracy'"):
        metric_info("acuracy")
    assert metric_info("pass@7").percent  # a numbered family: any k

    class Bad(ToyTask):
        name = "bad_task"
        primary_metric = "no_such_metric"

    with pytest.raises(SiftBenchError, match="no_such_metric"):
        register_task(Bad())
    assert "bad_task" not in TASKS
