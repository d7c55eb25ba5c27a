"""`lora`: PEFT's LoRA on the chosen projections (Hu et al., 2021); the knob is the rank."""

from __future__ import annotations

from pydantic import Field
from torch import nn

from sift_bench.methods.base import (
    METHODS,
    Method,
    MethodOptions,
    PrepareContext,
    Prepared,
    in_out,
    linear_modules,
    numel,
    resolve_targets,
)


class LoraOptions(MethodOptions):
    rank: int = Field(8, ge=1, description="LoRA rank r; derived from the budget when one is given.")
    alpha: float | None = Field(
        None, gt=0, description="LoRA scaling numerator; None means 2 x rank (the paper: r=128, alpha=256)."
    )
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | str | None = Field(
        None, description="Modules to adapt (PEFT semantics); None = the query and value projections, as LoRA."
    )


class Lora(Method):
    name = "lora"
    options = LoraOptions
    knob = "rank"

    def _targets(self, model: nn.Module, opts: LoraOptions) -> dict[str, nn.Module]:
        return linear_modules(model, resolve_targets(model, opts.target_modules, "qv"))

    def count(self, model: nn.Module, opts: MethodOptions, value: float) -> int:
        assert isinstance(opts, LoraOptions)
        return sum(int(value) * sum(in_out(m)) for m in self._targets(model, opts).values())  # A (r,in) + B (out,r)

    def knob_max(self, model: nn.Module, opts: MethodOptions) -> float:
        assert isinstance(opts, LoraOptions)
        return min(min(in_out(m)) for m in self._targets(model, opts).values())  # beyond it, not low-rank

    def prepare(self, model: nn.Module, opts: MethodOptions, value: float | None, ctx: PrepareContext) -> Prepared:
        from peft import LoraConfig, get_peft_model

        assert isinstance(opts, LoraOptions)
        rank = int(value if value is not None else opts.rank)
        targets = resolve_targets(model, opts.target_modules, "qv")
        self._targets(model, opts)  # a clear error for a bad target before PEFT's
        head = [p for n, p in model.named_parameters() if n in set(ctx.head)]
        config = LoraConfig(
            r=rank,
            lora_alpha=opts.alpha if opts.alpha is not None else 2 * rank,
            lora_dropout=opts.dropout,
            target_modules=targets,
        )
        # get_peft_model freezes everything but the LoRA factors; the head tensors keep their identity, so
        # re-enabling them trains the head without PEFT's modules_to_save copies.
        peft_model = get_peft_model(model, config)
        lora = [p for n, p in peft_model.named_parameters() if "lora_" in n]
        for p in head:
            p.requires_grad_(True)
        return Prepared(peft_model, lora + head, trainable_params=numel(lora), head_params=numel(head))


METHODS.add(Lora.name, Lora())
