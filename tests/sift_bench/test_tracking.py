"""Trackers without any tracker library: the records they log hold the Parquet values, a tracker that
fails costs no result (one warning), and a tracker that is not installed is one line with the install
command (exit 2). The trackers themselves: test_tracker_mlflow.py, _tensorboard.py, _wandb.py."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from tracked_results import ERROR, SUITE, expected_tags, final_metrics, make_results, parquet_view
from typer.testing import CliRunner

import sift_bench.trackers as trackers
from sift_bench.cli import app
from sift_bench.results import read_trials
from sift_bench.trackers import LiveTracking
from sift_bench.trackers.records import TrialRecord, load_records


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), terminal_width=80, env={"COLUMNS": "80"})


def test_records_hold_the_parquet_values(tmp_path: Path) -> None:
    folder = make_results(tmp_path / "tracked")
    rows, curves = parquet_view(folder)
    records = load_records(folder)
    assert [r.trial_id for r in records] == list(rows) and len(records) == 4
    for rec in records:
        row = rows[rec.trial_id]
        got = {m: sorted((e, v[m]) for e, v in rec.epochs.items() if m in v) for m in curves[rec.trial_id]}
        assert got == curves[rec.trial_id]  # held-out metrics included, values exact
        assert rec.final_metrics() == final_metrics(row)
        assert rec.final_epoch == row["best_epoch"]
        assert {k: rec.tags[k] for k in expected_tags(row)} == expected_tags(row)
        # Params: the flattened spec, method options and budget included.
        spec = json.loads(row["spec"])
        assert rec.params["train.learning_rate"] == spec["train"]["learning_rate"] == 3.0e-4
        assert rec.params["train.heldout_fraction"] == 0.2 and rec.params["seed"] == row["seed"]
        assert rec.params["budget"] == row["budget"] and rec.params["trainable_params"] == row["trainable_params"]
        assert rec.params["knob"] == row["knob"] and rec.params["knob_value"] == row["knob_value"]
        if row["method"] == "adapter":
            assert rec.params["method_options.kind"] == "pfeiffer" and row["budget"] == "0.8%"
    failed = [r for r in records if not r.ok]
    assert len(failed) == 1 and failed[0].error == ERROR and failed[0].tags["error"] == ERROR
    assert failed[0].epochs == {} and failed[0].final == {}


class Down:
    """A tracker that accepts `accept` calls, then fails as a server that went away does."""

    def __init__(self, accept: int) -> None:
        self.accept, self.seen = accept, []

    def log(self, records: Sequence[TrialRecord]) -> None:
        if len(self.seen) >= self.accept:
            raise ConnectionError("tracker at http://127.0.0.1:9 refused the connection")
        self.seen += [r.trial_id for r in records]


@pytest.mark.parametrize("accept", [0, 2])
def test_a_tracker_that_fails_costs_no_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, accept: int) -> None:
    down = Down(accept)
    monkeypatch.setattr(trackers, "open_tracker", lambda name, where=None, project=None: down)
    warnings: list[str] = []
    live = LiveTracking("mlflow=http://127.0.0.1:9", warn=warnings.append)
    if importlib.util.find_spec("mlflow") is None:
        pytest.skip("LiveTracking checks that the tracker's library is installed")
    folder = make_results(tmp_path / "tracked", on_recorded=live)
    rows = read_trials(folder)
    assert len(rows) == 4 and sum(r["status"] == "ok" for r in rows) == 3  # every result, failed one included
    assert len(warnings) == 1 and "refused the connection" in warnings[0] and f"export {folder}" in warnings[0]
    assert live.logged == accept and down.seen == [r["trial_id"] for r in rows][:accept]


def test_a_tracker_that_cannot_start_costs_no_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(name: str, where: str | None = None, project: str | None = None) -> Any:
        raise ValueError(f"bad location {where!r}")

    monkeypatch.setattr(trackers, "open_tracker", refuse)
    monkeypatch.setattr(trackers, "tracker_info", lambda name: trackers.TRACKERS.get(name))  # as if installed
    warnings: list[str] = []
    folder = make_results(tmp_path / "tracked", on_recorded=LiveTracking("wandb=nowhere", warn=warnings.append))
    assert len(read_trials(folder)) == 4
    assert warnings == [w for w in warnings if "bad location 'nowhere'" in w] and len(warnings) == 1


def without(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `module` look uninstalled to the tracker registry."""
    find_spec = importlib.util.find_spec
    fake = lambda name, *a: None if name == module else find_spec(name, *a)  # noqa: E731
    monkeypatch.setattr(trackers.importlib.util, "find_spec", fake)


