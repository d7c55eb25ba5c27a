"""The fine-tune as a file of sparse increments: indices and (fine-tuned - pre-trained) per weight.

`apply_delta` on a fresh copy of the pre-trained model gives the fine-tuned weights bit for bit. To make
that hold, each increment is stored in a dtype wide enough that pre + delta, rounded back to the weight's
dtype, is exactly the fine-tuned value: fp32 for 16-bit weights, fp64 for fp32 weights. `save_delta`
checks the round trip before writing.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sift.engine import SiftEngine

FORMAT = "sift-delta/1"


def _delta_dtype(weight_dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if torch.finfo(weight_dtype).bits <= 16 else torch.float64


def save_delta(engine: SiftEngine, path: str | Path) -> Path:
    """Write every entry the engine ever trained as (index, increment) pairs to a safetensors file."""
    tensors: dict[str, torch.Tensor] = {}
    shapes: dict[str, dict[str, object]] = {}
    for name, t in engine.targets().items():
        if t.touched_index is None:
            raise RuntimeError("save_delta() before select(): nothing has been trained yet.")
        w = t.weight.detach()
        idx = t.touched_index
        new = w.reshape(-1)[idx.to(w.device)].cpu()  # (m,) weight dtype
        dt = _delta_dtype(w.dtype)
        delta = new.to(torch.float64) - t.touched_initial.to(torch.float64)
        delta = delta.to(dt)
        if not torch.equal((t.touched_initial.to(dt) + delta).to(w.dtype), new):
            raise RuntimeError(f"Increments of {name} do not round-trip exactly in {dt}; please report this.")
        tensors[f"{name}::index"] = idx.contiguous()
        tensors[f"{name}::delta"] = delta.contiguous()
        shapes[name] = {"shape": list(w.shape), "dtype": str(w.dtype).removeprefix("torch.")}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "weights": json.dumps(shapes), "config": json.dumps(engine.config.to_dict())}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)  # atomic: a crash never leaves a half-written delta
    return path


@torch.no_grad()
def apply_delta(model: nn.Module, path: str | Path) -> nn.Module:
    """Add the increments in `path` to `model`'s weights in place (model: the pre-trained model)."""
    tensors = load_file(str(path))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a SIFT delta file (format {meta.get('format')!r}, want {FORMAT!r}).")
    params = dict(model.named_parameters())
    for name, info in json.loads(meta["weights"]).items():
        if name not in params:
            raise ValueError(f"{path}: weight {name!r} is not in {type(model).__name__}; is this the right model?")
        w = params[name]
        if list(w.shape) != info["shape"]:
            raise ValueError(f"{path}: {name} has shape {info['shape']} in the delta but {list(w.shape)} here.")
        idx = tensors[f"{name}::index"].to(w.device)
        delta = tensors[f"{name}::delta"].to(w.device)
        if not torch.isfinite(delta).all():
            raise ValueError(f"{path}: non-finite increments for {name}; refusing to write them.")
        flat = w.data.reshape(-1)
        flat[idx] = (flat[idx].to(delta.dtype) + delta).to(w.dtype)
    return model
