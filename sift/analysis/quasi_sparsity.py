"""Gradient quasi-sparsity (the paper's Figure 3(d)): how much of the gradient the top-x% entries hold.

The share of entries S in a gradient g is measured on squared norms, sum_{i in S} g_i^2 / sum_i g_i^2,
the quantity the paper's descent bound uses ((g^{tau+1})^2 <= eps * sum_j (g^j)^2, Section 4.1) and the
square of the norm ratio ||g_S|| / ||g||. Top-x% keeps floor(x * n) entries, at least one, the rule of
`sift.num_selected`, so at x = 100% the share is exactly 1.

Scopes: "weight" is each targeted weight alone; "overall" pools each weight's own top-x% (what SIFT
keeps, since it selects per weight); "global" takes the top-x% of all targeted entries together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from typing import Any

import pandas as pd
import torch
from torch import nn

from sift import find_target_modules, num_selected

LossFn = Callable[[nn.Module, Any], torch.Tensor]

DEFAULT_FRACTIONS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.05, 0.1)


def target_weights(model: nn.Module, target_modules: list[str] | str) -> dict[str, nn.Parameter]:
    """{parameter name: weight} of the linear-like modules `target_modules` names (engine semantics)."""
    return {f"{n}.weight" if n else "weight": m.weight for n, m in find_target_modules(model, target_modules).items()}


def weight_grads(
    model: nn.Module, weights: dict[str, nn.Parameter], loss_fn: LossFn, batch: Any
) -> tuple[float, dict[str, torch.Tensor]]:
    """(loss, {name: dense fp32 gradient}) of one batch for `weights` only; .grad and flags untouched."""
    flags = {p: p.requires_grad for p in model.parameters()}
    try:
        model.requires_grad_(False)  # no gradients for anything but the targeted weights
        for w in weights.values():
            w.requires_grad_(True)
        loss = loss_fn(model, batch)
        grads = torch.autograd.grad(loss, list(weights.values()))
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
    return float(loss.detach()), {n: g.detach().float() for n, g in zip(weights, grads, strict=True)}


def _check_fractions(fractions: Sequence[float]) -> list[float]:
    out = sorted(float(f) for f in fractions)
    if not out or not all(0.0 < f <= 1.0 for f in out):
        raise ValueError(f"fractions must be in (0, 1] (0.01 = top 1%), got {list(fractions)!r}.")
    return out


def topk_sums(sq: torch.Tensor, fractions: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(sums of the largest floor(f * n) (>= 1) entries of `sq` (>= 0) for each f, total), in fp64."""
    flat = sq.reshape(-1).double()  # fp64: sums of millions of tiny squares stay exact enough
    ks = torch.tensor([num_selected(flat.numel(), f) for f in fractions])  # (F,)
    # A partial sort up to the largest k (5x faster than a full sort at 10%).
    top = torch.topk(flat, int(ks.max()), sorted=True).values  # (k_max,)
    csum = torch.cumsum(top, 0)  # (k_max,)
    total = csum[-1] if top.numel() == flat.numel() else flat.sum()  # at 100% the share is exactly 1
    return csum[ks - 1], total


def topk_shares(sq: torch.Tensor, fractions: Sequence[float]) -> list[float]:
    """Share of sum(sq) held by the largest floor(f * n) (>= 1) entries of `sq`, for each f."""
    tops, total = topk_sums(sq, fractions)
    return (tops / total).tolist() if total > 0 else [float("nan")] * len(fractions)


def held_share(sq: torch.Tensor, mask: torch.Tensor) -> float:
    """Share of sum(sq) held by the entries where `mask` (same shape, bool) is set."""
    total = sq.double().sum()
    return float(sq.double()[mask].sum() / total) if total > 0 else float("nan")


def gradient_shares(grads: dict[str, torch.Tensor], fractions: Sequence[float]) -> list[dict[str, Any]]:
    """Rows (scope, weight, fraction, k, numel, share) for one set of gradients."""
    fractions = _check_fractions(fractions)
    rows: list[dict[str, Any]] = []
    pooled_top = torch.zeros(len(fractions), dtype=torch.float64)  # (F,) sum of each weight's top-x% squares
    pooled_total = torch.zeros((), dtype=torch.float64)
    for name, g in grads.items():
        sq = g.reshape(-1).double() ** 2  # (n,)
        tops, total = topk_sums(sq, fractions)
        for f, top in zip(fractions, tops.tolist(), strict=True):
            share = top / float(total) if total > 0 else float("nan")
            k = num_selected(sq.numel(), f)
            rows.append({"scope": "weight", "weight": name, "fraction": f, "k": k, "numel": sq.numel(), "share": share})
        pooled_top += tops
        pooled_total += total
    n_all = sum(g.numel() for g in grads.values())
    k_all = [sum(num_selected(g.numel(), f) for g in grads.values()) for f in fractions]
    for i, f in enumerate(fractions):
        share = float(pooled_top[i] / pooled_total) if pooled_total > 0 else float("nan")
        rows.append({"scope": "overall", "weight": "*", "fraction": f, "k": k_all[i], "numel": n_all, "share": share})
    every = torch.cat([g.reshape(-1).double() ** 2 for g in grads.values()])  # (N,)
    for f, s in zip(fractions, topk_shares(every, fractions), strict=True):
        k = num_selected(every.numel(), f)
        rows.append({"scope": "global", "weight": "*", "fraction": f, "k": k, "numel": every.numel(), "share": s})
    return rows


def quasi_sparsity(
    model: nn.Module,
    batches: Iterable[Any],
    loss_fn: LossFn,
    target_modules: list[str] | str,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    num_batches: int = 4,
) -> pd.DataFrame:
    """Top-x% shares of the squared gradient norm over the first `num_batches` batches.

    Returns one row per (batch, mode, scope, weight, fraction): mode "batch" is that batch's own gradient,
    "accumulated" the sum of the gradients of batches 0..batch (what `selection_batches` would use).
    Columns: batch, mode, scope, weight, fraction, k, numel, share, loss.
    """
    weights = target_weights(model, target_modules)
    rows: list[dict[str, Any]] = []
    acc: dict[str, torch.Tensor] = {}
    for b, batch in enumerate(islice(batches, num_batches)):
        loss, grads = weight_grads(model, weights, loss_fn, batch)
        for name, g in grads.items():
            acc[name] = acc[name] + g if name in acc else g.clone()
        for mode, gs in (("batch", grads), ("accumulated", acc)):
            rows += [{"batch": b, "mode": mode, **r, "loss": loss} for r in gradient_shares(gs, fractions)]
    if not rows:
        raise ValueError("quasi_sparsity() got no batches: the data is empty.")
    return pd.DataFrame(rows)
