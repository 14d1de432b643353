"""Methods backed by an Optuna study: its sampler proposes each next trial, told how each ended.

The study, named ``ftqueue-<sweep id>``, lives in Optuna's own tables beside the results:
in the schema ``optuna`` of the same PostgreSQL database (revision 0004 creates it), or in
``<name>.optuna.db`` next to a SQLite file. Any worker can then ask for the next trial and
tell a finished one, and the search goes on after the submitting process has exited.
Optuna creates and migrates its tables itself, with its own ``alembic_version`` table: that
is why they cannot share ftqueue's schema, whose ``alembic_version`` is ftqueue's.
A method here differs from another only in its sampler (``StudyMethod.sampler``).
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftqueue.core.states import JobStatus
from ftqueue.store.db import database_url
from ftqueue.sweeps.methods.registry import Asked, Offer, Proposal, SweepMethod
from ftqueue.sweeps.plan import Dimension, SweepPlan

if TYPE_CHECKING:
    import optuna

#: Lists of values that are not plain scalars (target modules) travel as comma-joined text.
_JOIN = ","

#: The PostgreSQL schema of Optuna's tables.
SCHEMA = "optuna"


def study_name(sweep_id: str) -> str:
    return f"ftqueue-{sweep_id}"


def storage_url() -> tuple[str, dict[str, Any]]:
    """Where Optuna keeps its studies, and the engine options it needs there."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url())
    if url.get_backend_name() == "sqlite":
        assert url.database, "an in-memory SQLite database has no place beside it"
        path = Path(url.database)
        beside = url.set(database=str(path.with_name(f"{path.stem}.optuna.db")))
        # Workers ask and tell at the same moments: wait for the lock as ftqueue does.
        return beside.render_as_string(hide_password=False), {"connect_args": {"timeout": 60}}
    return database_url(), {"connect_args": {"options": f"-c search_path={SCHEMA}"}}


def _storage() -> Any:
    import optuna

    url, kwargs = storage_url()
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def _quiet() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


class StudyMethod(SweepMethod):
    """A method whose trials an Optuna sampler proposes, numbered by the study."""

    @abstractmethod
    def sampler(self, plan: SweepPlan, study: optuna.Study) -> optuna.samplers.BaseSampler:
        """The sampler for one ask (a new one each time: asks come from any process)."""

    def start(self, sweep_id: str, plan: SweepPlan) -> None:
        import optuna

        _quiet()
        optuna.create_study(
            study_name=study_name(sweep_id),
            storage=_storage(),
            direction="maximize",
            load_if_exists=True,
        )

    def propose(self, sweep_id: str, plan: SweepPlan, count: int) -> Offer:
        # Asked before the sweep row is locked: an ask takes a while. A proposal that finds its
        # slot taken meanwhile is told to Optuna as failed (discard).
        return Asked(
            [self.ask(sweep_id, plan) for _ in range(count)],
            lambda numbers: discard(sweep_id, numbers),
        )

    def ask(self, sweep_id: str, plan: SweepPlan) -> Proposal:
        """The next trial the sampler proposes, under its Optuna trial number."""
        import optuna

        _quiet()
        study = optuna.load_study(study_name=study_name(sweep_id), storage=_storage())
        study.sampler = self.sampler(plan, study)
        trial = study.ask({dim.name: _distribution(dim) for dim in plan.space})
        values = {dim.name: _decode(dim, trial.params[dim.name]) for dim in plan.space}
        return Proposal(trial.number, values)

    def tell(self, sweep_id: str, trial: int, status: str, curve: list[tuple[int, float]]) -> None:
        """Report a finished trial: its best validation accuracy, or pruned (with its curve),
        or failed. A trial told before (a re-delivered message) is left as it is."""
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


def discard(sweep_id: str, numbers: list[int]) -> None:
    """Proposals that found no free slot: told as failed, marked so reports can leave them out."""
    import optuna
    from optuna.trial import TrialState

    _quiet()
    storage = _storage()
    study = optuna.load_study(study_name=study_name(sweep_id), storage=storage)
    study_id = storage.get_study_id_from_name(study_name(sweep_id))
    for number in numbers:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        storage.set_trial_user_attr(trial_id, "ftqueue", "no free slot; not run")
        study.tell(number, state=TrialState.FAIL, skip_if_finished=True)


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
