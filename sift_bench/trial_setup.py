"""A trial's set-up steps, one small function each: seed, device, task and data, model and head, loss.

`run_trial` calls them top to bottom; `sift-bench analyze` calls the same ones (with `METHODS`), so an
analysis sees the model, the head, the batches and the loss a trial would.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from sift_bench.errors import SiftBenchError
from sift_bench.spec import TrainSettings
from sift_bench.tasks import TASKS, Batch, Example, Task

Autocast = Callable[[], contextlib.AbstractContextManager]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch's global generators (the fresh task head and dropout draw from torch's)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str = "auto") -> torch.device:
    """`auto`: the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_label(device: torch.device) -> str:
    """What the results table records: the GPU's name, or `cpu`."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def load_task(name: str) -> Task:
    return TASKS.get(name)


def load_rows(
    task: Task, data_dir: str | None, cfg: TrainSettings
) -> tuple[list[Example], list[Example], dict[str, list[Example]]]:
    """(training examples, held-out examples, {eval split: examples}), cut to the settings' sample limits;
    the held-out slice is taken out of the (cut) training set, and is empty when heldout_fraction is 0."""
    train = task.load(data_dir, "train", cfg.max_train_samples)
    train, heldout = split_heldout(train, cfg.heldout_fraction)
    dev = {split: task.load(data_dir, split, cfg.max_eval_samples) for split in task.eval_splits}
    return train, heldout, dev


HELDOUT_SEED = 20240601  # fixed, not the trial's seed: every method and seed holds out the same examples


def split_heldout(rows: list[Example], fraction: float) -> tuple[list[Example], list[Example]]:
    """(train, held out): a fixed random `fraction` of the rows is held out; both keep the file order."""
    if fraction <= 0:
        return rows, []
    n_held = max(1, round(fraction * len(rows)))
    if n_held >= len(rows):
        raise SiftBenchError(
            f"heldout_fraction {fraction} of {len(rows)} training examples leaves none to train on: lower "
            "train.heldout_fraction or raise train.max_train_samples."
        )
    held = set(random.Random(HELDOUT_SEED).sample(range(len(rows)), n_held))
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


@dataclass
class ModelWithHead:
    model: nn.Module
    tokenizer: Any
    head: list[str]  # parameter names of the task head (trained by every method)


def load_model_with_head(name: str, task: Task) -> ModelWithHead:
    """The model with the head the task's kind needs (a fresh head draws from torch's global generator)."""
    from sift_bench.models import head_names, load_model

    model, tokenizer = load_model(name, task.kind, task.num_labels)
    return ModelWithHead(model, tokenizer, head_names(model, task.kind))


def enable_checkpointing(model: nn.Module) -> None:
    """Non-reentrant activation checkpointing: works when the inputs need no grad (frozen embeddings)."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def autocast_for(precision: str, device: torch.device) -> Autocast:
    """bf16 on CUDA devices that support it when precision='auto'; fp32 (no autocast) otherwise."""
    if precision == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        precision = "bf16" if bf16 else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def make_loss_fn(device: torch.device, autocast: Autocast = contextlib.nullcontext) -> LossFn:
    """loss_fn(model, batch) -> the model's own loss (every batch carries `labels`)."""

    def loss_fn(model: nn.Module, batch: Batch) -> torch.Tensor:
        with autocast():
            return model(**to_device(batch, device)).loss

    return loss_fn
