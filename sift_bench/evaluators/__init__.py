"""Evaluators that suites name (MMLU, HumanEval, ...); importing this package registers them in `EVALUATORS`.

GLUE's dev metrics live in `glue.py` and belong to the GLUE tasks, not here. Adding an evaluator is one
module (its options, an `Evaluator` subclass and one `register_evaluator(...)` line; see `base.py`) and its
import below, as `methods/` and `tasks/` do.
"""

from __future__ import annotations

from sift_bench.evaluators import humaneval, mmlu  # noqa: F401  (registers)
from sift_bench.evaluators.base import EVALUATORS, Evaluator, EvaluatorOptions, register_evaluator, run_evaluators

__all__ = ["EVALUATORS", "Evaluator", "EvaluatorOptions", "register_evaluator", "run_evaluators"]
