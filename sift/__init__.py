"""SIFT: sparse increment fine-tuning, as a library for any PyTorch training loop.

engine = sift.SiftEngine(model, sift.SiftConfig(sparsity=0.008, target_modules=["query", "value"]))
engine.select(train_loader, loss_fn)
optimizer = torch.optim.AdamW(engine.parameters(), lr=2e-4)
engine.attach(optimizer)
"""

from sift.config import SiftConfig
from sift.delta import apply_delta, save_delta
from sift.engine import SiftEngine, num_selected
from sift.sparse_linear import SparseGradLinear, sampled_weight_grad
from sift.targets import find_target_modules

__all__ = [
    "SiftConfig",
    "SiftEngine",
    "SparseGradLinear",
    "apply_delta",
    "find_target_modules",
    "num_selected",
    "sampled_weight_grad",
    "save_delta",
]
