"""The contract between suites, trials, the scheduler and the result store.

A `TrialSpec` is small, JSON-able and fully resolved: `run_trial(spec)` needs nothing else, so the same
trial runs under pytest, `--serial`, Ray Tune and a Ray Job. Two identities are defined here and nowhere
else:

- `trial_id`: a hash of what changes the result. Not the suite's name, not the resources it was scheduled
  with, not where the data lies, not the suite's label for the method (`variant`) nor the grid point
  (`grid`, whose values are already in `train`): renaming a suite or a variant, or reordering a list, never
  reruns finished work.
- `config_key`: the trial identity without the seed, what `sift-bench compare` matches baseline and new
  trials on. Seeds are replicates of one config, so they form one group per config; every other setting
  (a grid point's learning rate included) makes a different config. The variant label is left out on
  purpose: two labels that resolve to one config are one trial already, and renaming a variant between
  two runs keeps them comparable.

`Budget` is the one parser and printer of parameter budgets: the suite, the trial spec, the CLI's
`--budget` and every table use it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, model_validator
from pydantic_core import core_schema

from sift_bench.errors import SiftBenchError

# 2: `primary_value` dropped (the score is the `metric.<primary_metric>` column), `config_key` added,
# variant and grid inside the spec. Readers upgrade schema-1 rows (sift_bench.results).
# 3: gpu_ids, node, started_at, scored_epoch columns; train.heldout_fraction; predictions.parquet written.
# 4: peak_reserved_bytes, isolated and the forgetting columns. 5: extension, stopped_epoch, train.early_stopping.
SCHEMA_VERSION = 5

_PERCENT = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*%$")
_GROUPED = re.compile(r"^\d{1,3}(?:([,_])\d{3})(?:\1\d{3})*$")  # 1,000,000 or 1_000_000
_SCIENTIFIC = re.compile(r"^(?:\d+(?:\.\d*)?|\.\d+)[eE]\+?\d+$")  # 1e6, 2.5e5
_FORMS = "a percentage like '0.8%' (of the model's parameters) or a parameter count like 1000000 or '1e6'"


class BudgetError(SiftBenchError, ValueError):
    """A budget that does not parse. A SiftBenchError for the CLI; a ValueError so that pydantic reports it
    at its field path inside a suite."""


@functools.total_ordering
class Budget:
    """A trainable-parameter budget: a share of the base model's parameters (task head excluded) or a count.

    Accepted: "0.8%" (in (0%, 100%]); a positive int; digit strings, grouped ("1,000,000", "1_000_000") or
    not; scientific strings whose value is whole ("1e6"). Rejected: floats such as 0.008 (a fraction or a
    per cent? ambiguous) and 1.0e6 (YAML reads it as a float; write 1000000). Canonical text keeps existing
    trial ids: "0.8%" stays "0.8%", a count is its digits. A budget equals its JSON form ("0.8%", 800000),
    so specs compare with budgets written as in a suite. Order: shares first, then counts, each by size.
    """

    # A plain class, not a dataclass: pydantic would dump a dataclass to a dict in Python mode.
    __slots__ = ("count", "percent")

    def __init__(self, *, percent: float | None = None, count: int | None = None) -> None:
        if (percent is None) == (count is None):
            raise ValueError("a Budget is either a percent or a count")
        object.__setattr__(self, "percent", percent)
        object.__setattr__(self, "count", count)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a Budget is immutable (it is hashed)")

    def __reduce__(self) -> tuple[Any, ...]:
        return Budget.parse, (self.to_json(),)

    @classmethod
    def parse(cls, value: Budget | str | int | float, source: str | None = None) -> Budget:
        """Parse a budget as a suite or the CLI writes it; `source` (e.g. "--budget") prefixes the error."""
        try:
            return value if isinstance(value, Budget) else cls._parse(value)
        except BudgetError as e:
            raise BudgetError(f"{source} {value!r}: {e}" if source else str(e)) from None

    @classmethod
    def _parse(cls, value: Any) -> Budget:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise BudgetError(f"a budget is {_FORMS}, not {value!r}.")
        if isinstance(value, float):
            if value.is_integer() and value >= 1:  # YAML reads 1.0e6 as a float
                raise BudgetError(f"budget {value!r} is a float: write the count as an integer, {int(value)}.")
            raise BudgetError(
                f"ambiguous budget {value!r}: write a percentage such as '{value * 100:g}%' or an integer count."
            )
        if isinstance(value, int):
            if value < 1:
                raise BudgetError(f"a parameter-count budget must be positive, got {value}.")
            return cls(count=value)
        text = value.strip()
        if m := _PERCENT.match(text):
            percent = float(_percent_text(float(m.group(1))))
            if not 0 < percent <= 100:
                raise BudgetError(f"a percentage budget must be in (0%, 100%], got '{value}'.")
            return cls(percent=percent)
        if text.isdigit() or _GROUPED.match(text):
            return cls._parse(int(text.replace(",", "").replace("_", "")))
        if _SCIENTIFIC.match(text) and float(text).is_integer():
            return cls._parse(int(float(text)))
        raise BudgetError(f"a budget is {_FORMS}, not {value!r}.")

    def params(self, base_params: int) -> int:
        """Trainable parameters asked for, given the base model's parameter count."""
        if self.count is not None:
            return self.count
        return max(1, round(self.percent / 100 * base_params))

    def to_json(self) -> str | int:
        """The JSON form, "0.8%" or 800000: what trial ids have always hashed."""
        return self.count if self.count is not None else str(self)

    def __str__(self) -> str:
        return str(self.count) if self.count is not None else f"{_percent_text(self.percent)}%"

    def __repr__(self) -> str:
        return f"Budget({str(self)!r})"

    def sort_key(self) -> tuple[int, float]:
        return (0, self.percent) if self.percent is not None else (1, float(self.count))

    @staticmethod
    def text(budget: Budget | None, none: str = "-") -> str:
        """How tables show an optional budget: its canonical text, or `none` for the knob-less references."""
        return none if budget is None else str(budget)

    @staticmethod
    def order(budget: Budget | None) -> tuple[int, float]:
        """Sort key for an optional budget: no budget (the knob-less references) first."""
        return (-1, 0.0) if budget is None else budget.sort_key()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Budget):
            return self.sort_key() == other.sort_key()
        if isinstance(other, str | int) and not isinstance(other, bool):
            return other == self.to_json()
        return NotImplemented

    def __lt__(self, other: Budget) -> bool:
        return self.sort_key() < other.sort_key()

    def __hash__(self) -> int:
        return hash(self.to_json())  # equal to the hash of the JSON form it compares equal to

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        # Python-mode dumps keep the Budget; JSON dumps (and so trial ids) write "0.8%" or 800000.
        return core_schema.no_info_plain_validator_function(
            cls.parse,
            serialization=core_schema.plain_serializer_function_ser_schema(cls._serialize, info_arg=True),
        )

    def _serialize(self, info: core_schema.SerializationInfo) -> Budget | str | int:
        return self.to_json() if info.mode_is_json() else self


