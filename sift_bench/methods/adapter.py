"""`adapter`: bottleneck adapters (Houlsby et al., 2019; Pfeiffer et al., 2021); the knob is the bottleneck.

Houlsby puts one adapter after the attention output projection and one after the FFN output projection
of every layer; Pfeiffer only after the FFN. Each adapter is h + up(act(down(h))) applied to the sublayer
output before its residual add and LayerNorm. `up` starts at zero, so the adapted model starts identical
to the pre-trained one. Adapters hang off the projection as a child module plus a forward hook, so the
pre-trained parameter names stay unchanged.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from sift_bench.errors import SiftBenchError
from sift_bench.methods.base import (
    METHODS,
    Method,
    MethodOptions,
    PrepareContext,
    Prepared,
    freeze_all_but_head,
    in_out,
    linear_modules,
    numel,
)

# Regexes over full module names: the sublayer output projections, per model family.
_PLACES: list[tuple[str, dict[str, str]]] = [
    (
        "attention.output.dense",  # BERT, RoBERTa, MiniLM
        {
            "houlsby": r".*\.(attention\.output|layer\.\d+\.output)\.dense",
            "pfeiffer": r".*\.layer\.\d+\.output\.dense",
        },
    ),
    ("self_attn.o_proj", {"houlsby": r".*\.(self_attn\.o_proj|mlp\.down_proj)", "pfeiffer": r".*\.mlp\.down_proj"}),
]


class AdapterOptions(MethodOptions):
    kind: Literal["houlsby", "pfeiffer"] = Field("houlsby", description="Placement: attention+FFN or FFN only.")
    bottleneck: int = Field(16, ge=1, description="Bottleneck width; derived from the budget when one is given.")
    activation: Literal["relu", "gelu"] = "relu"
    target_modules: list[str] | str | None = Field(
        None, description="Sublayer output projections to follow; None = by kind for BERT/RoBERTa/Llama."
    )


class Bottleneck(nn.Module):
    def __init__(self, hidden: int, bottleneck: int, activation: str) -> None:
        super().__init__()
        self.down = nn.Linear(hidden, bottleneck)
        self.act = nn.ReLU() if activation == "relu" else nn.GELU()
        self.up = nn.Linear(bottleneck, hidden)
        nn.init.zeros_(self.up.weight)  # identity at start
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (..., hidden)
        return h + self.up(self.act(self.down(h)))


def _run_adapter(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return module.adapter(output)


class Adapter(Method):
    name = "adapter"
    options = AdapterOptions
    knob = "bottleneck"

    def _places(self, model: nn.Module, opts: AdapterOptions) -> dict[str, nn.Module]:
        if opts.target_modules is not None:
            return linear_modules(model, opts.target_modules)
        names = [n for n, _ in model.named_modules()]
        for probe, places in _PLACES:
            if any(n.endswith(probe) for n in names):
                return linear_modules(model, places[opts.kind])
        raise SiftBenchError(
            f"method 'adapter': cannot find the sublayer outputs of {type(model).__name__}; set "
            "method_options.target_modules to the attention/FFN output projections."
        )

    def count(self, model: nn.Module, opts: MethodOptions, value: float) -> int:
        assert isinstance(opts, AdapterOptions)
        b = int(value)
        return sum(2 * h * b + b + h for h in (in_out(m)[1] for m in self._places(model, opts).values()))

    def knob_max(self, model: nn.Module, opts: MethodOptions) -> float:
        assert isinstance(opts, AdapterOptions)
        return min(in_out(m)[1] for m in self._places(model, opts).values())  # wider is no bottleneck

    def prepare(self, model: nn.Module, opts: MethodOptions, value: float | None, ctx: PrepareContext) -> Prepared:
        assert isinstance(opts, AdapterOptions)
        b = int(value if value is not None else opts.bottleneck)
        places = self._places(model, opts)
        head = freeze_all_but_head(model, ctx.head)
        adapters = []
        for module in places.values():
            w = module.weight
            adapter = Bottleneck(in_out(module)[1], b, opts.activation).to(device=w.device, dtype=w.dtype)
            module.add_module("adapter", adapter)
            module.register_forward_hook(_run_adapter)
            adapters += list(adapter.parameters())
        return Prepared(model, adapters + head, trainable_params=numel(adapters), head_params=numel(head))


METHODS.add(Adapter.name, Adapter())
