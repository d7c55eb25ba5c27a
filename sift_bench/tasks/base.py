"""The task interface and its registry: where examples come from, how they become tensors, how dev is scored.

A trial uses a task like this:

    task = TASKS.get(spec.task)
    train = task.load(data_dir, "train", max_samples)            # list of example dicts
    dev = {s: task.load(data_dir, s, n) for s in task.eval_splits}
    collate = task.collate(tokenizer, max_seq_len)                # examples -> batch of tensors
    loss = model(**batch).loss                                    # every batch carries `labels`
    metrics = task.evaluate(forward, {split: loader})             # forward(batch) -> model output
    task.evaluate(forward, {split: loader}, predictions=rows)     # ... and one Prediction per example in rows

`kind` tells the model loader which head to build: "classification" (num_labels classes), "regression"
(one output, MSE loss) or "causal_lm" (no extra head; `labels` are the input ids, -100 where masked).

Every task family registers the same way: build a `Task` instance and pass it to `register_task` (a line in
the family's module), which checks that its primary metric is a registered metric.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch

from sift_bench.metrics import metric_info
from sift_bench.registry import Registry
from sift_bench.spec import Prediction

TaskKind = Literal["classification", "regression", "causal_lm"]
Example = dict[str, Any]
Batch = dict[str, torch.Tensor]
Forward = Callable[[Batch], Any]  # runs the model on a batch (device, autocast, no_grad handled) -> output


class Task(ABC):
    # Set by the class or by the instance (one class can serve several registered tasks).
    name: str
    kind: TaskKind
    num_labels: int = 0  # classes; 1 for regression; 0 for causal_lm
    primary_metric: str  # picks the best epoch; a metric registered in sift_bench.metrics
    eval_splits: tuple[str, ...] = ("dev",)

    @abstractmethod
    def load(self, data_dir: str | None, split: str, max_samples: int | None = None) -> list[Example]:
        """The first `max_samples` examples of `split` ("train" or one of `eval_splits`)."""

    @abstractmethod
    def collate(self, tokenizer: Any, max_seq_len: int) -> Callable[[list[Example]], Batch]:
        """A DataLoader collate_fn: tokenise, pad, and add `labels`."""

    @abstractmethod
    def evaluate(
        self, forward: Forward, loaders: dict[str, Iterable[Batch]], predictions: list[Prediction] | None = None
    ) -> dict[str, float]:
        """Metrics on the eval splits, keyed by metric name (plus `eval_loss`). Tasks with per-example
        predictions (GLUE) append one `Prediction` per example to `predictions` when it is given."""

    def batch_order(self, examples: list[Example], tokenizer: Any, batch_size: int, seed: int) -> list[int] | None:
        """The training examples' order (a DataLoader sampler), or None for a seeded shuffle (the default)."""
        return None

    def eval_order(self, examples: list[Example], tokenizer: Any) -> list[int] | None:
        """The order to score examples in, or None: as given. Scores must not depend on it (each example is
        scored alone under its attention mask); shortest first lets each batch pad to a similar length."""
        return None


# Filled by the explicit imports in sift_bench/tasks/__init__.py (one module per task family).
TASKS: Registry[Task] = Registry("task")


def register_task(task: Task) -> Task:
    """Add `task` to `TASKS` under its name; its primary metric must be registered (SiftBenchError if not)."""
    metric_info(task.primary_metric)
    return TASKS.add(task.name, task)