def _percent_text(percent: float) -> str:
    """Plain decimal, no exponent and no trailing zeros: 0.8 -> "0.8", 1.0 -> "1", 1e-05 -> "0.00001"."""
    return f"{percent:.10f}".rstrip("0").rstrip(".")


# Fields of a TrialSpec that do not change a trial's result (see TrialSpec's comment).
_NOT_IN_IDENTITY = {"data_dir", "suite", "resources", "variant", "grid", "forgetting", "extension"}


def _hash(data: dict[str, Any]) -> str:
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Strict(BaseModel):
    """Unknown keys are errors everywhere: a typo must never silently become a default."""

    model_config = ConfigDict(extra="forbid")


class EarlyStopping(Strict):
    patience: int = Field(
        ge=1, description="Stop once the selection score has not improved for this many epochs (the best is kept)."
    )


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
    heldout_fraction: float = Field(
        0.0, ge=0, lt=1,
        description="Share of the training examples held out to pick the best epoch and grid point (0: pick on "
        "dev). Set by a suite's `selection: heldout`.",
    )  # fmt: skip
    early_stopping: EarlyStopping | None = Field(
        None, description="Stop a trial whose selection score (held-out, else dev) stalls; None: run every epoch."
    )


class Resources(Strict):
    cpu: float = Field(1, gt=0)
    gpu: float = Field(0, ge=0, description="Fractions are allowed: 0.5 packs two trials per GPU.")


