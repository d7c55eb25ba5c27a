"""`sift`: sparse increment fine-tuning through the `sift` engine, entries picked by |gradient|.

The knob is the sparsity: the fraction of each targeted weight's entries that are trained. The engine
freezes the whole model; the task head is switched back on here.
"""

from __future__ import annotations

import itertools
from typing import ClassVar, Literal

from pydantic import Field
from torch import nn

from sift_bench.methods.base import (
    METHODS,
    Method,
    MethodOptions,
    PrepareContext,
    Prepared,
    linear_modules,
    numel,
    resolve_targets,
)


class SparseOptions(MethodOptions):
    sparsity: float = Field(
        0.008, gt=0, le=1, description="Trained share of each targeted weight; derived from the budget if given."
    )
    target_modules: list[str] | str | None = Field(
        None,
        description="Engine semantics (exact/dotted suffix, or a regex); None = the attention projections "
        "W_q, W_k, W_v, W_o of the model's family, as the paper.",
    )
    implementation: Literal["fused", "hook"] = "fused"
    reselect_every: int | None = Field(None, ge=1, description="Re-select every N steps; None = never (paper).")


class SiftOptions(SparseOptions):
    selection_batches: int = Field(1, ge=1, description="First training batches the gradient is summed over.")


def sparse_count(numels: list[int], sparsity: float) -> int:
    """Entries the engine trains at `sparsity` (its own per-weight rule, so budgets match exactly)."""
    from sift import num_selected

    return sum(num_selected(n, sparsity) for n in numels)


class Sift(Method):
    name = "sift"
    options = SiftOptions
    knob = "sparsity"
    knob_is_int = False
    selection: ClassVar[Literal["gradient", "random"]] = "gradient"

    def _numels(self, model: nn.Module, opts: SparseOptions) -> list[int]:
        targets = linear_modules(model, resolve_targets(model, opts.target_modules, "attention"))
        return [m.weight.numel() for m in targets.values()]

    def count(self, model: nn.Module, opts: MethodOptions, value: float) -> int:
        assert isinstance(opts, SparseOptions)
        return sparse_count(self._numels(model, opts), value)

    def knob_max(self, model: nn.Module, opts: MethodOptions) -> float:
        return 1.0

    def prepare(self, model: nn.Module, opts: MethodOptions, value: float | None, ctx: PrepareContext) -> Prepared:
        import sift

        assert isinstance(opts, SparseOptions)
        targets = resolve_targets(model, opts.target_modules, "attention")
        linear_modules(model, targets)  # a SiftBenchError for a bad target
        n_batches = getattr(opts, "selection_batches", 1)
        config = sift.SiftConfig(
            sparsity=float(value if value is not None else opts.sparsity),
            target_modules=targets,
            selection=self.selection,
            selection_batches=n_batches,
            implementation=opts.implementation,
            seed=ctx.seed,
            reselect_every=opts.reselect_every,
        )
        engine = sift.SiftEngine(model, config)  # freezes every parameter
        batches = None
        if self.selection == "gradient":
            if ctx.selection_batches is None:
                raise ValueError("method 'sift' needs training batches for gradient selection")
            # One endless stream of training batches: every (re-)selection takes the next n_batches of it.
            make = ctx.selection_batches
            stream = itertools.chain.from_iterable(make() for _ in itertools.count())
            batches = list(itertools.islice(stream, n_batches))
        engine.select(batches, ctx.loss_fn)
        head = [p.requires_grad_(True) for n, p in model.named_parameters() if n in set(ctx.head)]

        def after_step() -> None:
            if engine.reselection_due:  # reselect_every: pick again on the stream's next batches
                fresh = list(itertools.islice(stream, n_batches)) if batches is not None else None
                engine.reselect(fresh, ctx.loss_fn)

        return Prepared(
            model,
            list(engine.parameters()) + head,
            trainable_params=engine.num_trainable(),
            head_params=numel(head),
            attach=engine.attach,
            after_step=after_step,
            state=engine,
        )


METHODS.add(Sift.name, Sift())
