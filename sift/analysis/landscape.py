"""Loss landscape (the paper's Figure 2): the loss along 1 or 2 random directions around the weights.

f(alpha) = L(theta + alpha d1) and f(alpha, beta) = L(theta + alpha d1 + beta d2), with d1, d2 Gaussian and
filter-normalised as in Li et al. (2018, "Visualizing the Loss Landscape of Neural Nets", Section 4):
each row (filter / output unit) of a direction is scaled to the norm of the same row of the weight, so
the plot does not depend on each layer's scale. One-dimensional parameters (biases, LayerNorm) get a zero
direction, as Li et al. do for BatchNorm. The loss is averaged over a fixed set of training batches, in
eval mode (no dropout) and without gradients. The weights are restored bit for bit afterwards.

The paper's own Figure 2 interpolates from random init theta_0 to the pre-trained theta_1 (d1 = theta_1 -
theta_0, d2 = d1 * N(0, 1) pointwise); `directions=` accepts such directions too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any

import pandas as pd
import torch
from torch import nn

from sift.analysis.quasi_sparsity import LossFn

Direction = dict[str, torch.Tensor]


def perturbed_params(model: nn.Module, include: str | None = None) -> dict[str, nn.Parameter]:
    """Floating-point parameters to move: all of them, or those whose name matches the regex `include`."""
    params = {
        n: p
        for n, p in model.named_parameters()
        if p.is_floating_point() and (include is None or re.search(include, n))
    }
    if not params:
        raise ValueError(f"No parameter name matches include={include!r}.")
    return params


def filter_normalized_direction(params: dict[str, torch.Tensor], generator: torch.Generator) -> Direction:
    """A Gaussian direction whose every row has the norm of the weight's row; zero for 1-D params."""
    direction: Direction = {}
    for name, p in params.items():
        if p.dim() <= 1:
            direction[name] = torch.zeros(p.shape, dtype=torch.float32, device=p.device)
            continue
        d = torch.randn(p.shape, generator=generator, dtype=torch.float32).to(p.device)
        rows_d = d.reshape(p.shape[0], -1)  # (rows, fan_in) view of d
        rows_w = p.detach().float().reshape(p.shape[0], -1)
        rows_d.mul_(rows_w.norm(dim=1, keepdim=True) / (rows_d.norm(dim=1, keepdim=True) + 1e-10))
        direction[name] = d
    return direction


def symmetric_grid(span: float, points: int) -> list[float]:
    """`points` values evenly spaced over [-span, span]; the middle one is exactly 0."""
    if points < 3 or points % 2 == 0:
        raise ValueError(f"points must be odd and >= 3 so the grid holds the centre, got {points}.")
    if span <= 0:
        raise ValueError(f"span must be > 0, got {span}.")
    half = points // 2
    return [span * (i - half) / half for i in range(points)]


@torch.no_grad()
def mean_loss(model: nn.Module, batches: list[Any], loss_fn: LossFn) -> float:
    return sum(float(loss_fn(model, b)) for b in batches) / len(batches)


def loss_landscape(
    model: nn.Module,
    batches: Iterable[Any],
    loss_fn: LossFn,
    dims: int = 1,
    span: float = 1.0,
    points: int = 21,
    num_batches: int = 2,
    seed: int = 0,
    include: str | None = None,
    directions: list[Direction] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Loss on a grid of `points` (per axis) over [-span, span] along `dims` (1 or 2) directions.

    Returns columns alpha, loss (dims=1) or alpha, beta, loss (dims=2). `include` limits which parameters
    move (a regex on names); `directions` overrides the random ones; `progress(done, total)` is called
    after each grid point.
    """
    if dims not in (1, 2):
        raise ValueError(f"dims must be 1 or 2, got {dims}.")
    grid = symmetric_grid(span, points)
    fixed = list(islice(batches, num_batches))
    if not fixed:
        raise ValueError("loss_landscape() got no batches: the data is empty.")
    params = perturbed_params(model, include)
    if directions is None:
        gen = torch.Generator().manual_seed(seed)
        directions = [filter_normalized_direction(params, gen) for _ in range(dims)]
    if len(directions) != dims or any(set(d) != set(params) for d in directions):
        raise ValueError(f"directions must be {dims} dicts keyed by the moved parameters' names.")
    saved = {n: p.detach().clone() for n, p in params.items()}
    was_training = model.training
    coords = [(a,) for a in grid] if dims == 1 else [(a, b) for a in grid for b in grid]
    rows: list[dict[str, float]] = []
    model.eval()
    try:
        for i, coord in enumerate(coords):
            with torch.no_grad():
                for n, p in params.items():
                    moved = saved[n].float()
                    for c, d in zip(coord, directions, strict=True):
                        moved = moved + c * d[n]
                    p.copy_(moved)
            loss = mean_loss(model, fixed, loss_fn)
            rows.append({**dict(zip(("alpha", "beta"), coord, strict=False)), "loss": loss})
            if progress is not None:
                progress(i + 1, len(coords))
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(saved[n])
        model.train(was_training)
    return pd.DataFrame(rows)


def interpolation_landscape(
    model: nn.Module,
    start: nn.Module,
    batches: Iterable[Any],
    loss_fn: LossFn,
    dims: int = 1,
    points: int = 21,
    num_batches: int = 2,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """The paper's own Figure 2: L(theta_0 + alpha d1 [+ beta d2]) from `start` (theta_0, random init) to
    `model` (theta_1, pre-trained), d1 = theta_1 - theta_0, d2 = d1 * N(0, 1) pointwise, alpha in
    [-0.5, 1.5] and beta in [-1, 1]: alpha = 0 is the random init, alpha = 1 the pre-trained weights.

    Evaluated on `model`, whose weights are restored bit for bit. Columns as `loss_landscape`.
    """
    params = perturbed_params(model)
    others = dict(start.named_parameters())
    bad = [n for n, p in params.items() if n not in others or others[n].shape != p.shape]
    if bad:
        raise ValueError(f"start and model differ in parameters {bad[:3]}: build start from the same config.")
    d1 = {n: p.detach().float() - others[n].detach().float() for n, p in params.items()}
    gen = torch.Generator().manual_seed(seed)
    d2 = {n: d * torch.randn(d.shape, generator=gen).to(d.device) for n, d in d1.items()}
    saved = {n: p.detach().clone() for n, p in params.items()}
    try:
        with torch.no_grad():  # centre the symmetric grid on the midpoint, so alpha' in [-1, 1] -> [-0.5, 1.5]
            for n, p in params.items():
                p.copy_(others[n].detach().float() + 0.5 * d1[n])
        directions = [d1] if dims == 1 else [d1, d2]
        table = loss_landscape(model, batches, loss_fn, dims=dims, span=1.0, points=points,
                               num_batches=num_batches, directions=directions, progress=progress)  # fmt: skip
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(saved[n])
    table["alpha"] = table["alpha"] + 0.5
    return table
