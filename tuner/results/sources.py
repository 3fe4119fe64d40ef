"""What a results command may be given as "the model": a checkpoint, a promotion's final model,
a promotion folder, a trial folder or a whole experiment, resolved to one
:class:`~tuner.training.checkpoint.ModelSet` the way a user means it.

An experiment means its newest finished promotion's final model, else its best checkpoint; a
promotion folder, its final model; a trial folder, its best checkpoint. A trial that errored
is refused (its checkpoints are of a run that did not finish), checkpoints inside it too.
"""

from __future__ import annotations

import posixpath

from tuner import storage
from tuner.errors import UserError
from tuner.search.experiment import EXPERIMENT_FILE
from tuner.training.checkpoint import MODEL, ModelSet, open_model

__all__ = ["resolve_model"]


def _is(url: str, name: str) -> bool:
    return storage.exists(storage.join(url, name))


def _trial_of(url: str) -> tuple[str, str] | None:
    """(experiment, trial id) when ``url`` is a trial folder or a checkpoint inside one."""
    for folder in (url, posixpath.dirname(url)):
        name = posixpath.basename(folder)
        parent = posixpath.dirname(folder)
        if name.startswith("trial_") and parent and _is(parent, EXPERIMENT_FILE):
            return parent, name.removeprefix("trial_")
    return None


def _refuse_errored(experiment: str, trial_id: str) -> None:
    from tuner.results.leaderboard import leaderboard

    for trial in leaderboard(experiment).trials:
        if trial.trial_id == trial_id and trial.status == "errored":
            reason = (trial.error or "no reason recorded").splitlines()[0][:160]
            raise UserError(
                f"trial {trial_id} of {experiment} errored ({reason}); its checkpoints are of "
                "a run that did not finish: export a finished trial, a promotion or the "
                "experiment (its best)"
            )


def resolve_model(url: str) -> tuple[ModelSet, dict]:
    """The model ``url`` stands for, and a description of how it was found
    (``{"given", "kind", "model", "experiment"}``; kind: checkpoint, final model, promotion,
    trial, experiment).

    Raises:
        UserError: nothing loadable there, an experiment with no checkpoint yet, or an
            errored trial.
    """
    from tuner.promote.result import FINAL, PROMOTION_FILE
    from tuner.results.leaderboard import leaderboard

    url = storage.normalize(url)
    kind, experiment = None, None
    if _is(url, EXPERIMENT_FILE):
        from tuner.promote.result import latest_promotion

        experiment, kind = url, "experiment"
        promoted = latest_promotion(url)
        if promoted is not None:
            model = promoted.final_model
        else:
            best = leaderboard(url).best
            if best is None:
                raise UserError(
                    f"{url}: no trial that did not error has a checkpoint yet; wait for a "
                    "trial's first epoch, or give a checkpoint"
                )
            model = best.checkpoint
    elif _is(url, PROMOTION_FILE):
        kind = "promotion"
        model = storage.join(url, FINAL)  # where promotion.json's final_model was written
        experiment = posixpath.dirname(posixpath.dirname(url))
    elif (trial := _trial_of(url)) is not None and not _is(url, "checkpoint.json"):
        experiment, trial_id = trial
        _refuse_errored(experiment, trial_id)
        kind = "trial"
        found = [t for t in leaderboard(experiment).trials if t.trial_id == trial_id]
        if not found or not found[0].checkpoint:
            raise UserError(f"trial {trial_id} of {experiment} has no checkpoint yet")
        model = found[0].checkpoint
    else:
        model = url
        if trial is not None:
            experiment = trial[0]
            _refuse_errored(*trial)
    models = open_model(model)
    if kind is None:
        kind = "final model" if _is(models.url, MODEL) else "checkpoint"
    if experiment is None:
        from tuner.results.ledger import experiment_of

        experiment = experiment_of(models.url)
    return models, {"given": url, "kind": kind, "model": models.url, "experiment": experiment}
