"""``optuna``: Optuna's TPE sampler proposes each next trial from how the earlier ones ended."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ftqueue.sweeps.methods.registry import register
from ftqueue.sweeps.methods.study import StudyMethod
from ftqueue.sweeps.plan import SweepPlan

if TYPE_CHECKING:
    import optuna


class TPE(StudyMethod):
    name = "optuna"

    def sampler(self, plan: SweepPlan, study: optuna.Study) -> optuna.samplers.BaseSampler:
        import optuna

        # Seeded by the sweep's seed, the process and the trials so far: two workers asking at
        # once must not draw the same random start-up trial. (Trials are asked in whatever
        # order workers finish, so an optuna sweep is not reproducible trial by trial; a
        # random one is.)
        seed = hash((plan.seed, os.getpid(), len(study.get_trials(deepcopy=False)))) % 2**31
        return optuna.samplers.TPESampler(seed=seed)


register(TPE())
