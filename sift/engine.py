"""`SiftEngine`: select k entries per targeted weight, train them as fp32 values, scatter them back.

Lifecycle, as any PyTorch loop uses it:

    engine = SiftEngine(model, SiftConfig(sparsity=0.01, target_modules=["query", "value"]))
    engine.select(train_loader, loss_fn)          # top-|grad| on the first batch(es); no step, no grads left
    opt = torch.optim.AdamW(engine.parameters())  # the 1-D fp32 values are the only trainable tensors
    engine.attach(opt)                            # after each opt.step(), values land in the weights
    for batch in train_loader: loss_fn(model, batch).backward(); opt.step(); opt.zero_grad()

Memory per selected entry: value (4 B) + gradient (4 B) + two AdamW moments (8 B) + index (4 B, or 8 B
for weights of 2^31 entries or more). The pre-trained values of trained entries are kept on the CPU,
for the delta file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from itertools import islice
from typing import Any

import torch
from torch import nn

from sift.config import SiftConfig
from sift.sparse_linear import SparseGradLinear
from sift.targets import Conv1D, find_target_modules

log = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Any], torch.Tensor]


def num_selected(numel: int, sparsity: float) -> int:
    """Entries kept in a weight of `numel` entries: floor(sparsity * n) as in the paper, at least one."""
    return max(1, int(sparsity * numel))


def index_dtype(numel: int) -> torch.dtype:
    return torch.int32 if numel < 2**31 else torch.int64


@dataclass
class _Target:
    name: str  # parameter name of the weight, e.g. "encoder.layer.0.attention.self.query.weight"
    module: nn.Module
    transposed: bool  # GPT-2 Conv1D keeps its weight as (in, out)
    k: int
    index: torch.Tensor | None = None  # (k,) sorted flat indices into the weight
    values: nn.Parameter | None = None  # (k,) fp32 master copy of the selected entries
    touched_index: torch.Tensor | None = None  # (m,) sorted, every entry ever trained (m >= k), CPU
    touched_initial: torch.Tensor | None = None  # (m,) their pre-trained values, weight dtype, CPU

    @property
    def weight(self) -> nn.Parameter:
        return self.module.weight


class SiftEngine:
    """Sparse increment fine-tuning of the modules that `config.target_modules` names."""

    def __init__(self, model: nn.Module, config: SiftConfig) -> None:
        self.model = model
        self.config = config
        modules = find_target_modules(model, config.target_modules)
        model.requires_grad_(False)
        self._targets: dict[str, _Target] = {}
        for module_name, module in modules.items():
            name = f"{module_name}.weight" if module_name else "weight"
            if not module.weight.is_contiguous():
                raise ValueError(f"SIFT needs contiguous weights; {name} is not (call .contiguous() first).")
            self._targets[name] = _Target(
                name=name,
                module=module,
                transposed=Conv1D is not None and isinstance(module, Conv1D),
                k=num_selected(module.weight.numel(), config.sparsity),
            )
        self._hooks: list[Any] = []  # post-accumulate-grad hooks (hook path)
        self._optimizers: list[torch.optim.Optimizer] = []
        self._step_hooks: list[Any] = []
        self._installed = False
        self.step = 0  # optimizer steps seen since attach()

    # ------------------------------------------------------------------ selection
    def select(self, batches: Iterable[Any] | None = None, loss_fn: LossFn | None = None) -> None:
        """Pick each weight's k entries, build the trainable values, and install the gradient path."""
        self._uninstall()
        new_index = self._choose(batches, loss_fn)
        for name, t in self._targets.items():
            idx = new_index[name]
            picked = t.weight.detach().reshape(-1)[idx]  # (k,) pre-trained values, weight dtype
            t.index = idx
            t.values = nn.Parameter(picked.float())  # fp32 master copy; the gather above already copied
            t.touched_index = idx.cpu()
            t.touched_initial = picked.cpu().clone()
        self._install()
        self._log_summary()

    def reselect(self, batches: Iterable[Any] | None = None, loss_fn: LossFn | None = None) -> None:
        """Choose the entries again (periodic re-selection, `reselect_every`).

        Entries that stay keep their fp32 value and optimizer state; entries that enter start from the
        weight's current value with zeroed moments. Entries that leave keep their trained value in the
        weight, and stay in the delta file.
        """
        if any(t.index is None for t in self._targets.values()):
            raise RuntimeError("reselect() before select(): call select() first.")
        self._uninstall()
        new_index = self._choose(batches, loss_fn)
        for name, t in self._targets.items():
            old_idx, idx = t.index.long(), new_index[name]
            # Positions of kept entries in the new and the old (both sorted) index tensors.
            pos_in_old = torch.searchsorted(old_idx, idx.long()).clamp_max(old_idx.numel() - 1)
            kept_new = old_idx[pos_in_old] == idx.long()  # (k,) bool
            kept_old = pos_in_old[kept_new]
            values = t.weight.detach().reshape(-1)[idx].float()  # (k,)
            values[kept_new] = t.values.detach()[kept_old]
            for opt in self._optimizers:
                state = opt.state.get(t.values, {})
                for key, s in state.items():
                    if torch.is_tensor(s) and s.shape == t.values.shape:
                        fresh = torch.zeros_like(s)
                        fresh[kept_new] = s[kept_old]
                        state[key] = fresh
            t.values.data.copy_(values)
            t.index = idx
            self._add_touched(t, idx)
        self._install()
        log.info("SIFT re-selected entries at step %d", self.step)

    def _add_touched(self, t: _Target, idx: torch.Tensor) -> None:
        idx_cpu = idx.cpu()
        new = idx_cpu[~torch.isin(idx_cpu, t.touched_index)]
        if new.numel():
            initial = t.weight.detach().reshape(-1)[new.to(t.weight.device)].cpu()
            order_index = torch.cat([t.touched_index, new])
            order = torch.argsort(order_index.long())
            t.touched_index = order_index[order]
            t.touched_initial = torch.cat([t.touched_initial, initial])[order]

    def _choose(self, batches: Iterable[Any] | None, loss_fn: LossFn | None) -> dict[str, torch.Tensor]:
        if self.config.selection == "random":
            return self._choose_random()
        if batches is None or loss_fn is None:
            raise ValueError("Gradient selection needs batches and loss_fn: engine.select(train_loader, loss_fn).")
        return self._choose_by_gradient(batches, loss_fn)

    def _choose_random(self) -> dict[str, torch.Tensor]:
        # A private generator, seeded per re-selection round, so results do not depend on global RNG state.
        gen = torch.Generator().manual_seed(self.config.seed + 1_000_003 * self.step)
        chosen = {}
        for name, t in sorted(self._targets.items()):
            n = t.weight.numel()
            idx = torch.randperm(n, generator=gen)[: t.k].sort().values
            chosen[name] = idx.to(device=t.weight.device, dtype=index_dtype(n))
        return chosen

    def _choose_by_gradient(self, batches: Iterable[Any], loss_fn: LossFn) -> dict[str, torch.Tensor]:
        # Only the targeted weights get gradients here; everything else is frozen for the pass and
        # restored afterwards, so selection leaves no gradients and no optimizer state behind.
        flags = {p: p.requires_grad for p in self.model.parameters()}
        saved_grads = {t.name: t.weight.grad for t in self._targets.values()}
        try:
            self.model.requires_grad_(False)
            for t in self._targets.values():
                t.weight.grad = None
                t.weight.requires_grad_(True)
            used = 0
            for batch in islice(batches, self.config.selection_batches):
                loss_fn(self.model, batch).backward()
                used += 1
            if used == 0:
                raise ValueError("select() got no batches: the training data is empty.")
            chosen = {}
            for name, t in self._targets.items():
                grad = t.weight.grad
                if grad is None:
                    raise ValueError(f"{name} received no gradient: is it used in loss_fn's forward pass?")
                score = grad.reshape(-1).abs()  # |accumulated gradient|, (numel,)
                idx = torch.topk(score, t.k, sorted=False).indices.sort().values
                chosen[name] = idx.to(index_dtype(score.numel()))
                t.weight.grad = None
            return chosen
        finally:
            for p, flag in flags.items():
                p.requires_grad_(flag)
            for t in self._targets.values():
                t.weight.grad = saved_grads[t.name]

    # ------------------------------------------------------------------ gradient paths
    def _install(self) -> None:
        if self._installed:
            return
        for t in self._targets.values():
            if self.config.implementation == "fused":
                # An instance-level forward keeps the module (and so every state_dict key) unchanged.
                t.module.forward = partial(_fused_forward, t)  # type: ignore[method-assign]
            else:
                t.weight.requires_grad_(True)
                self._hooks.append(t.weight.register_post_accumulate_grad_hook(partial(_gather_grad, t)))
        self._installed = True

    def _uninstall(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        for t in self._targets.values():
            t.module.__dict__.pop("forward", None)
            t.weight.requires_grad_(False)
        self._installed = False

    def detach(self) -> None:
        """Remove the engine's hooks and forwards; the weights keep their fine-tuned values."""
        self._uninstall()
        for h in self._step_hooks:
            h.remove()
        self._step_hooks.clear()
        self._optimizers.clear()

    # ------------------------------------------------------------------ optimizer
    def parameters(self) -> list[nn.Parameter]:
        """The trainable 1-D fp32 value tensors, one per targeted weight (hand them to the optimizer)."""
        self._require_selected()
        return [t.values for t in self._targets.values()]  # type: ignore[misc]

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """After every `optimizer.step()`, write the updated values into the weights, in their dtype."""
        self._require_selected()
        in_opt = {id(p) for g in optimizer.param_groups for p in g["params"]}
        missing = [t.name for t in self._targets.values() if id(t.values) not in in_opt]
        if missing:
            raise ValueError(f"attach(): the optimizer does not hold the values of {missing[:3]}...; "
                             "build it from engine.parameters().")  # fmt: skip
        self._optimizers.append(optimizer)
        self._step_hooks.append(optimizer.register_step_post_hook(lambda *_: self._after_step()))

    def _after_step(self) -> None:
        self.scatter()
        self.step += 1

    @torch.no_grad()
    def scatter(self) -> None:
        """Write the current values into the weights (done automatically after each attached step)."""
        for t in self._targets.values():
            t.weight.reshape(-1)[t.index] = t.values.to(t.weight.dtype)

    @property
    def reselection_due(self) -> bool:
        """True right after a step that `config.reselect_every` marks for re-selection."""
        every = self.config.reselect_every
        return every is not None and self.step > 0 and self.step % every == 0

    # ------------------------------------------------------------------ introspection
    def indices(self) -> dict[str, torch.Tensor]:
        self._require_selected()
        return {name: t.index for name, t in self._targets.items()}  # type: ignore[misc]

    def num_trainable(self) -> int:
        return sum(t.k for t in self._targets.values())

    def num_targeted(self) -> int:
        """Entries of all targeted weights together (the denominator of the density)."""
        return sum(t.weight.numel() for t in self._targets.values())

    def state_bytes(self) -> dict[str, int]:
        """Device bytes of values, their gradients, AdamW's two moments and the indices."""
        self._require_selected()
        k = self.num_trainable()
        idx = sum(t.index.numel() * t.index.element_size() for t in self._targets.values())  # type: ignore[union-attr]
        return {"values": 4 * k, "grads": 4 * k, "adam_moments": 8 * k, "indices": idx}

    def targets(self) -> dict[str, _Target]:
        return dict(self._targets)

    def _require_selected(self) -> None:
        if any(t.index is None for t in self._targets.values()):
            raise RuntimeError("No entries selected yet: call engine.select(batches, loss_fn) first.")

    def _log_summary(self) -> None:
        k, n = self.num_trainable(), self.num_targeted()
        log.info(
            "SIFT: %s trainable entries in %d weights (density %.4f of targeted), state %.2f MB",
            f"{k:,}", len(self._targets), k / n, sum(self.state_bytes().values()) / 2**20,
        )  # fmt: skip

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        self._require_selected()
        return {
            "config": self.config.to_dict(),
            "step": self.step,
            "targets": {
                name: {
                    "index": t.index.cpu(),  # type: ignore[union-attr]
                    "values": t.values.detach().cpu(),  # type: ignore[union-attr]
                    "touched_index": t.touched_index,
                    "touched_initial": t.touched_initial,
                }
                for name, t in self._targets.items()
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a selection and its values (instead of select()); the weights get the values too."""
        names, saved = set(self._targets), set(state["targets"])
        if names != saved:
            raise ValueError(f"State targets differ: missing {sorted(names - saved)[:3]}, "
                             f"unexpected {sorted(saved - names)[:3]}.")  # fmt: skip
        self._uninstall()
        for name, t in self._targets.items():
            s = state["targets"][name]
            dev = t.weight.device
            t.index = s["index"].to(dev)
            t.k = t.index.numel()
            if t.values is not None and t.values.shape == s["values"].shape:
                t.values.data.copy_(s["values"].to(dev))  # keep the Parameter an optimizer may hold
            else:
                t.values = nn.Parameter(s["values"].to(dev).float().clone())
            t.touched_index = s["touched_index"].clone()
            t.touched_initial = s["touched_initial"].clone()
        self.step = int(state.get("step", 0))
        self.scatter()
        self._install()


def _fused_forward(t: _Target, x: torch.Tensor) -> torch.Tensor:
    m = t.module
    return SparseGradLinear.apply(x, m.weight, m.bias, t.values, t.index, t.transposed)


def _gather_grad(t: _Target, weight: torch.Tensor) -> None:
    # Hook path (the paper's Figure 5): take the selected entries of the dense gradient, free it at once.
    g = weight.grad.reshape(-1)[t.index].float()  # (k,)
    if t.values.grad is None:
        t.values.grad = g
    else:
        t.values.grad += g  # micro-batches of one optimizer step add up
    weight.grad = None
