"""`sift-bench compare` as a rich table, markdown (for bot comments) and its one-line summary.

The numbers come from `sift_bench.compare`; this module only lays them out (one row per config).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:  # annotations only: sift_bench.compare imports this module
    from sift_bench.compare import Comparison, ConfigComparison, MetricChange

_STYLE = {"improved": "green", "regressed": "bold red", "noise": "dim", "n/a": "dim"}


def _fmt(mean: float | None, std: float | None, n: int) -> str:
    if mean is None:
        return "-"
    s = f"{mean:.2f}"
    if std is not None:
        s += f" ± {std:.2f}"
    return f"{s} (n={n})"


def _fmt_delta(m: MetricChange | None) -> str:
    if m is None or m.delta is None:
        return "-"
    return f"{m.delta:+.2f}{m.unit}"


def _cells(c: ConfigComparison) -> dict[str, str]:
    p = c.primary
    # Only the other metrics that moved (at display precision): the JSON output has them all.
    others = ", ".join(
        f"{m.metric} {_fmt_delta(m)}" for m in c.metrics if not m.primary and m.delta and abs(m.delta) >= 0.005
    )
    res = []
    if c.time_ratio:
        res.append(f"time x{c.time_ratio:.2f}")
    if c.memory_ratio:
        res.append(f"mem x{c.memory_ratio:.2f}")
    status = c.status if c.status != "compared" else (p.verdict if p else "n/a")
    return {
        "task": c.task, "method": c.method, "budget": c.budget, "model": c.model, "settings": c.settings,
        "metric": p.metric if p else "-",
        "baseline": _fmt(p.base_mean, p.base_std, p.base_n) if p else "-",
        "new": _fmt(p.new_mean, p.new_std, p.new_n) if p else "-",
        "delta": _fmt_delta(p), "band": f"±{p.band:.2f} {p.band_kind}" if p and p.band is not None else "-",
        "95% CI": f"[{p.ci_low:+.2f}, {p.ci_high:+.2f}]" if p and p.ci_low is not None else "-",
        "verdict": "REGRESSED" if c.regressed else status, "resources": ", ".join(res), "others": others,
        "notes": "; ".join([*c.flags, *([p.band_note] if p and p.band_note else [])]),
    }  # fmt: skip


def _columns(cmp: Comparison) -> list[str]:
    cols = ["task", "method", "budget"]
    if len({c.model for c in cmp.configs}) > 1:
        cols.append("model")
    if any(c.settings for c in cmp.configs):
        cols.append("settings")
    cols += ["metric", "baseline", "new", "delta", "band"]
    if any(c.primary and c.primary.ci_low is not None for c in cmp.configs):
        cols.append("95% CI")  # new - base, from the bootstrap
    cols += ["verdict", "resources"]
    if any(_cells(c)["others"] for c in cmp.configs):
        cols.append("others")
    return [*cols, "notes"]


def summary_line(cmp: Comparison) -> str:
    k = cmp.counts()
    head = "REGRESSION" if cmp.regressed else "OK"
    return (
        f"{head}: {k['regressed']} of {k['configs']} configs regressed "
        f"({k['newly_failed']} newly failed, {k['missing']} missing, {k['slower']} slower, "
        f"{k['more_memory']} more memory); {k['improved']} improved, {k['noise']} within noise, "
        f"{k['new']} new."
    )


def to_rich(cmp: Comparison) -> Table:
    cols = _columns(cmp)
    table = Table(title=f"{cmp.suite}: {cmp.baseline} -> {cmp.new}")
    for col in cols:
        table.add_column(col, justify="right" if col in ("baseline", "new", "delta", "band", "95% CI") else "left")
    for c in cmp.configs:
        cells = _cells(c)
        verdict = "regressed" if c.regressed else (c.primary.verdict if c.primary else "n/a")
        style = _STYLE.get(verdict, "")
        if c.status in ("missing", "newly_failed") or c.regressed:
            style = "bold red"
        elif c.status in ("new", "fixed"):
            style = "cyan"
        cells["resources"] = cells["resources"].replace(", ", "\n")  # one ratio per line in a terminal
        table.add_row(*[cells[col] for col in cols], style=style)
    return table


def to_markdown(cmp: Comparison) -> str:
    cols = _columns(cmp)
    lines = [
        f"### {cmp.suite}: `{cmp.baseline}` -> `{cmp.new}`",
        "",
        f"**{summary_line(cmp)}** (tolerance {cmp.tolerance} pt, time x{cmp.time_threshold}, "
        f"memory x{cmp.memory_threshold})",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
    ]
    for c in cmp.configs:
        cells = _cells(c)
        if c.regressed:
            cells["verdict"] = "**REGRESSED**"
        lines.append("| " + " | ".join(cells[col].replace("|", "\\|") for col in cols) + " |")
    return "\n".join(lines) + "\n"
