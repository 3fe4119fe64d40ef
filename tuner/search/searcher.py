"""The searcher: Ray Tune's OptunaSearch, recording in the Optuna study which Tune trial each
Optuna trial was asked for.

A driver killed outright can leave Optuna trials running that no Tune trial will ever
finish. With that record, a resumed search tells them apart from the trials that go on using
the study and Tune's JSON snapshot alone (``runner._fail_orphans``), instead of unpickling
Tune's searcher snapshot.
"""

from __future__ import annotations

from ray.tune.search.optuna import OptunaSearch

__all__ = ["TUNE_TRIAL_ATTR", "TrialRecordingSearch"]

TUNE_TRIAL_ATTR = "tune_trial_id"


class TrialRecordingSearch(OptunaSearch):
    """OptunaSearch whose Optuna trials carry their Tune trial id (a user attribute)."""

    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        trial = self._ot_trials.get(trial_id)
        if trial is not None and config is not None:
            trial.set_user_attr(TUNE_TRIAL_ATTR, trial_id)
        return config
