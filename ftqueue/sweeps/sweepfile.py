"""Sweep files: a YAML (or TOML) search over a job kind's spec, checked into a ``SweepPlan``.

A plan is everything a trial needs and nothing from the database: the base spec, the space,
the method and its seed, the budget and the early-stopping rungs. Every error names the file
and the key, says what is allowed, and is raised before anything is written.

``method`` names one of ``sweeps/methods``:

- ``grid`` (the default): every combination of the listed values, in order; ranges are refused.
- ``random``: each trial drawn from lists and ranges (``log`` ranges on a log scale); trial
  ``n`` is a pure function of the file, its ``seed`` and ``n``.
- ``optuna``: Optuna's TPE sampler proposes each next trial from how the earlier ones ended.
- ``sobol``: a scrambled Sobol sequence (Optuna's QMCSampler, scrambled by ``seed``) spreads
  the trials over the space more evenly than ``random``; best with a power of two of trials.

Every method but ``grid`` needs ``budget.max_jobs``.

``metric`` is the validation metric the sweep optimises: ``accuracy`` (the default),
``macro_f1`` (scikit-learn's macro-averaged F1) or ``loss`` (mean cross-entropy). ``goal`` is
``max`` or ``min`` and follows the metric when left out (max for accuracy and macro_f1, min
for loss); a goal against the metric (``loss`` with ``max``) is refused, since no one wants
the worst trials. The metric ranks trials at rungs (ASHA), is what Optuna is told (its
study's direction is the goal), and picks the best trial in ``report --sweep``.

``early_stopping`` (ASHA; ``sweeps/asha.py`` has the rule) takes ``eta`` (default 3) and
``rungs``, where trials are compared:

- ``rungs: [1, 2]``: epochs (the default: every epoch but the last); fractions of an epoch
  too, ``[0.5, 1, 1.5]``, so a one-epoch trial can be stopped half-way. ``{epochs: [...]}``
  is the same.
- ``rungs: {every: 0.25}``: every quarter epoch, up to the end of the last epoch (excluded).
- ``rungs: {steps: [20, 40, 80]}``: optimizer steps, counted over the whole run; steps at or
  past a trial's last step are not used. With step rungs ``epochs`` may be searched.

At a rung inside an epoch the trainer validates on the validation split there (kept in the
job's stats as ``rung_validations``; results hold epochs) and asks for the verdict.

``gpu_class`` (a class such as ``a100``) sends every trial to that class's workers, and
``priority`` (``high``, ``normal``, ``low``) is each trial's, as `submit`'s flags do.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from ftqueue import kinds
from ftqueue.core.objective import GOALS, METRICS
from ftqueue.core.states import GPU_CLASS_PATTERN, Priority
from ftqueue.core.text import clip, quote
from ftqueue.errors import SpecError, SweepFileError
from ftqueue.settings import get_settings
from ftqueue.specs import DataSpec, Param, spec_params
from ftqueue.specs.aliases import own_field
from ftqueue.sweeps import methods
from ftqueue.sweeps.plan import Dimension, SweepPlan, first_values, hashable
from ftqueue.sweeps.reading import MAX_BYTES, read

TOP_KEYS = (
    "kind", "name", "model", "dataset", "data", "fixed", "space", "method", "seed",
    "budget", "early_stopping", "tags", "metric", "goal", "gpu_class", "priority",
)  # fmt: skip
#: Spec fields a sweep file may not set: they are pinned by ftqueue at submit.
_PINNED = ("model_fingerprint",)


__all__ = ["MAX_BYTES", "TOP_KEYS", "load", "parse"]


def load(path: Path) -> SweepPlan:
    """Read and check a sweep file (``.yaml``/``.yml``, or ``.toml``, at most 1 MiB)."""
    return parse(read(path), where=str(path))


def _err(where: str, key: str, what: str) -> SweepFileError:
    # Keys come from the file: a long one is clipped, like the values the messages quote.
    return SweepFileError(f"{where}: {clip(key, 80)}: {what}", param=key)


def _mapping(where: str, key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _err(where, key, f"must be a mapping of keys to values; got {_kind(value)}")
    odd = [k for k in value if not isinstance(k, str)]
    if odd:
        raise _err(where, key, f"keys must be text; got {quote(odd[0], 60)}: quote it")
    return value


def _kind(value: Any) -> str:
    names: dict[type, str] = {list: "a list", dict: "a mapping", str: "text"}
    return names.get(type(value), quote(value, 60))


def _int(where: str, key: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _err(where, key, f"must be a whole number in {lo}..{hi}; got {quote(value, 60)}")
    return value


def parse(raw: Any, *, where: str = "sweep file") -> SweepPlan:
    """Check a parsed sweep file; SweepFileError names the first bad key."""
    if not isinstance(raw, dict):
        raise SweepFileError(f"{where}: must be a mapping of keys (kind, model, space, ...)")
    odd = [k for k in raw if not isinstance(k, str)]
    if odd:
        raise SweepFileError(
            f"{where}: keys must be text; got {quote(odd[0], 60)}: use {', '.join(TOP_KEYS)}"
        )
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise _err(where, unknown[0], f"unknown key; use: {', '.join(TOP_KEYS)}")
    kind_name = raw.get("kind", "lora")
    kind = kinds.get(str(kind_name))
    if kind is None or kind.role != kinds.Role.RUN:
        runs = ", ".join(kinds.with_role(kinds.Role.RUN))
        raise _err(where, "kind", f"must be a training kind ({runs}); got {quote(kind_name, 60)}")
    spec_type = kind.spec_type
    params = {f.name: p for f, p in spec_params(spec_type)}
    fields = {f.name for f in dataclasses.fields(spec_type)} - {"data", *_PINNED}
    fixed = dict(_mapping(where, "fixed", raw.get("fixed")))
    for key in fixed:
        if key not in fields:
            raise _err(
                where,
                f"fixed.{key}",
                f"not a {kind.name} setting{_called(key, fields)}; use: "
                f"{', '.join(sorted(fields))}",
            )
    if "model" in raw:
        fixed["model"] = raw["model"]
    if "model" not in fixed:
        raise _err(where, "model", "missing: name the model (minilm, a hub id or a directory)")
    data = dict(_mapping(where, "data", raw.get("data")))
    if "dataset" in raw:
        if "dataset" in data:
            raise _err(where, "dataset", "given twice (also under data): keep one")
        data["dataset"] = raw["dataset"]
    if "dataset" not in data:
        raise _err(where, "dataset", "missing: name the dataset (movie-snippets, a hub id, a file)")
    data_fields = {f.name for f, _ in spec_params(DataSpec)} - {"fingerprint"}
    for key in data:
        if key not in data_fields:
            raise _err(where, f"data.{key}", f"unknown; use: {', '.join(sorted(data_fields))}")
    try:
        DataSpec(**data)
    except SpecError as exc:
        raise _err(where, "data", exc.message) from None

    space_raw = _mapping(where, "space", raw.get("space"))
    if not space_raw:
        raise _err(
            where, "space", "missing: give at least one searched setting, e.g. lr: [1e-4, 1e-3]"
        )
    searchable = sorted(n for n, p in params.items() if p.hyper or n == "seed")
    space = []
    for field_name, value in space_raw.items():
        key = f"space.{field_name}"
        if field_name not in searchable:
            raise _err(
                where,
                key,
                f"not a searchable {kind.name} setting{_called(field_name, searchable)}; use: "
                f"{', '.join(searchable)}",
            )
        if field_name in fixed:
            raise _err(where, key, "also under fixed: keep one")
        space.append(_dimension(where, key, field_name, value, params[field_name]))
    base = {**fixed, "data": data}

    method_name = raw.get("method", "grid")
    method = methods.get(method_name) if isinstance(method_name, str) else None
    if method is None:
        known = ", ".join(methods.names())
        raise _err(where, "method", f"must be one of {known}; got {quote(method_name, 60)}")
    seed = _int(where, "seed", raw.get("seed", 0), 0, 2**31 - 1)
    for dim in space:
        problem = method.check(dim)
        if problem is not None:
            raise _err(where, f"space.{dim.name}", problem)

    budget = _mapping(where, "budget", raw.get("budget"))
    for key in budget:
        if key not in ("max_jobs", "max_parallel"):
            raise _err(where, f"budget.{key}", "unknown; use max_jobs, max_parallel")
    size = method.size(space)
    if "max_jobs" in budget:
        max_jobs = _int(where, "budget.max_jobs", budget["max_jobs"], 1, 10_000)
    elif size is not None:
        max_jobs = size
    else:
        raise _err(
            where, "budget.max_jobs", f"missing: method {method_name} needs a number of trials"
        )
    if size is not None:
        max_jobs = min(max_jobs, size)
    cap = get_settings().max_grid
    if max_jobs > cap:
        # Checked from the dimensions' sizes, before a single trial is made or checked.
        raise _err(
            where,
            "budget.max_jobs" if "max_jobs" in budget else "space",
            f"a grid of {max_jobs:,} trials, more than FTQUEUE_MAX_GRID ({cap:,}): list fewer "
            "values, set budget.max_jobs, or raise FTQUEUE_MAX_GRID",
        )
    max_parallel = _int(
        where, "budget.max_parallel", budget.get("max_parallel", max_jobs), 1, 10_000
    )

    planned = fixed.get("epochs", _default(spec_type, "epochs"))
    if planned is None:
        # Left to the device each trial runs on: its rungs are placed for a CPU's epochs.
        from ftqueue.kinds.lora import device_recipe

        planned = device_recipe("cpu")["epochs"]
    try:
        epochs = int(params["epochs"].check("epochs", planned))
    except SpecError as exc:
        raise _err(where, "fixed.epochs", exc.message) from None
    metric, goal = _objective(where, raw.get("metric", "accuracy"), raw.get("goal"))
    eta, rungs, unit = _early_stopping(where, raw.get("early_stopping"), epochs, space)
    tags = raw.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise _err(where, "tags", "must be a list of labels")
    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        raise _err(where, "name", f"must be text; got {quote(name, 60)}")
    _check_labels(where, tags, name)
    gpu_class = raw.get("gpu_class")
    if gpu_class is not None and not (
        isinstance(gpu_class, str) and GPU_CLASS_PATTERN.fullmatch(gpu_class)
    ):
        raise _err(
            where, "gpu_class", f"{quote(gpu_class, 40)} is no GPU class: use one such as a100"
        )
    priority = raw.get("priority", "normal")
    if priority not in tuple(Priority):
        raise _err(where, "priority", f"must be high, normal or low; got {quote(priority, 40)}")
    plan = SweepPlan(
        kind.name,
        name,
        base,
        tuple(space),
        method_name,
        seed,
        max_jobs,
        max_parallel,
        eta,
        rungs,
        tuple(tags),
        rung_unit=unit,
        metric=metric,
        goal=goal,
        gpu_class=gpu_class,
        priority=str(priority),
    )
    _check_values(plan, where)
    return plan


def _called(name: str, known: Any) -> str:
    """``; ftqueue calls it lr`` for another tool's name of a setting (``learning_rate``)."""
    ours = own_field(name, known) if isinstance(name, str) else None
    return f"; ftqueue calls it {ours}" if ours else ""


