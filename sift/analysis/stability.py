"""Selection stability (the paper's Figure 4): does the first batch's top-x% keep holding the gradient?

The targeted weights are trained densely with plain AdamW for a few steps (everything else frozen). At
each step t, before the update, with g_t that step's gradient and S_0 the first batch's top-x% entries
(chosen per weight, as SIFT does):
- share_first: share of ||g_t||^2 on S_0 (what SIFT, fixed to the first batch, still follows);
- share_own: share of ||g_t||^2 on g_t's own top-x% (the best any top-x% could hold at that step);
- jaccard_first: |S_0 n S_t| / |S_0 u S_t|, the overlap of index sets between the first batch and this one;
- jaccard_prev: the same between consecutive steps.
A share_first close to share_own and a stable Jaccard say periodic re-selection would gain little.
The "overall" rows pool every weight's entries. The weights are restored afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any

import pandas as pd
import torch
from torch import nn

from sift import num_selected
from sift.analysis.quasi_sparsity import LossFn, target_weights, weight_grads


def topk_mask(sq: torch.Tensor, fraction: float) -> torch.Tensor:
    """Boolean mask (same shape, flattened) of the floor(fraction * n) (>= 1) largest entries of `sq`."""
    flat = sq.reshape(-1)
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)  # (n,)
    mask[torch.topk(flat, num_selected(flat.numel(), fraction), sorted=False).indices] = True
    return mask


def selection_stability(
    model: nn.Module,
    batches: Iterable[Any],
    loss_fn: LossFn,
    target_modules: list[str] | str,
    fractions: Sequence[float] = (0.01,),
    steps: int = 20,
    lr: float = 1e-5,
    weight_decay: float = 0.0,
) -> pd.DataFrame:
    """Train the targeted weights for `steps` batches and track the first batch's top-x% selection.

    Returns one row per (step, scope, weight, fraction) with columns step, scope, weight, fraction, k,
    share_first, share_own, jaccard_first, jaccard_prev, loss. Step 0 is the first batch itself.
    """
    fractions = sorted(float(f) for f in fractions)
    if not fractions or not all(0.0 < f <= 1.0 for f in fractions):
        raise ValueError(f"fractions must be in (0, 1] (0.01 = top 1%), got {fractions!r}.")
    weights = target_weights(model, target_modules)
    saved = {n: w.detach().clone() for n, w in weights.items()}
    flags = {p: p.requires_grad for p in model.parameters()}
    first: dict[tuple[str, float], torch.Tensor] = {}  # (weight, fraction) -> S_0 mask (n,)
    prev: dict[tuple[str, float], torch.Tensor] = {}
    rows: list[dict[str, Any]] = []
    optimizer = torch.optim.AdamW(list(weights.values()), lr=lr, weight_decay=weight_decay)
    try:
        for step, batch in enumerate(islice(batches, steps)):
            loss, grads = weight_grads(model, weights, loss_fn, batch)
            for f in fractions:
                # Pooled over weights: sums of squares and set sizes, for the "overall" row.
                tot = {"sq": 0.0, "first": 0.0, "own": 0.0, "i0": 0, "u0": 0, "ip": 0, "up": 0, "k": 0}
                for name, g in grads.items():
                    sq = g.reshape(-1).double() ** 2  # (n,)
                    own = topk_mask(sq, f)
                    s0 = first.setdefault((name, f), own)
                    sp = prev.get((name, f), own)
                    total, on_first, on_own = float(sq.sum()), float(sq[s0].sum()), float(sq[own].sum())
                    i0, u0 = int((s0 & own).sum()), int((s0 | own).sum())
                    ip, up = int((sp & own).sum()), int((sp | own).sum())
                    rows.append(_row(step, "weight", name, f, int(own.sum()), total, on_first, on_own,
                                     i0, u0, ip, up, loss))  # fmt: skip
                    for key, v in zip(tot, (total, on_first, on_own, i0, u0, ip, up, int(own.sum())), strict=True):
                        tot[key] += v
                    prev[(name, f)] = own
                rows.append(_row(step, "overall", "*", f, int(tot["k"]), tot["sq"], tot["first"], tot["own"],
                                 int(tot["i0"]), int(tot["u0"]), int(tot["ip"]), int(tot["up"]), loss))  # fmt: skip
            for name, w in weights.items():
                w.grad = grads[name].to(w.dtype)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    finally:
        with torch.no_grad():
            for name, w in weights.items():
                w.copy_(saved[name])
                w.grad = None
        for p, flag in flags.items():
            p.requires_grad_(flag)
    if not rows:
        raise ValueError("selection_stability() got no batches: the data is empty.")
    return pd.DataFrame(rows)


def _row(
    step: int, scope: str, weight: str, fraction: float, k: int, total: float, on_first: float, on_own: float,
    i0: int, u0: int, ip: int, up: int, loss: float,
) -> dict[str, Any]:  # fmt: skip
    nan = float("nan")
    return {
        "step": step, "scope": scope, "weight": weight, "fraction": fraction, "k": k,
        "share_first": on_first / total if total > 0 else nan,
        "share_own": on_own / total if total > 0 else nan,
        "jaccard_first": i0 / u0 if u0 else 1.0,
        "jaccard_prev": ip / up if up else 1.0,
        "loss": loss,
    }  # fmt: skip
