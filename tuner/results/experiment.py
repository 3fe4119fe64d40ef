"""An experiment as an object: a search's folder in storage, read without a cluster.

``Experiment.open(url)`` for any search's ``--storage`` location (a folder or a bucket URL);
:func:`tuner.search` returns one. Everything but :meth:`Experiment.resume` reads storage
alone, so it works from a laptop while the search runs on a cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tuner import storage
from tuner.errors import UserError
from tuner.results.leaderboard import (
    Leaderboard,
    Status,
    Trial,
    download_checkpoint,
    download_model,
    experiment_file,
    leaderboard,
    status,
)
from tuner.search.experiment import EXPERIMENT_FILE

__all__ = ["Experiment"]


class Experiment:
    """A search's experiment folder: ``search.json``, Tune's files, trials' checkpoints."""

    def __init__(self, url: str):
        self.url = storage.normalize(url)
        self._meta: dict | None = None

    @classmethod
    def open(cls, url: str | None = None) -> Experiment:
        """The experiment at ``url`` (a search's ``storage`` location).

        Raises:
            UserError: no URL, or no mammotune experiment there.
        """
        if url is None:
            raise UserError("Experiment.open needs url= (a search's storage location)")
        experiment = cls(url)
        experiment_file(experiment.url)
        return experiment

    def __repr__(self) -> str:
        return f"Experiment({self.url!r})"

    @property
    def meta(self) -> dict:
        """``search.json``: the space, the dataset, the study, the metric(s)."""
        if self._meta is None:
            self._meta = storage.read_json(storage.join(self.url, EXPERIMENT_FILE))
        return self._meta

    @property
    def data(self) -> str:
        """URL of the dataset the search trained on."""
        return self.meta["data"]

    @property
    def space(self):
        """The search space as it ran (a :class:`tuner.config.SearchSpace`)."""
        from tuner.config import SearchSpace

        return SearchSpace.model_validate(self.meta["space"])

    def status(self) -> Status:
        """Trials started of planned, finished, running, errored, failed attempts and the
        best so far."""
        return status(self.url)

    def leaderboard(self) -> Leaderboard:
        """Every trial with its best epoch, best first (Pareto front marked when the search
        has several metrics)."""
        return leaderboard(self.url)

    def best(self) -> Trial:
        """The best trial that has a checkpoint and did not error (``.checkpoint``,
        ``.config``, ``.metrics``, ``.trial_id``).

        Raises:
            UserError: no trial has a checkpoint yet.
        """
        best = self.leaderboard().best
        if best is None:
            raise UserError(
                f"{self.url}: no trial that did not error has a checkpoint yet; wait for a "
                "trial's first epoch"
            )
        return best

    def pareto(self) -> list[Trial]:
        """The trials on the Pareto front of a multi-objective search (empty otherwise)."""
        return self.leaderboard().pareto

    def checkpoints(self, top: int = 1) -> list[str]:
        """URLs of the ``top`` best trials' best checkpoints, best first.

        Raises:
            UserError: ``top`` < 1, or no trial has a checkpoint yet.
        """
        if top < 1:
            raise UserError(f"top {top}: take at least 1 checkpoint")
        ranked = [
            t.checkpoint
            for t in self.leaderboard().trials
            if t.checkpoint and t.status != "errored"
        ]
        if not ranked:
            raise UserError(
                f"{self.url}: no trial that did not error has a checkpoint yet; wait for a "
                "trial's first epoch"
            )
        return ranked[:top]

    def download(self, dest: str) -> str:
        """Copy the model to use into ``dest`` (a new or empty folder or URL); returns it:
        the newest promotion's final model when there is one, else the best checkpoint.

        Raises:
            UserError: no checkpoint yet, or ``dest`` already holds files (nothing is
                overwritten).
        """
        promoted = self.promotion()
        if promoted is not None:
            return download_model(promoted.final_model, dest)
        return download_checkpoint(self.best().checkpoint, dest)

    def report(self, out: str | None = None, *, study: str | None = None):
        """Write this experiment's HTML report and model card (see :func:`tuner.report`);
        returns the :class:`tuner.Report`."""
        from tuner.results.report import search_report

        return search_report(self.url, out, study=study)

    def promotion(self, promotion_id: str | None = None):
        """A finished promotion (:class:`tuner.Promotion`): ``promotion_id``, or the newest;
        None when there is none."""
        from tuner.promote.result import latest_promotion, read_promotion

        if promotion_id is None:
            return latest_promotion(self.url)
        return read_promotion(self.url, promotion_id)

    def promote(
        self,
        *,
        data: str | None = None,
        top: int = 3,
        folds: int = 5,
        seeds: int = 2,
        final: str = "folds",
        tta: bool = False,
        target_recall: float = 0.9,
        overrides: dict | None = None,
        promotion_id: str | None = None,
        seed: int = 0,
        resamples: int = 1000,
        max_failures: int = 1,
        resume: bool = False,
        address: str | None = None,
        allow_mixed_editions: bool = False,
        console=None,
        log: Callable[[str], None] | None = None,
    ):
        """Promote the search's ``top`` best configurations to one model
        (``mammotune promote``); returns the :class:`tuner.Promotion`.

        Each candidate is cross-validated on train+val in ``folds`` patient-grouped,
        label-stratified folds with ``seeds`` seeds, every (candidate, fold, seed) a trial
        of one Ray Tune run under ``promotions/<id>/``. Candidates are ranked by the lower
        bound of their out-of-fold (OOF) AUC's patient-bootstrap interval. The final model
        is the winner's fold models averaged (``final="folds"``) or a refit on all of
        train+val for the median best epoch of its folds (``"refit"``), optionally with flip
        TTA; its threshold (reaching ``target_recall``) and temperature come from OOF
        predictions only. The test split is then evaluated once, and the look recorded in
        ``test_ledger.json``.

        Args:
            data: the prepared dataset (default: the search's).
            overrides: trial settings for every candidate, e.g. ``{"epochs": 2}``.
            promotion_id: its name (default p1, p2, ...).
            seed: seeds the folds and the bootstrap; trials train with seed, seed+1000, ...
            resume: go on with the interrupted promotion ``promotion_id`` (default: the
                newest unfinished one); the other settings are its own.
            address: a Ray cluster (default: RAY_ADDRESS, else a local Ray).
            allow_mixed_editions: promote on ``data`` from the other edition of the
                search's collection (the CBIS-DDSM DICOM or JPEG edition).

        Raises:
            UserError: fewer finished trials than ``top``, more folds than the rarest
                class's patients, a dataset without train+val, a promotion id that exists,
                ``data`` from another edition than the search's (without
                ``allow_mixed_editions``); nothing is written.
        """
        import os

        from tuner.cluster import check_gpus, connect
        from tuner.promote.result import Promotion
        from tuner.promote.runner import plan_promotion, resume_promotion, run_promotion

        emit = log or logging.getLogger("tuner").info
        address = address or os.environ.get("RAY_ADDRESS") or None
        if resume:
            connect(address)
            check_gpus(self.space.resources.gpu, address)
            found = resume_promotion(self.url, promotion_id, console=console, log=emit)
        else:
            plan = plan_promotion(
                self.url,
                data=data,
                top=top,
                folds=folds,
                seeds=seeds,
                final=final,
                tta=tta,
                target_recall=target_recall,
                overrides=overrides,
                promotion_id=promotion_id,
                seed=seed,
                resamples=resamples,
                allow_mixed_editions=allow_mixed_editions,
            )
            dashboard = connect(address)
            check_gpus(plan["resources"]["gpu"], address)
            if dashboard:
                emit(f"Ray dashboard: {dashboard}")
            found = run_promotion(plan, console=console, max_failures=max_failures, log=emit)
        from tuner.promote.result import PROMOTIONS

        return Promotion.from_json(storage.join(self.url, PROMOTIONS, found["id"]), found)

    def resume(
        self,
        *,
        address: str | None = None,
        study: str | None = None,
        log: Callable[[str], None] | None = None,
    ) -> Experiment:
        """Continue the search where its driver stopped (Ctrl-C, or killed outright), with
        the same Optuna study, on a local Ray or the cluster at ``address``.

        A bucket experiment's default study comes from the copy in the bucket, so a new
        cluster can resume it; ``study`` gives the storage URL again where ``search.json``
        cannot (it records no password).

        Finished trials are kept, unfinished ones resume from their last checkpoint, and
        the search runs on to its trial count. Tune reads its own pickled state to resume:
        resume only experiments you trust.

        Raises:
            UserError: nothing to resume here, its study not found, or a cluster that
                cannot run it.
        """
        from tuner.cluster import check_gpus, connect
        from tuner.search.runner import check_resumable, resume_search
        from tuner.search.study import prepare_resume

        emit = log or logging.getLogger("tuner").info
        meta = check_resumable(self.url)  # before starting or joining a cluster
        study = prepare_resume(meta, self.url, study)
        dashboard = connect(address)
        check_gpus(meta["space"]["resources"]["gpu"], address)
        emit(f"resuming the search at {self.url}")
        if dashboard:
            emit(f"Ray dashboard: {dashboard}")
        resume_search(self.url, study)
        return self
