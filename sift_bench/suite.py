"""Suites: declarative YAML describing a grid of trials, validated once, all errors reported together.

A suite names models, tasks, methods (with options), budgets, seeds and training settings, with overrides
per task, per method and per (model, task, method) match, optional hyper-parameter grids, evaluators and
per-trial resources. `load_suite(path)` returns a validated `Suite`; `sift_bench.expand` turns it into
trials. Training settings resolve in this order, later winning:

    TrainSettings defaults < suite `train` < `tasks.<task>.train` < `methods.<name>.train`
        < matching `overrides` (in file order) < the grid point

`selection: heldout` gives every trial `heldout_fraction` (default 0.1) unless its settings set one: the trial
then picks its best epoch on that slice of the training set, and reports dev.

A `methods` entry is the method's options plus a few reserved keys (`method`, `train`, `budgets`, `grid`,
`resources`). Its key is the method's name, or any label when `method:` names the registered method (so a
suite can hold variants such as SIFT on different modules).
"""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo

from sift_bench.errors import SiftBenchError
from sift_bench.registry import did_you_mean
from sift_bench.spec import Budget, Resources, Strict, TrainSettings

SUITE_SCHEMA_VERSION = 1
RESERVED_METHOD_KEYS = ("method", "train", "budgets", "grid", "resources")


def _patch_model() -> type[BaseModel]:
    """TrainSettings with every field optional: a partial override validated with the same constraints."""
    from pydantic import create_model

    fields: dict[str, Any] = {}
    for name, f in TrainSettings.model_fields.items():
        info = FieldInfo.merge_field_infos(f, default=None)
        fields[name] = (f.annotation | None, info)  # type: ignore[operator]
    return create_model("TrainPatch", __config__=ConfigDict(extra="forbid"), **fields)


TrainPatch = _patch_model()


def patch_values(patch: BaseModel | None) -> dict[str, Any]:
    """Only the keys the YAML actually set (an explicit null counts: it can reset max_steps)."""
    return {} if patch is None else patch.model_dump(mode="json", exclude_unset=True)


class TaskEntry(Strict):
    train: TrainPatch | None = None  # type: ignore[valid-type]
    data_dir: str | None = Field(None, description="GLUE folder for this task (else the suite's data_dir).")


class MethodEntry(BaseModel):
    """Reserved keys here; every other key is a method option, checked against the method's own model."""

    model_config = ConfigDict(extra="allow")

    method: str | None = Field(None, description="Registered method, when the key is a variant label.")
    train: TrainPatch | None = None  # type: ignore[valid-type]
    budgets: list[Budget] | None = Field(None, description="Budgets for this method (else the suite's).")
    grid: dict[str, list[Any]] | None = None
    resources: Resources | None = None

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Match(Strict):
    """Which trials an override applies to; each given field must match (a list means any of)."""

    model: str | list[str] | None = None
    task: str | list[str] | None = None
    method: str | list[str] | None = Field(None, description="Variant label or registered method name.")


class Override(Strict):
    when: Match
    train: TrainPatch  # type: ignore[valid-type]


class SearchSettings(Strict):
    extend_edges: int = Field(
        0, ge=0, description="Per cell and numeric grid axis of 3+ points, how many points the driver may add "
        "beyond an edge that the selection chose (sift_bench.search); 0: never extend.",
    )  # fmt: skip