def _check_labels(where: str, tags: list[str], name: str | None) -> None:
    """Tags and the name, checked as ``--tag`` and ``--name`` are."""
    from ftqueue.submit.submission import check_label

    labels = [("tags", "tag", t) for t in tags] + ([("name", "name", name)] if name else [])
    for key, flag, label in labels:
        try:
            check_label(label, flag, width=40)
        except SpecError as exc:
            raise _err(where, key, str(exc)) from None


def _default(spec_type: type, name: str) -> Any:
    for f in dataclasses.fields(spec_type):
        if f.name == name:
            return f.default
    raise KeyError(name)


def _dimension(where: str, key: str, name: str, value: Any, p: Param) -> Dimension:
    if isinstance(value, list):
        if not value:
            raise _err(where, key, "an empty list: give at least one value")
        cap = get_settings().max_grid
        if len(value) > cap:
            # Each value is checked against the kind's rules: bounded before, not after.
            raise _err(
                where,
                key,
                f"{len(value):,} values, more than FTQUEUE_MAX_GRID ({cap:,}): list fewer, "
                "or give a range {low, high}",
            )
        if not all(_plain(v) or (isinstance(v, list) and all(map(_plain, v))) for v in value):
            raise _err(where, key, "each value must be a number, text, or a list of them")
        values = tuple(hashable(v) for v in value)
        if len(set(values)) != len(values):
            raise _err(where, key, "a value is listed twice")
        return Dimension(name, values=values)
    if isinstance(value, dict):
        extra = sorted(set(_mapping(where, key, value)) - {"low", "high", "log", "type"})
        if extra:
            raise _err(where, f"{key}.{extra[0]}", "unknown; a range has low, high, log, type")
        if p.kind not in ("int", "float"):
            raise _err(where, key, f"{name} is not numeric: give a list of values")
        low, high = value.get("low"), value.get("high")
        for side, bound in (("low", low), ("high", high)):
            if isinstance(bound, bool) or not isinstance(bound, (int, float)):
                raise _err(where, f"{key}.{side}", f"must be a number; got {quote(bound, 60)}")
            if not math.isfinite(bound):
                raise _err(where, f"{key}.{side}", f"must be a finite number; got {bound}")
        assert low is not None and high is not None
        if not low < high:
            raise _err(where, key, f"low must be below high; got {low} and {high}")
        log = value.get("log", False)
        if not isinstance(log, bool):
            raise _err(where, f"{key}.log", "must be true or false")
        if log and low <= 0:
            raise _err(where, f"{key}.low", "must be above 0 for a log range")
        kind = value.get("type", p.kind)
        if kind not in ("int", "float") or (p.kind == "int" and kind != "int"):
            raise _err(
                where, f"{key}.type", f"must be {'int' if p.kind == 'int' else 'int or float'}"
            )
        return Dimension(name, low=float(low), high=float(high), log=log, integer=kind == "int")
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        raise _err(where, key, f"a single value: put it under fixed, or give a list [{value}]")
    raise _err(where, key, "must be a list of values or a range {low, high, log}")


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _objective(where: str, metric: Any, goal: Any) -> tuple[str, str]:
    """The validation metric and its goal; a goal against the metric's nature is refused."""
    if not isinstance(metric, str) or metric not in METRICS:
        raise _err(
            where,
            "metric",
            f"must be a validation metric: {', '.join(METRICS)}; got {quote(metric, 60)}",
        )
    natural = METRICS[metric]
    if goal is None:
        return metric, natural
    if not isinstance(goal, str) or goal not in GOALS:
        raise _err(where, "goal", f"must be max or min; got {quote(goal, 60)}")
    if goal != natural:
        # No sweep wants the worst model; a swapped pair is a slip, not a request.
        raise _err(
            where,
            "goal",
            f"{goal} with metric {metric} would search for the worst trials: "
            f"{metric} is better {'higher' if natural == 'max' else 'lower'}, so leave goal "
            f"out or write goal: {natural}",
        )
    return metric, goal


