"""`full`: every parameter of the model is trained (the paper's FT baseline)."""

from __future__ import annotations

from torch import nn

from sift_bench.methods.base import METHODS, Method, MethodOptions, PrepareContext, Prepared, numel


class FullOptions(MethodOptions):
    pass


class Full(Method):
    name = "full"
    options = FullOptions
    knob = None

    def prepare(self, model: nn.Module, opts: MethodOptions, value: float | None, ctx: PrepareContext) -> Prepared:
        head = set(ctx.head)
        params = [p.requires_grad_(True) for p in model.parameters()]
        head_n = numel(p for n, p in model.named_parameters() if n in head)
        return Prepared(model, params, trainable_params=numel(params) - head_n, head_params=head_n)


METHODS.add(Full.name, Full())
