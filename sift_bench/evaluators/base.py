"""The evaluator interface and its registry: benchmarks that score a trained model after its trial.

A suite names evaluators with options (`evaluators: {mmlu: {shots: 5}, humaneval: {limit: 20}}`); the
trial runs each one on the in-memory model once training is over (no save and reload):

    evaluator = EVALUATORS.get(name)
    opts = evaluator.parse_options(raw_options)            # SiftBenchError on a bad key or value
    metrics = evaluator.evaluate(model, tokenizer, opts)   # e.g. {"mmlu_acc": 0.31, "mmlu_stem": ...}

Adding an evaluator is one module: its options (an `EvaluatorOptions` subclass), an `Evaluator` subclass
naming the metrics it returns (each registered in `sift_bench.metrics`) and, when it needs something that
could fail only after hours of training (a sandbox, a data download), a `preflight` that checks it; then one
`register_evaluator(...)` line there and the module's import in `sift_bench/evaluators/__init__.py`.
Module-level imports of evaluator modules stay light (no lm-eval, no torch models): the registry is
imported by suite validation and the CLI.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from sift_bench.errors import SiftBenchError, validation_line
from sift_bench.metrics import metric_info
from sift_bench.registry import Registry


class EvaluatorOptions(BaseModel):
    """Base of every evaluator's options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class Evaluator(ABC):
    name: ClassVar[str]
    options: ClassVar[type[EvaluatorOptions]]
    metrics: ClassVar[tuple[str, ...]]  # every metric `evaluate` can return; each registered in sift_bench.metrics

    def parse_options(self, raw: dict[str, Any] | None) -> EvaluatorOptions:
        try:
            return self.options.model_validate(raw or {})
        except ValidationError as e:
            raise SiftBenchError(f"evaluator '{self.name}': bad options ({validation_line(e)}).") from None

    def preflight(self, opts: EvaluatorOptions) -> None:
        """Raise SiftBenchError if the evaluator cannot run here; the driver calls it before any trial trains.
        The default checks nothing."""
        return None

    @abstractmethod
    def evaluate(self, model: Any, tokenizer: Any, opts: EvaluatorOptions) -> dict[str, float]:
        """Score the model (a transformers PreTrainedModel, possibly PEFT-wrapped) and return metrics."""


EVALUATORS: Registry[Evaluator] = Registry("evaluator")


def register_evaluator(evaluator: Evaluator) -> Evaluator:
    """Add `evaluator` to `EVALUATORS`; each metric it declares must be registered (SiftBenchError if not)."""
    for name in evaluator.metrics:
        metric_info(name)
    return EVALUATORS.add(evaluator.name, evaluator)


def run_evaluators(model: Any, tokenizer: Any, evaluators: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Run the named evaluators in order (model in eval mode) and merge their metrics."""
    metrics: dict[str, float] = {}
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        for name, raw in evaluators.items():
            evaluator = EVALUATORS.get(name)
            metrics |= evaluator.evaluate(model, tokenizer, evaluator.parse_options(raw))
    finally:
        model.train(was_training)
    return metrics
