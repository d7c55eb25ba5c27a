"""Evaluators that suites name (MMLU, HumanEval, ...); importing this package registers them in `EVALUATORS`.

GLUE's dev metrics live in `glue.py` and belong to the GLUE tasks, not here. Adding an evaluator is one
module defining an `Evaluator` subclass plus one `EVALUATORS.add(...)` line, and its import below (as
`methods/` and `tasks/` do). `humaneval.py` holds the generation and sandbox code; its registry adapter
is the small class below.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from sift_bench.evaluators import humaneval, mmlu  # noqa: F401  (registers)
from sift_bench.evaluators.base import EVALUATORS, Evaluator, EvaluatorOptions, run_evaluators


class HumanEvalOptions(EvaluatorOptions):
    limit: int | None = Field(None, ge=1, description="The first N problems; None = all 164.")
    n_samples: int = Field(1, ge=1, description="Samples per problem (1 + temperature 0 = greedy pass@1).")
    temperature: float = Field(0.0, ge=0, description="0 = greedy; pass@10 needs n_samples >= 10 and T > 0.")
    max_new_tokens: int = Field(384, ge=1)
    k: list[int] = Field([1, 10], description="pass@k to report (each k <= n_samples).")
    timeout: float = Field(5.0, gt=0, description="Wall-clock seconds per sandboxed test run.")
    seed: int = 0


class HumanEval(Evaluator):
    """Adapter from the registry to `humaneval.evaluate_humaneval` (generation + sandboxed tests)."""

    name = "humaneval"
    options = HumanEvalOptions

    def evaluate(self, model: Any, tokenizer: Any, opts: EvaluatorOptions) -> dict[str, float]:
        assert isinstance(opts, HumanEvalOptions)
        raw = opts.model_dump()
        ks = tuple(k for k in raw.pop("k") if k <= opts.n_samples) or (1,)
        return humaneval.evaluate_humaneval(model, tokenizer, k=ks, progress=False, **raw)


EVALUATORS.add(HumanEval.name, HumanEval())

__all__ = ["EVALUATORS", "Evaluator", "EvaluatorOptions", "run_evaluators"]
