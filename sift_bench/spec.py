"""The contract between suites, trials, the scheduler and the result store.

A `TrialSpec` is small, JSON-able and fully resolved: `run_trial(spec)` needs nothing else, so the same
trial runs under pytest, `--serial`, Ray Tune and a Ray Job. Its id is a hash of what changes the result
(not the suite's name, not the resources it was scheduled with), so renaming a suite or reordering a list
never reruns finished work.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class Strict(BaseModel):
    """Unknown keys are errors everywhere: a typo must never silently become a default."""

    model_config = ConfigDict(extra="forbid")


class TrainSettings(Strict):
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    batch_size: int = Field(16, ge=1, description="Examples per optimizer step (before accumulation).")
    eval_batch_size: int = Field(64, ge=1, description="Examples per evaluation forward pass.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches accumulated per optimizer step.")
    epochs: float = Field(3, gt=0, description="Passes over the training set.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="Share of steps spent in linear warm-up.")
    max_seq_len: int = Field(128, ge=8, description="Tokens per example after truncation.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Autocast dtype; 'auto' is bf16 on CUDA devices that support it, else fp32."
    )
    gradient_checkpointing: bool = False
    max_train_samples: int | None = Field(None, ge=1, description="Use the first N training examples.")
    max_eval_samples: int | None = Field(None, ge=1, description="Use the first N dev examples.")


class Resources(Strict):
    cpu: float = Field(1, gt=0)
    gpu: float = Field(0, ge=0, description="Fractions are allowed: 0.5 packs two trials per GPU.")


class TrialSpec(Strict):
    model: str = Field(description="Hugging Face id, local path, or an offline alias (minilm-l6, smollm2-135m).")
    task: str = Field(description="GLUE task (mrpc, rte, ...) or an instruction data set.")
    method: str = Field(description="A registered method: full, classifier_only, lora, adapter, sift, random.")
    method_options: dict[str, Any] = Field(default_factory=dict)
    budget: str | int | None = Field(None, description="'0.8%' of the model's parameters or an absolute count.")
    seed: int = 0
    train: TrainSettings = Field(default_factory=TrainSettings)
    evaluators: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Not part of the identity: where the data lies is a property of the machine, which suite the trial
    # belongs to and how it is scheduled do not change its result either.
    data_dir: str | None = None
    suite: str = Field("adhoc", exclude=False)
    resources: Resources = Field(default_factory=Resources)

    def identity(self) -> dict[str, Any]:
        """What determines the result; hashed into `trial_id`."""
        return self.model_dump(mode="json", exclude={"suite", "resources", "data_dir"})

    @property
    def trial_id(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class TrialResult(Strict):
    trial_id: str
    spec: dict[str, Any]
    status: Literal["ok", "failed"]
    error: str | None = None
    primary_metric: str | None = None
    best_epoch: int | None = None
    best: dict[str, float] = Field(default_factory=dict, description="Metrics of the best epoch on dev.")
    epochs: list[dict[str, float]] = Field(default_factory=list, description="Per-epoch metrics, in order.")
    trainable_params: int = Field(0, description="Trainable parameters, task head excluded (as the paper counts).")
    head_params: int = 0
    total_params: int = 0
    knob: str | None = Field(None, description="The budget knob the method used: sparsity, rank, bottleneck.")
    knob_value: float | None = None
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    tokens_per_second: float = 0.0
    peak_memory_bytes: int = 0
    device: str = "cpu"
    schema_version: int = SCHEMA_VERSION
