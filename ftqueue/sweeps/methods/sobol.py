"""``sobol``: a scrambled Sobol sequence (Optuna's QMCSampler) spreads the trials over the space.

Quasi-random: like ``random`` the trials ignore how earlier ones ended, but they cover the
space more evenly, and the sweep's seed fixes the scrambling. The sequence's position is kept
in the study, so every worker continues the same sequence; the study's first trial is drawn
at random (seeded too), as QMCSampler learns the space from it. Powers of two of trials
cover the space best. Optuna moves the position without a lock: two workers asking at the
same moment may both get the same point, a trial run twice rather than a point skipped.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from ftqueue.sweeps.methods.registry import register
from ftqueue.sweeps.methods.study import StudyMethod
from ftqueue.sweeps.plan import SweepPlan

if TYPE_CHECKING:
    import optuna


class Sobol(StudyMethod):
    name = "sobol"

    def sampler(self, plan: SweepPlan, study: optuna.Study) -> optuna.samplers.BaseSampler:
        import optuna

        with warnings.catch_warnings():
            # QMCSampler is marked experimental since Optuna 3; the warning says only that.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(
                qmc_type="sobol", scramble=True, seed=plan.seed, warn_independent_sampling=False
            )


register(Sobol())
