"""Resolve `target_modules` to the model's linear-like modules, with errors that list what exists."""

from __future__ import annotations

import re

from torch import nn

try:  # GPT-2 style Conv1D stores its weight as (in, out); supported where transformers is installed.
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover - transformers is a dependency of the benchmark, not of the engine
    Conv1D = None  # type: ignore[assignment,misc]


def is_linear_like(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (Conv1D is not None and isinstance(module, Conv1D))


def _matches(name: str, target_modules: list[str] | str) -> bool:
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return any(name == t or name.endswith("." + t) for t in target_modules)


def find_target_modules(model: nn.Module, target_modules: list[str] | str) -> dict[str, nn.Module]:
    """Return {module name: module} for every linear-like module that `target_modules` names.

    Raises ValueError when nothing matches, or when a list entry matches no linear-like module (a typo
    must not silently shrink the trainable set); the message lists the linear module names that exist.
    """
    linear = {n: m for n, m in model.named_modules() if is_linear_like(m)}
    found = {n: m for n, m in linear.items() if _matches(n, target_modules)}
    suffixes = sorted({n.rsplit(".", 1)[-1] for n in linear})
    if isinstance(target_modules, list):
        missing = [t for t in target_modules if not any(n == t or n.endswith("." + t) for n in linear)]
        if missing:
            raise ValueError(
                f"target_modules {missing} match no nn.Linear-like module of {type(model).__name__}. "
                f"Linear module names (last part) are: {suffixes}."
            )
    if not found:
        raise ValueError(
            f"target_modules {target_modules!r} match no nn.Linear-like module of {type(model).__name__}. "
            f"Linear module names (last part) are: {suffixes}."
        )
    return found
