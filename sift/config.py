"""`SiftConfig`: what to train sparsely, how many entries, and how to pick them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal


@dataclass
class SiftConfig:
    """Configuration of sparse increment fine-tuning (SIFT).

    Args:
        sparsity: fraction of each targeted weight's entries that are trained, in (0, 1]. The paper uses
            0.008 on RoBERTa-large's attention projections (Table 2) and 0.03-0.05 on Llama (Table 6).
        target_modules: which `nn.Linear`-like modules to train sparsely. A list entry matches a module
            name exactly or as a dotted suffix ("query" matches "encoder.layer.0.attention.self.query");
            a string is a regular expression matched against the full module name (as in PEFT).
        selection: "gradient" keeps the top-|accumulated gradient| entries (SIFT); "random" keeps
            uniformly random entries (the paper's baseline, Section 5.3.1).
        selection_batches: how many first batches the gradient is accumulated over before selecting.
        implementation: "fused" computes only the selected entries of each weight gradient (no dense
            weight gradient is ever allocated); "hook" is the paper's scheme (Figure 5): the dense
            gradient is gathered and freed as soon as it is accumulated.
        seed: seeds random selection (a private generator; global RNG state is untouched).
        reselect_every: re-select the entries every N optimizer steps (None = never, as in the paper).
    """

    sparsity: float
    target_modules: list[str] | str
    selection: Literal["gradient", "random"] = "gradient"
    selection_batches: int = 1
    implementation: Literal["fused", "hook"] = "fused"
    seed: int = 0
    reselect_every: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.sparsity, (int, float)) or not 0.0 < float(self.sparsity) <= 1.0:
            raise ValueError(f"SiftConfig.sparsity must be in (0, 1], got {self.sparsity!r}.")
        if isinstance(self.target_modules, (list, tuple)):
            if not self.target_modules:
                raise ValueError("SiftConfig.target_modules is empty: name at least one module, e.g. ['query'].")
            self.target_modules = list(self.target_modules)
        elif not isinstance(self.target_modules, str) or not self.target_modules:
            raise ValueError(
                f"SiftConfig.target_modules must be a list of names or a regex string, got {self.target_modules!r}."
            )
        if self.selection not in ("gradient", "random"):
            raise ValueError(f"SiftConfig.selection must be 'gradient' or 'random', got {self.selection!r}.")
        if self.implementation not in ("fused", "hook"):
            raise ValueError(f"SiftConfig.implementation must be 'fused' or 'hook', got {self.implementation!r}.")
        if int(self.selection_batches) < 1:
            raise ValueError(f"SiftConfig.selection_batches must be >= 1, got {self.selection_batches!r}.")
        if self.reselect_every is not None and int(self.reselect_every) < 1:
            raise ValueError(f"SiftConfig.reselect_every must be >= 1 or None, got {self.reselect_every!r}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