class Suite(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Also the results folder name.")
    schema_version: Literal[1]
    description: str = ""
    models: list[str] = Field(min_length=1)
    tasks: dict[str, TaskEntry] = Field(min_length=1)
    methods: dict[str, MethodEntry] = Field(min_length=1)
    budgets: list[Budget] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    train: TrainPatch = Field(default_factory=TrainPatch)  # type: ignore[valid-type]
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    search: SearchSettings = Field(default_factory=SearchSettings)
    overrides: list[Override] = Field(default_factory=list)
    evaluators: dict[str, dict[str, Any]] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    data_dir: str | None = None
    selection: Literal["dev", "heldout"] = Field(
        "dev",
        description="What picks each trial's best epoch and each method's grid point: the dev set (reported too, "
        "so optimistic) or a held-out slice of the training set (dev is then only reported).",
    )
    heldout_fraction: float = Field(
        0.1, gt=0, lt=1, description="With `selection: heldout`: the share of training examples held out."
    )
    forgetting: Literal["auto", "off", "sts_zero_shot", "mlm_loss", "lm_loss"] = Field(
        "auto",
        description="What each trial forgot of the pre-trained model, measured before and after training: auto "
        "(the measure the model supports), off, or a measure by name (docs/results-format.md).",
    )
    _source: str | None = PrivateAttr(None)  # the file it came from (set by load_suite; not a YAML key)

    @property
    def source(self) -> str | None:
        return self._source

    @field_validator("tasks", "methods", "evaluators", mode="before")
    @classmethod
    def _names_to_mapping(cls, value: Any) -> Any:
        """`tasks: [mrpc, rte]` is shorthand for a mapping without settings, and `mrpc:` (null) for `mrpc: {}`."""
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return {v: {} for v in value}
        if isinstance(value, dict):
            return {k: ({} if v is None else v) for k, v in value.items()}
        return value

    @field_validator("heldout_fraction")
    @classmethod
    def _heldout_needs_selection(cls, value: float, info: ValidationInfo) -> float:
        if info.data.get("selection") != "heldout":
            raise ValueError(
                "heldout_fraction applies only with `selection: heldout`; add that line or remove this one"
            )
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds_once(cls, seeds: list[int]) -> list[int]:
        twice = sorted({s for s in seeds if seeds.count(s) > 1})
        if twice:
            raise ValueError(
                f"seed {', '.join(map(str, twice))} is listed more than once; each seed is one run, so list "
                "each once (e.g. seeds: [0, 1, 2])"
            )
        return seeds


class SuiteError(SiftBenchError):
    """Every problem in one suite file, each with its field path."""

    def __init__(self, source: str, errors: list[tuple[str, str]]) -> None:
        self.source = source
        self.errors = errors
        n = len(errors)
        lines = "\n".join(f"  - {path or '(top level)'}: {msg}" for path, msg in errors)
        super().__init__(f"{source}: {n} problem{'s' if n > 1 else ''} in the suite:\n{lines}")


# ---------------------------------------------------------------------------------------------------------
# Loading and checking.


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (PyYAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key '{key}' appears twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_suite(path: str | Path, data: dict[str, Any] | None = None) -> Suite:
    """Read, validate and check a suite file; raise SuiteError listing every problem at once."""
    path = Path(path)
    source = str(path)
    if data is None:
        data = _read_yaml(path)
    if not isinstance(data, dict):
        raise SuiteError(source, [("", f"a suite is a YAML mapping of keys (name, models, ...), got {data!r}")])
    return validate_suite(data, source)


def _read_yaml(path: Path) -> Any:
    """The parsed file; a missing, unreadable, empty or malformed file is a SiftBenchError naming the fix."""
    if path.is_dir():
        found = ", ".join(sorted(p.name for p in path.glob("*.yaml"))[:5])
        raise SiftBenchError(
            f"{path} is a directory, not a suite file: pass one YAML file"
            + (f" from it ({found})." if found else ", e.g. suites/quickstart.yaml.")
        )
    if not path.is_file():
        raise SiftBenchError(f"Suite file not found: {path}. Shipped suites are in suites/*.yaml.")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SiftBenchError(f"Cannot read the suite file {path}: {e}. Check its permissions and encoding.") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise SuiteError(str(path), [("", f"not valid YAML{where}: {problem}")]) from None
    if data is None:
        raise SuiteError(
            str(path),
            [("", "the file is empty; a suite needs name, schema_version, models, tasks and methods "
                  "(copy suites/quickstart.yaml to start).")],
        )  # fmt: skip
    return data


def validate_suite(data: dict[str, Any], source: str = "<suite>") -> Suite:
    errors: list[tuple[str, str]] = []
    suite: Suite | None = None
    try:
        suite = Suite.model_validate(data)
    except ValidationError as e:
        errors += [_format_pydantic(err, Suite) for err in e.errors()]
    errors += _check_names(data)
    if errors:
        # Deduplicate while keeping file order (a bad method can be reported by both passes).
        raise SuiteError(source, list(dict.fromkeys(errors)))
    assert suite is not None
    suite._source = source
    return suite


def _check_names(data: dict[str, Any]) -> list[tuple[str, str]]:
    """What pydantic cannot know: registered methods / tasks / evaluators, method options, grid keys."""
    from sift_bench.methods import METHODS
    from sift_bench.tasks import TASKS  # importing the package registers every task

    errors: list[tuple[str, str]] = []
    methods = data.get("methods")
    if isinstance(methods, list):
        methods = {m: {} for m in methods if isinstance(m, str)}
    if isinstance(methods, dict):
        for label, entry in methods.items():
            entry = entry if isinstance(entry, dict) else {}
            name = entry.get("method", label)
            if not isinstance(name, str):
                continue
            where = f"methods.{label}" + (".method" if "method" in entry else "")
            if name not in METHODS:
                hint = did_you_mean(name, METHODS.names())
                errors.append(
                    (where, f"unknown method '{name}'.{hint} Known: {', '.join(METHODS.names())}."
                     + ("" if "method" in entry else " (For a variant, add `method: <name>`.)"))
                )  # fmt: skip
                continue
            method = METHODS.get(name)
            options = {k: v for k, v in entry.items() if k not in RESERVED_METHOD_KEYS}
            try:
                method.options.model_validate(options)
            except ValidationError as e:
                for err in e.errors():
                    path, msg = _format_pydantic(err, method.options)
                    if err["type"] == "extra_forbidden" and len(err["loc"]) == 1:
                        # A misspelt reserved key (`trian`) is as likely as a misspelt option.
                        key, valid = str(err["loc"][0]), [*method.options.model_fields, *RESERVED_METHOD_KEYS]
                        msg = f"unknown key '{key}'.{did_you_mean(key, valid)} Valid keys: {', '.join(valid)}."
                        if key in TrainSettings.model_fields and key not in valid:
                            msg = f"unknown field '{key}'; it belongs under `methods.{label}.train:`."
                    errors.append((f"methods.{label}.{path}", msg))
            errors += _check_grid(entry.get("grid"), f"methods.{label}.grid")
            if method.knob is None and entry.get("budgets"):
                errors.append((f"methods.{label}.budgets", f"method '{name}' has no budget knob; remove its budgets."))
            budgets = entry["budgets"] if "budgets" in entry else data.get("budgets")
            if method.knob is not None and method.knob in options and budgets:
                errors.append(
                    (f"methods.{label}.{method.knob}",
                     f"the budgets {budgets} set the {method.knob} of '{name}'; remove {method.knob}, or give "
                     f"this method `budgets: []` to keep a fixed {method.knob}.")
                )  # fmt: skip
    tasks = data.get("tasks")
    names = list(tasks) if isinstance(tasks, dict) else tasks if isinstance(tasks, list) else []
    for task in names:
        if isinstance(task, str) and task not in TASKS:
            hint = did_you_mean(task, TASKS.names())
            errors.append((f"tasks.{task}", f"unknown task '{task}'.{hint} Known: {', '.join(TASKS.names())}."))
    errors += _check_grid(data.get("grid"), "grid")
    errors += _check_evaluators(data.get("evaluators"))
    overrides = data.get("overrides")
    if isinstance(overrides, list) and isinstance(methods, dict):
        labels = set(methods) | {e.get("method") for e in methods.values() if isinstance(e, dict)}
        for i, ov in enumerate(overrides):
            when = ov.get("when") if isinstance(ov, dict) else None
            wanted = when.get("method") if isinstance(when, dict) else None
            for m in [wanted] if isinstance(wanted, str) else wanted if isinstance(wanted, list) else []:
                if m not in labels:
                    hint = did_you_mean(str(m), sorted(str(x) for x in labels if x))
                    errors.append((f"overrides.{i}.when.method", f"'{m}' is not a method of this suite.{hint}"))
    return errors


def _check_evaluators(evaluators: Any) -> list[tuple[str, str]]:
    if not isinstance(evaluators, dict) or not evaluators:
        return []
    from sift_bench import evaluators as ev_pkg

    registry = getattr(ev_pkg, "EVALUATORS", None)
    if registry is None:
        return [("evaluators", "this install has no evaluator registry (sift_bench.evaluators.EVALUATORS).")]
    errors = []
    for name, options in evaluators.items():
        if name not in registry:
            hint = did_you_mean(str(name), registry.names())
            errors.append(
                (f"evaluators.{name}", f"unknown evaluator '{name}'.{hint} Known: {', '.join(registry.names())}.")
            )
            continue
        model = registry.get(name).options
        try:
            model.model_validate(options if options is not None else {})
        except ValidationError as e:
            for err in e.errors():
                path, msg = _format_pydantic(err, model)
                errors.append((f"evaluators.{name}.{path}".rstrip("."), msg))
    return errors


def _check_grid(grid: Any, where: str) -> list[tuple[str, str]]:
    """Grid keys are training settings; each value is checked as that setting would be."""
    if not isinstance(grid, dict):
        return []
    train_keys = list(TrainSettings.model_fields)
    errors = []
    for key, values in grid.items():
        if key not in train_keys:
            errors.append((f"{where}.{key}", _unknown_grid_key(str(key), train_keys)))
            continue
        if not isinstance(values, list) or not values:
            errors.append((f"{where}.{key}", f"a grid lists the values to try, e.g. [1e-4, 3e-4]; got {values!r}."))
            continue
        for i, value in enumerate(values):
            try:
                TrainPatch.model_validate({key: value})
            except ValidationError as e:
                errors += [(f"{where}.{key}.{i}", _format_pydantic(err, TrainPatch)[1]) for err in e.errors()]
    return errors


def _unknown_grid_key(key: str, train_keys: list[str]) -> str:
    return f"unknown grid key '{key}': grids vary training settings.{did_you_mean(key, train_keys)}"


# ---------------------------------------------------------------------------------------------------------
# Pydantic errors -> (field path, plain message).

# Tags pydantic adds to `loc` for union members and validators: not field names a user wrote.
_LOC_TAG = re.compile(r"^(str|int|float|bool|none|list|dict|.*\[.*\]|function-.*|union.*|tagged-union.*)$")


def _format_pydantic(err: dict[str, Any], root: type[BaseModel]) -> tuple[str, str]:
    loc = [p for p in err["loc"] if not (isinstance(p, str) and _LOC_TAG.match(p))]
    path = ".".join(str(p) for p in loc)
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        choices = _field_names(root, loc[:-1])
        if key in TrainSettings.model_fields and "train" in choices:  # `epochs: 3` one level too high
            under = ".".join(str(p) for p in [*loc[:-1], "train"])
            return path, f"unknown field '{key}'; it belongs under `{under}:` ({under}: {{{key}: {value!r}}})."
        return path, f"unknown key '{key}'.{did_you_mean(key, choices)}" + (
            f" Valid keys: {', '.join(choices)}." if choices else ""
        )
    if kind == "missing":
        return path, "required key is missing."
    if kind == "literal_error":
        return path, f"{err['msg']}, got {value!r}."
    msg = err["msg"].removeprefix("Value error, ")
    if value is not None and not isinstance(value, dict | list):
        msg += f" (got {value!r})"
    return path, msg + ("" if msg.endswith(".") else ".")


def _unwrap(annotation: Any) -> Any:
    """Strip Optional / Annotated; descend into dict values and list items."""
    while True:
        origin = get_origin(annotation)
        args = [a for a in get_args(annotation) if a is not type(None)]
        if origin is Annotated:
            annotation = args[0]
        elif origin is Union or origin is types.UnionType:
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            if not models:
                return annotation
            annotation = models[0]
        else:
            return annotation


def _field_names(root: type[BaseModel], loc: list[Any]) -> list[str]:
    """The keys valid at `loc` inside `root`, for a "did you mean" on an unknown key."""
    current: Any = root
    i = 0
    while i < len(loc):
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(loc[i]))
            if field is None:
                return []
            current = field.annotation
            i += 1
        elif get_origin(current) in (dict, list):
            current = get_args(current)[-1]
            i += 1  # skip the user's dict key / list index
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []
