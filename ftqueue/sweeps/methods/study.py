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

import contextlib
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftqueue.core.states import JobStatus
from ftqueue.store.db import database_url
from ftqueue.sweeps.methods.registry import Offer, Proposal, SweepMethod
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
        """Create the study; one of the same name left by a start killed before its sweep
        row was written (there is none: the caller checked) is deleted first."""
        import optuna

        _quiet()
        storage = _storage()
        name = study_name(sweep_id)
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=storage)
        optuna.create_study(
            study_name=name,
            storage=storage,
            # The sweep's goal: its validation metric is told as the trial's value.
            direction="maximize" if plan.goal == "max" else "minimize",
        )

    def forget(self, sweep_id: str) -> None:
        import optuna

        _quiet()
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=study_name(sweep_id), storage=_storage())

    def propose(self, sweep_id: str, plan: SweepPlan, count: int) -> Offer:
        # Asked under the sweep row's lock, for the slots still free then: a proposal that
        # found no slot would stay in the study as a trial that never ran.
        return AskedInLock(lambda: self.ask(sweep_id, plan))

    def ask(self, sweep_id: str, plan: SweepPlan) -> Proposal:
        """The next trial the sampler proposes, under its Optuna trial number.

        A waiting trial (one given back, see ``give_back``) is taken first, with its values.
        """
        import optuna

        _quiet()
        study = optuna.load_study(study_name=study_name(sweep_id), storage=_storage())
        study.sampler = self.sampler(plan, study)
        trial = study.ask({dim.name: _distribution(dim) for dim in plan.space})
        values = {dim.name: _decode(dim, trial.params[dim.name]) for dim in plan.space}
        return Proposal(trial.number, values)

    def tell(self, sweep_id: str, trial: int, status: str, curve: list[tuple[int, float]]) -> None:
        """Report a finished trial: the best value of its sweep's validation metric (the
        study's direction says which is best), or pruned (with its curve), or failed. A trial
        told before (a re-delivered message) is left as it is."""
        import optuna
        from optuna.trial import TrialState

        _quiet()
        study, storage, trial_id = _open(sweep_id, trial)
        if trial_id is None:
            return
        from optuna.study import StudyDirection

        # Told meanwhile by another process (the reaper mending, a re-delivered message):
        # the first tell stands.
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            for epoch, value in curve:
                storage.set_trial_intermediate_value(trial_id, epoch, value)
            pick = max if study.direction == StudyDirection.MAXIMIZE else min
            best = pick((v for _, v in curve), default=None)
            if status == JobStatus.SUCCEEDED and best is not None:
                study.tell(trial, best, skip_if_finished=True)
            elif status == JobStatus.PRUNED:
                study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
            else:
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)

    def open_trials(self, sweep_id: str) -> list[int]:
        from optuna.trial import TrialState

        _quiet()
        study, _, _ = _open(sweep_id, None)
        return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]

    def give_back(self, sweep_id: str, trials: list[int]) -> None:
        """Running trials that did not run to an outcome go back to waiting: the next ask
        takes them (values kept), and the study shows no trial running for them."""
        import optuna
        from optuna.trial import TrialState

        _quiet()
        for number in trials:
            _, storage, trial_id = _open(sweep_id, number)
            if trial_id is not None:
                with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                    storage.set_trial_state_values(trial_id, TrialState.WAITING)

    def reopen(self, sweep_id: str, trials: list[int]) -> dict[int, int]:
        """Trials to run again: waiting ones run again under their number; one already told
        becomes a new trial with the same values (a told trial cannot be reopened)."""
        from optuna.trial import FrozenTrial, TrialState

        _quiet()
        numbers: dict[int, int] = {}
        for number in trials:
            _, storage, trial_id = _open(sweep_id, number, finished=True)
            if trial_id is None:
                continue
            frozen = storage.get_trial(trial_id)
            if not frozen.state.is_finished():
                storage.set_trial_state_values(trial_id, TrialState.RUNNING)
                numbers[number] = number
                continue
            template = FrozenTrial(
                number=-1,
                state=TrialState.RUNNING,
                value=None,
                datetime_start=None,
                datetime_complete=None,
                params=frozen.params,
                distributions=frozen.distributions,
                user_attrs={"ftqueue": f"run again after trial {number}"},
                system_attrs={},
                intermediate_values={},
                trial_id=-1,
            )
            study_id = storage.get_study_id_from_name(study_name(sweep_id))
            new_id = storage.create_new_trial(study_id, template_trial=template)
            numbers[number] = storage.get_trial_number_from_id(new_id)
        return numbers


def _open(sweep_id: str, number: int | None, *, finished: bool = False) -> tuple[Any, Any, Any]:
    """The study, its storage, and trial ``number``'s id (None when it is missing or, unless
    ``finished``, already told). KeyError when the study is missing."""
    import optuna

    storage = _storage()
    study = optuna.load_study(study_name=study_name(sweep_id), storage=storage)
    if number is None:
        return study, storage, None
    study_id = storage.get_study_id_from_name(study_name(sweep_id))
    try:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    except KeyError:
        return study, storage, None
    if not finished and storage.get_trial(trial_id).state.is_finished():
        return study, storage, None
    return study, storage, trial_id


class AskedInLock(Offer):
    """Proposals asked when taken, under the sweep row's lock: exactly as many as are free.

    Asking takes a while (tens of milliseconds), and holds the sweep's lock meanwhile; a
    process killed before its trials commit leaves running trials with no job, which the
    reaper gives back (``reconcile`` in ftqueue/sweeps/continuing.py).
    """

    def __init__(self, ask: Callable[[], Proposal]) -> None:
        self.ask = ask

    def take(self, first: int, count: int) -> list[Proposal]:
        return [self.ask() for _ in range(count)]


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
