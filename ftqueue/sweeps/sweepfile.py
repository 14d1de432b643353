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
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from ftqueue import kinds
from ftqueue.core.text import clip, quote
from ftqueue.errors import SpecError, SweepFileError
from ftqueue.settings import get_settings
from ftqueue.specs import DataSpec, Param, spec_params
from ftqueue.sweeps import methods
from ftqueue.sweeps.plan import Dimension, SweepPlan, first_values, hashable
from ftqueue.sweeps.reading import MAX_BYTES, read

TOP_KEYS = (
    "kind", "name", "model", "dataset", "data", "fixed", "space", "method", "seed",
    "budget", "early_stopping", "tags",
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
                f"not a {kind.name} setting; use: {', '.join(sorted(fields))}",
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
                where, key, f"not a searchable {kind.name} setting; use: {', '.join(searchable)}"
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
    eta, rungs = _early_stopping(where, raw.get("early_stopping"), epochs, space)
    tags = raw.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise _err(where, "tags", "must be a list of labels")
    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        raise _err(where, "name", f"must be text; got {quote(name, 60)}")
    _check_labels(where, tags, name)
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
    )
    _check_values(plan, where)
    return plan


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


def _early_stopping(
    where: str, raw: Any, epochs: int, space: list[Dimension]
) -> tuple[int | None, tuple[int, ...]]:
    if raw is None or raw is False or raw == "none":
        return None, ()
    if raw == "asha":
        raw = {}
    es = _mapping(where, "early_stopping", raw)
    extra = sorted(set(es) - {"type", "eta", "rungs"})
    if extra:
        raise _err(where, f"early_stopping.{extra[0]}", "unknown; use type, eta, rungs")
    if es.get("type", "asha") != "asha":
        raise _err(where, "early_stopping.type", f"must be asha; got {quote(es['type'], 60)}")
    eta = _int(where, "early_stopping.eta", es.get("eta", 3), 2, 100)
    if epochs < 2:
        raise _err(
            where, "early_stopping", "needs at least 2 epochs: rungs are epochs before the last"
        )
    rungs_raw = es.get("rungs", list(range(1, epochs)))
    if not isinstance(rungs_raw, list) or not rungs_raw:
        raise _err(where, "early_stopping.rungs", f"must be a list of epochs in 1..{epochs - 1}")
    rungs = tuple(_int(where, "early_stopping.rungs", r, 1, epochs - 1) for r in rungs_raw)
    if list(rungs) != sorted(set(rungs)):
        raise _err(where, "early_stopping.rungs", "must be increasing, each epoch once")
    if any(d.name == "epochs" for d in space):
        raise _err(
            where, "space.epochs", "cannot be searched with early stopping: rungs are epochs"
        )
    return eta, rungs


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