class TrialSpec(Strict):
    model: str = Field(description="Hugging Face id, local path, or an offline alias (minilm-l6, smollm2-135m).")
    task: str = Field(description="GLUE task (mrpc, rte, ...) or an instruction data set.")
    method: str = Field(description="A registered method: full, classifier_only, lora, adapter, sift, random.")
    method_options: dict[str, Any] = Field(default_factory=dict)
    budget: Budget | None = Field(None, description="'0.8%' of the model's parameters or an absolute count.")
    seed: int = 0
    train: TrainSettings = Field(default_factory=TrainSettings)
    evaluators: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Not part of the identity: where the data lies is a property of the machine, which suite the trial
    # belongs to and how it is scheduled do not change its result either; the label and the grid point
    # only describe a config that `method`, `method_options` and `train` already pin.
    data_dir: str | None = None
    suite: str = Field("adhoc", exclude=False)
    resources: Resources = Field(default_factory=Resources)
    variant: str | None = Field(None, description="The suite's label for the method entry (e.g. sift_qv).")
    forgetting: Literal["auto", "off", "sts_zero_shot", "mlm_loss", "lm_loss"] = Field(
        "auto", description="The pre-trained ability to measure before and after training (sift_bench.forgetting); "
        "auto: the one the model supports. It only measures, so it is not part of the trial id.",
    )  # fmt: skip
    grid: dict[str, Any] = Field(default_factory=dict, description="This trial's grid point (already in train).")
    extension: int = Field(
        0, ge=0, description="0: a point of the suite's grid; k: the k-th point the driver added beyond an edge of "
        "one of its axes (`search.extend_edges`).",
    )  # fmt: skip

    @property
    def label(self) -> str:
        """The method as tables show it: the suite's variant label, else the registered name."""
        return self.variant or self.method

    def identity(self) -> dict[str, Any]:
        """What determines the result; hashed into `trial_id`."""
        data = self.model_dump(mode="json", exclude=_NOT_IN_IDENTITY)
        # Settings added after trials were first recorded count only when set, so older trial ids stay valid.
        for name, default in _LATER_TRAIN_FIELDS.items():
            if data["train"].get(name) == default:
                del data["train"][name]
        return data

    @property
    def trial_id(self) -> str:
        return _hash(self.identity())

    def config_identity(self) -> dict[str, Any]:
        """The identity without the seed: every seed of one config shares it (see the module docstring)."""
        return {k: v for k, v in self.identity().items() if k != "seed"}

    @property
    def config_key(self) -> str:
        return _hash(self.config_identity())


# TrainSettings fields added after schema 2, with the default that leaves them out of the trial id.
_LATER_TRAIN_FIELDS: dict[str, Any] = {"heldout_fraction": 0.0, "early_stopping": None}


class Prediction(Strict):
    """One dev example's prediction at the reported (best) epoch; text, so labels and values share a column."""

    split: str
    example: int = Field(ge=0, description="0-based row of the split, as loaded (after max_eval_samples).")
    prediction: str
    label: str


class ForgettingItem(Strict):
    """One item of the forgetting sample (an STS-B pair or a sentence), before and after training."""

    item: int = Field(ge=0, description="0-based item of the measure's sample.")
    before: float = Field(description="sts_zero_shot: the pair's cosine; losses: the item's summed token loss.")
    after: float
    weight: float = Field(description="1 for a pair; the item's scored tokens for a loss.")
    gold: float | None = Field(None, description="sts_zero_shot: the pair's gold similarity (0-5).")


class TrialResult(Strict):
    trial_id: str
    spec: TrialSpec
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
    peak_memory_bytes: int = Field(
        0, description="CPU: the trial's peak resident set size; CUDA: the max bytes allocated to tensors."
    )
    peak_reserved_bytes: int | None = Field(
        None, description="CUDA: the max bytes the caching allocator reserved; None on CPU."
    )
    forgetting_measure: str | None = Field(None, description="sts_zero_shot, mlm_loss or lm_loss; None: not measured.")
    forgetting_before: float | None = Field(None, description="The ability of the loaded weights, in its units.")
    forgetting_after: float | None = Field(None, description="The ability of the scored epoch's weights.")
    forgetting: float | None = Field(None, description="The ability lost (positive = forgot), in its units.")
    forgetting_note: str | None = Field(None, description="Why forgetting was not measured, when it was not.")
    forgetting_items: list[ForgettingItem] = Field(
        default_factory=list, description="Per-item values of the measure (forgetting.parquet)."
    )
    isolated: bool | None = Field(
        None, description="Whether the trial ran in a process of its own (its memory figures are then its alone)."
    )
    device: str = "cpu"
    gpu_ids: list[str] = Field(default_factory=list, description="Accelerator ids Ray assigned ([] on CPU).")
    node: str | None = Field(None, description="The Ray node that ran the trial (None outside Ray).")
    started_at: str | None = Field(None, description="ISO-8601 UTC time the trial started.")
    stopped_epoch: int | None = Field(
        None, description="The last epoch run when early stopping ended the trial early; None: it ran every epoch."
    )
    scored_epoch: int | None = Field(
        None, description="The epoch whose weights the evaluators (MMLU, HumanEval) scored; None without them."
    )
    predictions: list[Prediction] = Field(
        default_factory=list, description="Per-example dev predictions of the best epoch (predictions.parquet)."
    )
    schema_version: int = SCHEMA_VERSION

    @model_validator(mode="after")
    def _id_matches_spec(self) -> TrialResult:
        if self.trial_id != self.spec.trial_id:
            raise ValueError(f"trial_id {self.trial_id} is not the id of its spec ({self.spec.trial_id}).")
        return self