@pytest.mark.parametrize("name", ["mlflow", "tensorboard", "wandb"])
def test_a_tracker_not_installed_is_one_line_with_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    folder = make_results(tmp_path / "tracked")
    without(name, monkeypatch)
    res = invoke("export", str(folder), "--to", name)
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert f"pip install -e '.[{name}]'" in " ".join(res.output.split()), res.output
    # `run --track` fails the same way before anything runs: no results folder appears.
    suite = tmp_path / "tracked.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    res = invoke("run", str(suite), "--serial", "--results", str(tmp_path / "new"), "--track", name)
    assert res.exit_code == 2 and f".[{name}]" in res.output and not (tmp_path / "new").exists(), res.output


def test_export_rejects_bad_input(tmp_path: Path) -> None:
    folder = make_results(tmp_path / "tracked")
    for args, needle in [
        (("--to", "neptune"), "Unknown tracker 'neptune'"),
        (("--to", "tensorboard", "--uri", "sqlite:///x.db"), "--uri is for --to mlflow"),
        (("--to", "mlflow", "--dir", "runs"), "--dir is for --to tensorboard or wandb"),
    ]:
        res = invoke("export", str(folder), *args)
        assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output, res.output
    res = invoke("export", str(tmp_path / "missing"), "--to", "tensorboard", "--dir", str(tmp_path / "tb"))
    assert res.exit_code == 2 and "does not exist" in res.output and not (tmp_path / "tb").exists(), res.output


def test_params_are_the_flattened_spec() -> None:
    from sift_bench.trackers.records import flatten, param_text

    spec = {"method_options": {"rank": 8, "targets": ["query", "value"]}, "train": {"max_steps": None}, "grid": {}}
    assert flatten(spec) == {"method_options.rank": 8, "method_options.targets": '["query", "value"]',
                             "train.max_steps": None}  # fmt: skip
    assert [param_text(v) for v in (None, True, 0.0003, "fp32")] == ["null", "true", "0.0003", "fp32"]


def test_tracker_libraries_stay_at_the_edge() -> None:
    """The driver knows only its callback; tracker libraries are imported by their tracker module alone, and
    the trackers read results but never reach up into the driver or the CLI."""
    import ast

    pkg = Path(trackers.__file__).parents[1]

    def imported(path: Path) -> set[str]:
        tree = ast.parse(path.read_text())
        names = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        return names | {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}

    libraries = ("mlflow", "tensorboard", "torch.utils.tensorboard", "wandb")
    for path in pkg.rglob("*.py"):
        found = {m for m in imported(path) if m.split(".")[0] in {"mlflow", "wandb", "tensorboard"} or m in libraries}
        owner = {"mlflow_tracker.py": "mlflow", "tensorboard_tracker.py": "tensorboard", "wandb_tracker.py": "wandb"}
        assert all(owner.get(path.name, "-") in m for m in found), (path, found)
    assert not {m for m in imported(pkg / "driver.py") if m.startswith("sift_bench.trackers")}
    for path in (pkg / "trackers").glob("*.py"):
        assert not {m for m in imported(path) if m.startswith(("sift_bench.driver", "sift_bench.cli"))}, path
