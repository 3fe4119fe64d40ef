"""The searcher: Ray Tune's OptunaSearch, recording in the Optuna study which Tune trial each
Optuna trial was asked for.

A driver killed outright can leave Optuna trials running that no Tune trial will ever
finish. With that record, a resumed search tells them apart from the trials that go on using
the study and Tune's JSON snapshot alone (``runner._fail_orphans``), instead of unpickling
Tune's searcher snapshot.
"""

from __future__ import annotations

import os

from ray.tune.search.optuna import OptunaSearch

from tuner.search.study import snapshot_study

__all__ = ["TUNE_TRIAL_ATTR", "TrialRecordingSearch"]

TUNE_TRIAL_ATTR = "tune_trial_id"


class TrialRecordingSearch(OptunaSearch):
    """OptunaSearch whose Optuna trials carry their Tune trial id (a user attribute).

    Args:
        snapshot_study: with each save (each snapshot of Tune's), also write a copy of the
            SQLite study into the snapshot's folder, which Tune uploads to the experiment
            (:mod:`tuner.search.study`).
    """

    def __init__(self, *args, snapshot_study: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self._snapshot_study = snapshot_study

    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        trial = self._ot_trials.get(trial_id)
        if trial is not None and config is not None:
            trial.set_user_attr(TUNE_TRIAL_ATTR, trial_id)
        return config

    def save(self, checkpoint_path: str):
        super().save(checkpoint_path)
        if getattr(self, "_snapshot_study", False):
            # The same moment as the searcher's own state: the study and Tune's snapshot agree.
            snapshot_study(self._storage, os.path.dirname(checkpoint_path))