#: Rungs a sweep may name, at most.
MAX_RUNGS = 100


def _early_stopping(
    where: str, raw: Any, epochs: int, space: list[Dimension]
) -> tuple[int | None, tuple[float, ...], str]:
    if raw is None or raw is False or raw == "none":
        return None, (), "epoch"
    if raw == "asha":
        raw = {}
    es = _mapping(where, "early_stopping", raw)
    extra = sorted(set(es) - {"type", "eta", "rungs"})
    if extra:
        raise _err(where, f"early_stopping.{extra[0]}", "unknown; use type, eta, rungs")
    if es.get("type", "asha") != "asha":
        raise _err(where, "early_stopping.type", f"must be asha; got {quote(es['type'], 60)}")
    eta = _int(where, "early_stopping.eta", es.get("eta", 3), 2, 100)
    key = "early_stopping.rungs"
    if "rungs" not in es:
        if epochs < 2:
            raise _err(
                where,
                key,
                "one epoch has no epoch before the last: give rungs within it, "
                "e.g. rungs: {every: 0.25} or rungs: {steps: [20, 40]}",
            )
        rungs_raw: Any = list(range(1, epochs))
    else:
        rungs_raw = es["rungs"]
    unit = "epoch"
    if isinstance(rungs_raw, dict):
        form = _mapping(where, key, rungs_raw)
        if len(form) != 1 or next(iter(form)) not in ("every", "steps", "epochs"):
            raise _err(where, key, "as a mapping, give one of every, epochs, steps")
        [(form_key, value)] = form.items()
        key = f"{key}.{form_key}"
        if form_key == "every":
            rungs_raw = _every(where, key, value, epochs)
        elif form_key == "steps":
            unit, rungs_raw = "step", value
        else:
            rungs_raw = value
    if not isinstance(rungs_raw, list) or not rungs_raw:
        raise _err(where, key, f"must be a list of {unit}s")
    if len(rungs_raw) > MAX_RUNGS:
        raise _err(where, key, f"{len(rungs_raw)} rungs, more than {MAX_RUNGS}: name fewer")
    rungs: tuple[float, ...]
    if unit == "step":
        rungs = tuple(_int(where, key, r, 1, 10_000_000) for r in rungs_raw)
    else:
        rungs = tuple(_epoch_point(where, key, r, epochs) for r in rungs_raw)
    if list(rungs) != sorted(set(rungs)):
        raise _err(where, key, f"must be increasing, each {unit} once")
    if unit == "epoch" and any(d.name == "epochs" for d in space):
        raise _err(
            where,
            "space.epochs",
            "cannot be searched with rungs in epochs: fix epochs, or give rungs: {steps: [...]}",
        )
    return eta, rungs, unit


