"""``optuna`` sweeps: Optuna's TPE sampler proposes each next trial, told how each one ended.

The study lives in Optuna's own tables in the results database (SQLite or PostgreSQL), named
``ftqueue-<sweep id>``, so any worker can ask for the next trial and tell a finished one, and
the search goes on after the submitting process has exited. Optuna's tables belong to
Optuna (it creates and migrates them); ftqueue's schema does not list them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ftqueue.db import database_url
from ftqueue.states import JobStatus
from ftqueue.sweepfile import Dimension, SweepPlan

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

#: Lists of values that are not plain scalars (target modules) travel as comma-joined text.
_JOIN = ","


def study_name(sweep_id: str) -> str:
    return f"ftqueue-{sweep_id}"


def _storage() -> Any:
    import optuna

    url = database_url()
    # Workers ask and tell at the same moments; on SQLite, wait for the lock as ftqueue does.
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def _quiet() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def create_study(sweep_id: str, plan: SweepPlan) -> None:
    import optuna

    _quiet()
    optuna.create_study(
        study_name=study_name(sweep_id),
        storage=_storage(),
        direction="maximize",
        load_if_exists=True,
    )


def load_study(sweep_id: str, plan: SweepPlan, number: int = 0) -> optuna.Study:
    import optuna

    _quiet()
    # A sampler per call, seeded by the sweep's seed and the trial's place: two workers
    # asking at once do not draw the same random start-up trials.
    sampler = optuna.samplers.TPESampler(seed=plan.seed * 100_003 + number)
    return optuna.load_study(study_name=study_name(sweep_id), storage=_storage(), sampler=sampler)


def _distribution(dim: Dimension) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if not dim.is_range:
        return CategoricalDistribution([_encode(v) for v in dim.values])
    assert dim.low is not None and dim.high is not None
    if dim.integer:
        return IntDistribution(int(dim.low), int(dim.high), log=dim.log)
    return FloatDistribution(dim.low, dim.high, log=dim.log)


def _encode(value: Any) -> Any:
    return _JOIN.join(value) if isinstance(value, tuple) else value


def _decode(dim: Dimension, value: Any) -> Any:
    if not dim.is_range and any(isinstance(v, tuple) for v in dim.values):
        return tuple(str(value).split(_JOIN))
    return value


def ask(sweep_id: str, plan: SweepPlan, number: int) -> tuple[int, dict[str, Any]]:
    """The next trial Optuna proposes: (its Optuna trial number, the searched values)."""
    study = load_study(sweep_id, plan, number)
    trial = study.ask({dim.name: _distribution(dim) for dim in plan.space})
    values = {dim.name: _decode(dim, trial.params[dim.name]) for dim in plan.space}
    return trial.number, values


def tell(sweep_id: str, trial: int, status: str, curve: list[tuple[int, float]]) -> None:
    """Report a finished trial: its best validation accuracy, or pruned (with its curve), or
    failed. A trial told before (a re-delivered message) is left as it is."""
    import optuna
    from optuna.trial import TrialState

    _quiet()
    storage = _storage()
    study = optuna.load_study(study_name=study_name(sweep_id), storage=storage)
    frozen = study.get_trials(deepcopy=False)
    match = [t for t in frozen if t.number == trial]
    if not match or match[0].state.is_finished():
        return
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study_name(sweep_id)), trial
    )
    for epoch, value in curve:
        storage.set_trial_intermediate_value(trial_id, epoch, value)
    best = max((v for _, v in curve), default=None)
    if status == JobStatus.SUCCEEDED and best is not None:
        study.tell(trial, best, skip_if_finished=True)
    elif status == JobStatus.PRUNED:
        study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
    else:
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
