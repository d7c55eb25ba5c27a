"""`classifier_only`: the pre-trained body is frozen; only the task head learns (a linear-probe baseline)."""

from __future__ import annotations

from torch import nn

from sift_bench.errors import SiftBenchError
from sift_bench.methods.base import (
    METHODS,
    Method,
    MethodOptions,
    PrepareContext,
    Prepared,
    freeze_all_but_head,
    numel,
)


class ClassifierOnlyOptions(MethodOptions):
    pass


class ClassifierOnly(Method):
    name = "classifier_only"
    options = ClassifierOnlyOptions
    knob = None

    def prepare(self, model: nn.Module, opts: MethodOptions, value: float | None, ctx: PrepareContext) -> Prepared:
        head = freeze_all_but_head(model, ctx.head)
        if not head:
            raise SiftBenchError(
                f"method 'classifier_only' needs a task head, but {type(model).__name__} has none "
                "(causal LM tasks have no separate head); pick another method."
            )
        return Prepared(model, head, trainable_params=0, head_params=numel(head))


METHODS.add(ClassifierOnly.name, ClassifierOnly())
