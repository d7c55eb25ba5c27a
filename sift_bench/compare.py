"""Compare two result folders trial config by trial config: what got better, worse, slower, or broke.

Matching is by configuration, never by run order: trials are grouped by `TrialSpec.config_key` (the trial
identity without the seed, defined in `sift_bench.spec`; the `config_key` column), so the seeds of one
config form a group on each side. For each group the primary metric (and every other best metric) is
compared as mean over seeds (`sift_bench.aggregate.seed_stats`, the statistics the leaderboard shows).

The noise band (in display units: points for percent metrics, raw units otherwise) is

    band = max(tolerance, std_base if n_base >= 2, std_new if n_new >= 2)      (sample std, ddof=1)

so with several seeds a change of the mean within one seed-to-seed standard deviation is noise, and with a
single seed (spread unknown) only `tolerance` protects against noise. `tolerance` is also a floor: seeds
that happen to agree closely never turn a 0.1-point wobble into a CI failure; pass `--tolerance 0` for the
pure spread rule. Only the primary metric gates the exit code; the others are reported. Points of a
hyper-parameter grid are separate configs (the `settings` field names what tells them apart).

When both folders hold dev predictions (predictions.parquet) for every finished seed of a config, and the
primary metric can be computed from them (not `eval_loss`), its band comes from a paired bootstrap of
new - base over the shared dev examples, pooled over each side's seeds (`sift_bench.significance`, 95%
percentile interval [low, high]). The band is the distance from the change to the interval's end on the
side of 0, floored by `tolerance`:

    band = max(tolerance, high - delta if delta < 0 else delta - low)

so |delta| > band exactly when the interval excludes 0 and the change exceeds `tolerance`: the same rule as
above, with the bootstrap's spread in place of the seeds'. Each change records which band it used.

A config also regresses when a seed that finished in the baseline failed in the new run ("newly failed"),
when it is absent from the new run ("missing"), or when its mean train time / peak memory grew by more
than a ratio (`time_threshold`, `memory_threshold`; 0 turns the check off) and by more than a small
absolute slack (timers and allocators jitter on tiny trials).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, Field

from sift_bench.aggregate import seed_stats
from sift_bench.compare_report import summary_line, to_markdown, to_rich
from sift_bench.errors import SiftBenchError
from sift_bench.metrics import metric_info
from sift_bench.registry import did_you_mean
from sift_bench.results import RunTables, load_run, read_predictions
from sift_bench.significance import BootstrapResult, TrialPredictions, paired_bootstrap
from sift_bench.spec import Budget, TrialSpec

# Absolute slack for the resource checks: below these, a ratio says nothing (a 0.2 s trial taking 0.4 s).
MIN_TIME_DELTA_S = 1.0
MIN_MEMORY_DELTA_BYTES = 16 * 2**20
# Columns of `metric.*` that are bookkeeping, not scores.
NOT_METRICS = frozenset({"epoch", "step"})

# The renderings live in compare_report; re-exported so callers import everything `compare` from here.
__all__ = [
    "Comparison", "ConfigComparison", "MetricChange", "compare_paths", "compare_runs", "judge",
    "summary_line", "to_markdown", "to_rich",
]  # fmt: skip

Verdict = Literal["improved", "regressed", "noise", "n/a"]
BandKind = Literal["seed std", "bootstrap"]
Status = Literal["compared", "missing", "new", "newly_failed", "still_failing", "fixed"]


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# ----------------------------------------------------------------------------- the report


class MetricChange(BaseModel):
    metric: str
    primary: bool
    higher_is_better: bool
    unit: str = Field(description="'pt' (percentage points) for percent metrics, '' for raw units.")
    base_mean: float | None = None
    base_std: float | None = None
    base_n: int = 0
    new_mean: float | None = None
    new_std: float | None = None
    new_n: int = 0
    delta: float | None = Field(None, description="new - base in display units (points for percent metrics).")
    band: float | None = Field(None, description="Noise band the |delta| is judged against.")
    band_kind: BandKind | None = Field(None, description="What the band comes from (see the module docstring).")
    ci_low: float | None = Field(None, description="Bootstrap interval of new - base (display units).")
    ci_high: float | None = None
    n_examples: int | None = Field(None, description="Dev examples the bootstrap resampled.")
    band_note: str | None = Field(None, description="Why the bootstrap was not used although predictions exist.")
    verdict: Verdict = "n/a"


class ConfigComparison(BaseModel):
    key: str
    model: str
    task: str
    method: str
    budget: str
    base_method: str = Field(description="The registered method; `method` is the suite's label (variant) for it.")
    settings: str = Field("", description="Settings that tell apart configs with the same task/method/budget.")
    status: Status
    base_seeds: list[int] = Field(default_factory=list)
    new_seeds: list[int] = Field(default_factory=list)
    newly_failed_seeds: list[int] = Field(default_factory=list)
    missing_seeds: list[int] = Field(default_factory=list)
    new_error: str | None = None
    metrics: list[MetricChange] = Field(default_factory=list)
    base_train_seconds: float | None = None
    new_train_seconds: float | None = None
    time_ratio: float | None = None
    base_peak_memory_bytes: float | None = None
    new_peak_memory_bytes: float | None = None
    memory_ratio: float | None = None
    flags: list[str] = Field(default_factory=list, description="Why this config regressed (empty when fine).")

    @property
    def regressed(self) -> bool:
        return bool(self.flags)

    @property
    def primary(self) -> MetricChange | None:
        return next((m for m in self.metrics if m.primary), None)


class Comparison(BaseModel):
    baseline: str
    new: str
    suite: str
    tolerance: float
    time_threshold: float
    memory_threshold: float
    configs: list[ConfigComparison]

    @property
    def regressed(self) -> bool:
        return any(c.regressed for c in self.configs)

    def counts(self) -> dict[str, int]:
        verdicts = [c.primary.verdict for c in self.configs if c.primary and c.status == "compared"]
        return {
            "configs": len(self.configs),
            "regressed": sum(c.regressed for c in self.configs),
            "improved": verdicts.count("improved"),
            "noise": verdicts.count("noise"),
            "newly_failed": sum(c.status == "newly_failed" or bool(c.newly_failed_seeds) for c in self.configs),
            "missing": sum(c.status == "missing" or bool(c.missing_seeds) for c in self.configs),
            "new": sum(c.status == "new" for c in self.configs),
            "slower": sum(any(f.startswith("slower") for f in c.flags) for c in self.configs),
            "more_memory": sum(any(f.startswith("memory") for f in c.flags) for c in self.configs),
        }

    def to_json(self) -> str:
        data = self.model_dump(mode="json")
        data["regressed"] = self.regressed
        data["counts"] = self.counts()
        for c, cd in zip(self.configs, data["configs"], strict=True):
            cd["regressed"] = c.regressed
        return json.dumps(data, indent=2)


# ----------------------------------------------------------------------------- comparing


def judge(
    metric: str,
    base: list[float],
    new: list[float],
    *,
    primary: bool,
    tolerance: float,
    bootstrap: BootstrapResult | None = None,
) -> MetricChange:
    """Compare one metric's per-seed values (raw units); see the module docstring for the band.
    `bootstrap` (new - base, raw units) replaces the seed spread when given."""
    info = metric_info(metric)
    scale = 100.0 if info.percent else 1.0
    b, n = seed_stats(v * scale for v in base if v is not None), seed_stats(v * scale for v in new if v is not None)
    bm, bs, bn, nm, ns, nn = b.mean, b.std, b.n, n.mean, n.std, n.n
    change = MetricChange(
        metric=metric, primary=primary, higher_is_better=info.higher_is_better,
        unit="pt" if info.percent else "",
        base_mean=bm, base_std=bs, base_n=bn, new_mean=nm, new_std=ns, new_n=nn,
    )  # fmt: skip
    if bm is None or nm is None:
        return change
    band = max([tolerance] + [s for s in (bs, ns) if s is not None])
    delta = nm - bm
    change.band_kind = "seed std"
    if bootstrap is not None:
        lo, hi, d = bootstrap.low * scale, bootstrap.high * scale, bootstrap.diff * scale
        band = max(tolerance, hi - d if delta < 0 else d - lo)
        change.band_kind, change.ci_low, change.ci_high = "bootstrap", lo, hi
        change.n_examples = bootstrap.n_examples
    gain = delta if info.higher_is_better else -delta  # > 0 is better whatever the direction
    change.delta, change.band = delta, band
    change.verdict = "regressed" if gain < -band else "improved" if gain > band else "noise"
    return change


def _mean(df: pd.DataFrame, col: str) -> float | None:
    if col not in df.columns:
        return None
    vals = pd.to_numeric(df[col], errors="coerce").dropna()
    vals = vals[vals > 0]  # 0 means "not measured" in TrialResult
    return float(vals.mean()) if len(vals) else None


def _settings(idents: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Among configs sharing (model, task, method, budget): the settings that differ, as 'a.b=v'."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for key, ident in idents.items():
        g = tuple(str(ident.get(c)) for c in ("model", "task", "method", "budget"))
        groups.setdefault(g, []).append(key)
    out = {k: "" for k in idents}
    for keys in groups.values():
        if len(keys) < 2:
            continue
        flat = {k: _flatten(idents[k]) for k in keys}
        fields = sorted({f for d in flat.values() for f in d})
        differing = [f for f in fields if len({json.dumps(d.get(f), default=str) for d in flat.values()}) > 1]
        for k in keys:
            out[k] = ", ".join(f"{f}={flat[k].get(f)}" for f in differing)
    return out


def compare_runs(
    baseline: RunTables,
    new: RunTables,
    *,
    tolerance: float = 1.0,
    time_threshold: float = 1.5,
    memory_threshold: float = 1.2,
    allow_different_suites: bool = False,
    metric: str | None = None,
    predictions: tuple[TrialPredictions, TrialPredictions] | None = None,
) -> Comparison:
    """Match trials of two runs by config and judge every change; see the module docstring.

    `metric` gates on that metric instead of each trial's primary one (e.g. `eval_loss`, which moves with
    every change to training even where a small run's accuracy sits at the majority class).
    `predictions` (baseline's, new's): read from the two folders when not given.
    """
    if baseline.suite != new.suite and not allow_different_suites:
        raise SiftBenchError(
            f"The tables come from different suites: {baseline.path} is '{baseline.suite}', "
            f"{new.path} is '{new.suite}'. Compare runs of the same suite."
        )
    if tolerance < 0 or time_threshold < 0 or memory_threshold < 0:
        raise SiftBenchError("--tolerance, --time-threshold and --memory-threshold must be >= 0.")
    b, n = baseline.trials, new.trials
    specs: dict[str, TrialSpec] = {}
    for df in (n, b):  # the new run's spec (and so its variant label) first
        for key, spec in zip(df["config_key"], df["spec"], strict=True):
            specs.setdefault(key, spec)
    keys = list(dict.fromkeys([*b["config_key"], *n["config_key"]]))  # baseline order, then new configs
    settings = _settings({k: specs[k].config_identity() for k in keys})
    metric_cols = sorted({c for df in (b, n) for c in df.columns if str(c).startswith("metric.")})
    if metric is not None and f"metric.{metric}" not in metric_cols:
        known = [c[7:] for c in metric_cols]
        raise SiftBenchError(f"--metric {metric!r} is not in the tables.{did_you_mean(metric, known)} Known: {known}.")

    if predictions is None:
        predictions = (TrialPredictions(read_predictions(baseline.path)), TrialPredictions(read_predictions(new.path)))
    configs: list[ConfigComparison] = []
    for key in keys:
        spec = specs[key]
        bg, ng = b[b["config_key"] == key], n[n["config_key"] == key]
        b_ok, n_ok = bg[bg["status"] == "ok"], ng[ng["status"] == "ok"]
        n_failed = ng[ng["status"] != "ok"]
        b_seeds, n_seeds = set(b_ok["seed"].astype(int)), set(n_ok["seed"].astype(int))
        cc = ConfigComparison(
            key=key, model=spec.model, task=spec.task, method=spec.label, base_method=spec.method,
            budget=Budget.text(spec.budget), settings=settings[key], status="compared",
            base_seeds=sorted(b_seeds), new_seeds=sorted(n_seeds),
            newly_failed_seeds=sorted(b_seeds & set(n_failed["seed"].astype(int))),
            missing_seeds=sorted(b_seeds - set(ng["seed"].astype(int))),
        )  # fmt: skip
        if len(n_failed) and "error" in n_failed.columns:
            cc.new_error = next((str(e) for e in n_failed["error"] if isinstance(e, str) and e), None)

        if bg.empty:
            cc.status = "new"
        elif ng.empty:
            cc.status = "missing" if len(b_ok) else "still_failing"
        elif b_ok.empty:
            cc.status = "fixed" if len(n_ok) else "still_failing"
        elif n_ok.empty:
            cc.status = "newly_failed"

        if cc.status == "missing":
            cc.flags.append(f"missing: seeds {_seeds(cc.missing_seeds)} not in the new run")
        elif cc.missing_seeds:
            cc.flags.append(f"missing seeds {_seeds(cc.missing_seeds)}")
        if cc.newly_failed_seeds:
            cc.flags.append(f"newly failed: seeds {_seeds(cc.newly_failed_seeds)}")

        if not b_ok.empty and not n_ok.empty:
            primary = metric or _primary(b_ok, n_ok)
            names = [c[7:] for c in metric_cols if c[7:] not in NOT_METRICS]
            for name in sorted(names, key=lambda m: (m != primary, m)):
                col = f"metric.{name}"
                bv = pd.to_numeric(b_ok[col], errors="coerce").tolist() if col in b_ok else []
                nv = pd.to_numeric(n_ok[col], errors="coerce").tolist() if col in n_ok else []
                boot, note = _bootstrap(spec.task, name, b_ok, n_ok, predictions) if name == primary else (None, None)
                change = judge(name, bv, nv, primary=name == primary, tolerance=tolerance, bootstrap=boot)
                change.band_note = note
                if change.base_n or change.new_n:
                    cc.metrics.append(change)
            p = cc.primary
            if p and p.verdict == "regressed":
                sign = "+" if p.delta >= 0 else ""
                cc.flags.append(f"{p.metric} {sign}{p.delta:.2f}{p.unit} beyond the noise band ±{p.band:.2f}")
            _resources(cc, b_ok, n_ok, time_threshold, memory_threshold)
        configs.append(cc)

    configs.sort(key=lambda c: (c.task, c.method, Budget.order(specs[c.key].budget), c.model, c.settings))
    return Comparison(
        baseline=str(baseline.path), new=str(new.path), suite=new.suite, tolerance=tolerance,
        time_threshold=time_threshold, memory_threshold=memory_threshold, configs=configs,
    )  # fmt: skip


def _bootstrap(
    task: str, metric: str, b_ok: pd.DataFrame, n_ok: pd.DataFrame, preds: tuple[TrialPredictions, TrialPredictions]
) -> tuple[BootstrapResult | None, str | None]:
    """new - base over the shared dev examples when every finished seed on both sides has predictions."""
    base_sets = preds[0].for_trials(task, metric, b_ok["trial_id"])
    new_sets = preds[1].for_trials(task, metric, n_ok["trial_id"])
    if base_sets is None or new_sets is None:
        return None, None
    try:
        return paired_bootstrap(task, metric, new_sets, base_sets), None
    except SiftBenchError as e:  # e.g. other dev data on one side: the seed spread still judges the means
        return None, f"bootstrap not used: {e}"


def _primary(b_ok: pd.DataFrame, n_ok: pd.DataFrame) -> str | None:
    for df in (n_ok, b_ok):
        if "primary_metric" in df.columns:
            vals = [v for v in df["primary_metric"] if isinstance(v, str) and v]
            if vals:
                return vals[0]
    return None


def _resources(cc: ConfigComparison, b_ok: pd.DataFrame, n_ok: pd.DataFrame, time_thr: float, mem_thr: float) -> None:
    cc.base_train_seconds, cc.new_train_seconds = _mean(b_ok, "train_seconds"), _mean(n_ok, "train_seconds")
    if cc.base_train_seconds and cc.new_train_seconds:
        cc.time_ratio = cc.new_train_seconds / cc.base_train_seconds
        grew = cc.new_train_seconds - cc.base_train_seconds
        if time_thr and cc.time_ratio > time_thr and grew > MIN_TIME_DELTA_S:
            cc.flags.append(
                f"slower: train {cc.base_train_seconds:.1f}s -> {cc.new_train_seconds:.1f}s (x{cc.time_ratio:.2f})"
            )
    cc.base_peak_memory_bytes = _mean(b_ok, "peak_memory_bytes")
    cc.new_peak_memory_bytes = _mean(n_ok, "peak_memory_bytes")
    if cc.base_peak_memory_bytes and cc.new_peak_memory_bytes:
        cc.memory_ratio = cc.new_peak_memory_bytes / cc.base_peak_memory_bytes
        grew = cc.new_peak_memory_bytes - cc.base_peak_memory_bytes
        if mem_thr and cc.memory_ratio > mem_thr and grew > MIN_MEMORY_DELTA_BYTES:
            cc.flags.append(
                f"memory: peak {_mib(cc.base_peak_memory_bytes)} -> {_mib(cc.new_peak_memory_bytes)} "
                f"(x{cc.memory_ratio:.2f})"
            )


def _seeds(seeds: list[int]) -> str:
    return ",".join(map(str, seeds))


def _mib(b: float) -> str:
    return f"{b / 2**20:.0f} MiB"


def compare_paths(baseline: str | Path, new: str | Path, **kwargs: Any) -> Comparison:
    return compare_runs(load_run(baseline), load_run(new), **kwargs)