def _epoch_point(where: str, key: str, value: Any, epochs: int) -> float:
    """A rung in epochs: above 0 and before the end of the last; whole ones stay whole."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not 0 < value < epochs or not math.isfinite(value):
        raise _err(
            where,
            key,
            f"each rung must be a number of epochs above 0 and below {epochs} (fractions "
            f"allowed, e.g. 0.5); got {quote(value, 60)}",
        )
    return int(value) if float(value).is_integer() else float(value)


def _every(where: str, key: str, value: Any, epochs: int) -> list[float]:
    """``every: x``: x, 2x, ... epochs, each before the end of the last epoch."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not 0 < value < epochs:
        raise _err(
            where,
            key,
            f"must be a number of epochs above 0 and below {epochs}, e.g. 0.5; "
            f"got {quote(value, 60)}",
        )
    count = math.ceil(round(epochs / value, 9)) - 1
    if count > MAX_RUNGS:
        raise _err(where, key, f"{count} rungs, more than {MAX_RUNGS}: compare less often")
    # Rounded: 3 x 0.1 is 0.30000000000000004, and a rung must have one spelling.
    return [round(k * value, 9) for k in range(1, count + 1)]


def _check_values(plan: SweepPlan, where: str) -> None:
    """Every listed value and both ends of every range, against the kind's own checks."""
    first = first_values(plan.space)
    for dim in plan.space:
        candidates = dim.values if not dim.is_range else (dim.low, dim.high)
        for value in candidates:
            if dim.integer and value is not None:
                value = int(value)
            try:
                plan.spec({**first, dim.name: value})
            except SpecError as exc:
                raise _err(where, f"space.{dim.name}", exc.message) from None
    if not plan.space:
        return
    try:
        plan.spec(first)
    except SpecError as exc:
        raise _err(where, "fixed", exc.message) from None
