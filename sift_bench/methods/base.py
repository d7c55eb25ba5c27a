"""The method interface and its registry: a method turns a loaded model into trainable parameters.

A method is one module holding one `Method` subclass and its pydantic options; registering it is one line
(`METHODS.add(...)`). The trial (`sift_bench.trial`) only talks to this interface:

    method = METHODS.get(spec.method)
    opts = method.parse_options(spec.method_options)         # SiftBenchError on a bad key or value
    value = resolve_knob(method, model, opts, spec.budget, head_names)   # sift_bench.budget
    prepared = method.prepare(model, opts, value, ctx)       # freezes/wraps the model
    optimizer = AdamW(prepared.params, ...)
    prepared.attach(optimizer)                               # SIFT scatters values after each step

The task head (e.g. `classifier`) is trained by every method; `full` trains everything.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from sift_bench.errors import SiftBenchError, validation_line
from sift_bench.registry import Registry

LossFn = Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]
Knob = Literal["sparsity", "rank", "bottleneck"]


class MethodOptions(BaseModel):
    """Base of every method's options: unknown keys are errors, so a typo never becomes a default."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class PrepareContext:
    """What a method may need besides the model and its options."""

    head: list[str]  # parameter names of the task head; trained by every method
    loss_fn: LossFn  # loss_fn(model, batch) -> scalar; SIFT's gradient selection uses it
    selection_batches: Callable[[], Iterable[dict[str, torch.Tensor]]] | None = None  # fresh iterator of train batches
    seed: int = 0


@dataclass
class Prepared:
    """A model ready to train: the parameters to give AdamW and the counts a trial records."""

    model: nn.Module  # may be a wrapper (PEFT); trial uses this one from now on
    params: list[torch.Tensor]  # optimizer parameters, task head included
    trainable_params: int  # head excluded, as the paper counts
    head_params: int
    attach: Callable[[torch.optim.Optimizer], None] = field(default=lambda optimizer: None)
    after_step: Callable[[], None] = field(default=lambda: None)  # called after every optimizer step
    state: Any = None  # method-specific handle (the SIFT engine), for saving deltas


class Method(ABC):
    """One fine-tuning method. Subclasses set the class attributes and implement `prepare`.

    Budgeted methods (`knob` is not None) also implement `count` (trainable params, head excluded, at a
    knob value, computed without touching the model) and `knob_max`; `sift_bench.budget` uses them to turn
    a budget into the knob value closest to it.
    """

    name: ClassVar[str]
    options: ClassVar[type[MethodOptions]]
    knob: ClassVar[Knob | None] = None
    knob_is_int: ClassVar[bool] = True

    def parse_options(self, raw: dict[str, Any] | None) -> MethodOptions:
        try:
            return self.options.model_validate(raw or {})
        except ValidationError as e:
            raise SiftBenchError(f"method '{self.name}': bad method_options ({validation_line(e)}).") from None

    def default_knob(self, opts: MethodOptions) -> float | None:
        """The knob value used when no budget is given (the option of the same name)."""
        return None if self.knob is None else getattr(opts, self.knob)

    def count(self, model: nn.Module, opts: MethodOptions, value: float) -> int:
        raise NotImplementedError(f"method '{self.name}' has no budget knob")

    def knob_max(self, model: nn.Module, opts: MethodOptions) -> float:
        raise NotImplementedError(f"method '{self.name}' has no budget knob")

    @abstractmethod
    def prepare(self, model: nn.Module, opts: MethodOptions, value: float | None, ctx: PrepareContext) -> Prepared: ...


METHODS: Registry[Method] = Registry("method")


# ---------------------------------------------------------------------------------------------------------
# Helpers shared by the methods.


def freeze_all_but_head(model: nn.Module, head: list[str]) -> list[torch.Tensor]:
    """requires_grad only on the head; return the head parameters."""
    names = set(head)
    params = []
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
        if n in names:
            params.append(p)
    return params


def numel(params: Iterable[torch.Tensor]) -> int:
    return sum(p.numel() for p in params)


# Default target modules per model family: probe suffix -> names. SIFT and the paper use the attention
# projections W_q, W_k, W_v, W_o; LoRA (Hu et al.) uses W_q, W_v.
_FAMILIES: list[tuple[str, dict[str, list[str]]]] = [
    (
        "attention.self.query",  # BERT, RoBERTa, MiniLM, ELECTRA ...
        {
            "attention": ["query", "key", "value", "attention.output.dense"],
            "qv": ["query", "value"],
        },
    ),
    (
        "self_attn.q_proj",  # Llama, Mistral, Qwen, SmolLM ...
        {"attention": ["q_proj", "k_proj", "v_proj", "o_proj"], "qv": ["q_proj", "v_proj"]},
    ),
    ("attention.q_lin", {"attention": ["q_lin", "k_lin", "v_lin", "out_lin"], "qv": ["q_lin", "v_lin"]}),
    ("attn.c_attn", {"attention": ["c_attn", "attn.c_proj"], "qv": ["c_attn"]}),  # GPT-2
]


def default_targets(model: nn.Module, which: Literal["attention", "qv"] = "attention") -> list[str]:
    """The attention projections of a known model family, found by probing module names."""
    names = [n for n, _ in model.named_modules()]
    for probe, targets in _FAMILIES:
        if any(n.endswith(probe) for n in names):
            return targets[which]
    raise SiftBenchError(
        f"Cannot guess the attention modules of {type(model).__name__}; set method_options.target_modules "
        f"(e.g. ['q_proj', 'v_proj'])."
    )


def resolve_targets(model: nn.Module, target_modules: list[str] | str | None, which: Literal["attention", "qv"]):
    """`target_modules` from the options, or the family default."""
    return default_targets(model, which) if target_modules is None else target_modules


def linear_modules(model: nn.Module, target_modules: list[str] | str) -> dict[str, nn.Module]:
    """Linear-like modules named by `target_modules` (engine semantics: exact, dotted suffix, or regex)."""
    from sift.targets import find_target_modules

    try:
        return find_target_modules(model, target_modules)
    except ValueError as e:
        raise SiftBenchError(f"method_options.target_modules: {e}") from None


def in_out(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of an nn.Linear or a GPT-2 Conv1D (weight stored as (in, out))."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    w = module.weight  # Conv1D: (in, out)
    return int(w.shape[0]), int(w.shape[1])
