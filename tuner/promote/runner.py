"""Promotion: from a search's K best configurations to one model, chosen by cross-validation
by patient, with its operating threshold and calibration fixed on out-of-fold (OOF)
predictions before the test split is looked at, once.

Every (candidate, fold, seed) is a trial of one Ray Tune run (FIFO, no early stopping, the
search's resources per trial) under ``EXP/promotions/<id>/cv``; each trial trains on
train+val without its fold's patients and writes its predictions on that fold
(``heldout.json``) with its last checkpoint. The driver then ranks the candidates, builds the
final model (the winner's fold models, or a refit on all of train+val), fits the threshold
and temperature on the winner's OOF predictions, and evaluates on test through the door that
records the look. ``promotion.json`` holds it all.
"""

from __future__ import annotations

import json
import logging
import math
import posixpath
import statistics
import time
import uuid
from collections import Counter
from typing import Any

import numpy as np

import tuner
from tuner import storage
from tuner.data.sources import mixed_editions
from tuner.data.stream import load_manifest, split_entry
from tuner.data.tasks import get_task
from tuner.errors import UserError
from tuner.promote import stats
from tuner.promote.folds import TRAIN_VAL, fold_assignment
from tuner.promote.result import (
    FINAL,
    OOF_PREDICTIONS,
    PLAN_FILE,
    PROMOTION_FILE,
    PROMOTIONS,
    TEST_PREDICTIONS,
    promotions,
)
from tuner.search.experiment import trial_checkpoints, trial_results, trial_states
from tuner.training.config import SEARCHABLE, TrialConfig

__all__ = ["FINALS", "plan_promotion", "run_promotion", "resume_promotion", "promotion_trial"]

logger = logging.getLogger("tuner")

FOLDS_FILE = "folds.json"
CV, REFIT = "cv", "refit"
FINALS = ("folds", "refit")
PROMOTION_FORMAT = "mammotune-promotion/1"


# ---------------------------------------------------------------------------- planning
def _candidates(experiment: str, top: int) -> tuple[list[dict], Any]:
    from tuner.results.leaderboard import leaderboard

    board = leaderboard(experiment)
    finished = [t for t in board.trials if t.status in ("done", "stopped") and t.value is not None]
    if top < 1:
        raise UserError(f"top {top}: promote at least 1 candidate (--top)")
    if len(finished) < top:
        raise UserError(
            f"{experiment} has {len(finished)} finished trial(s) with a {board.metric}, fewer "
            f"than --top {top}; promote --top {max(1, len(finished))} or let the search finish"
        )
    chosen = [
        {
            "index": i,
            "trial_id": t.trial_id,
            "value": t.value,
            "config": _trial_config(experiment, t.trial_id),
        }
        for i, t in enumerate(finished[:top])
    ]
    return chosen, board


def _trial_config(experiment: str, trial_id: str) -> dict:
    """A search trial's whole config (Tune's ``params.json``: searched and fixed settings,
    and the runner's: view, task, weights), without its seed and data, which the promotion
    sets."""
    params = storage.read_json(storage.join(experiment, f"trial_{trial_id}", "params.json"))
    return {k: v for k, v in params.items() if k not in ("seed", "data")}


def _checked_overrides(overrides: dict | None, candidates: list[dict]) -> dict:
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(SEARCHABLE))
    if unknown:
        raise UserError(
            f"--set {unknown[0]}: not a trial setting; use one of {', '.join(SEARCHABLE)}"
        )
    from pydantic import ValidationError

    for candidate in candidates:
        try:
            TrialConfig.model_validate({**candidate["config"], **overrides})
        except ValidationError as error:
            first = error.errors()[0]
            # A rule across settings (fusion two_view needs whole images) has no one key.
            where = ".".join(str(p) for p in first["loc"]) or ", ".join(sorted(overrides))
            message = first["msg"].removeprefix("Value error, ")
            raise UserError(f"--set {where}: {message}") from None
    return overrides


def _next_id(experiment: str) -> str:
    taken = set(promotions(experiment))
    fs, path = storage.filesystem(storage.join(experiment, PROMOTIONS))
    if fs.exists(path):
        taken |= {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)}
    n = 1
    while f"p{n}" in taken:
        n += 1
    return f"p{n}"


def plan_promotion(
    experiment: str,
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
    allow_mixed_editions: bool = False,
) -> dict:
    """Check everything a promotion needs and plan it; nothing is written.

    Returns:
        The plan (``plan.json``), with the fold assignment under ``"_folds"``.

    Raises:
        UserError: fewer finished trials than ``top``, more folds than the rarest class's
            patients, a dataset without train+val for a candidate, a promotion id that
            exists, a dataset from another edition than the search's (unless
            ``allow_mixed_editions``), or a bad setting.
    """
    from tuner.results.leaderboard import experiment_file

    experiment = storage.normalize(experiment)
    meta = storage.read_json(experiment_file(experiment))
    if seeds < 1:
        raise UserError(f"seeds {seeds}: train each fold with at least 1 seed (--seeds)")
    if final not in FINALS:
        raise UserError(f"final {final!r}: choose folds or refit (--final)")
    if not 0 < target_recall <= 1:
        raise UserError(f"target recall {target_recall} must be in (0, 1] (--target-recall)")
    if resamples < 100:
        raise UserError(f"resamples {resamples}: take at least 100 bootstrap resamples")
    if promotion_id is not None:
        if not promotion_id or "/" in promotion_id or promotion_id.startswith("."):
            raise UserError(f"promotion id {promotion_id!r}: give a plain name such as p2 (--id)")
        url = storage.join(experiment, PROMOTIONS, promotion_id)
        fs, path = storage.filesystem(url)
        if fs.exists(path):
            raise UserError(
                f"promotion {promotion_id} exists at {url}; choose another --id, or resume it "
                f"(promote {experiment} --resume --id {promotion_id})"
            )
    candidates, board = _candidates(experiment, top)
    overrides = _checked_overrides(overrides, candidates)
    data = storage.normalize(data or meta["data"])
    manifest = load_manifest(data)
    if data != storage.normalize(meta["data"]) and not allow_mixed_editions:
        # Configurations chosen on one edition's pixels, trained and tested on the other's.
        searched = load_manifest(meta["data"])
        mixed = mixed_editions(searched.get("source"), manifest.get("source"))
        if mixed:
            raise UserError(
                f"{data}: the search ran on {mixed[0]} and this dataset is from {mixed[1]}; "
                "promote on a dataset of the search's edition, or pass "
                "--allow-mixed-editions (allow_mixed_editions=True)"
            )
    space = meta["space"]
    task = get_task(space["task"])
    kinds = []
    for candidate in candidates:
        cfg = TrialConfig.model_validate({**candidate["config"], **overrides})
        kind = (cfg.view, cfg.input_size, cfg.enhance)
        for split in TRAIN_VAL:
            try:
                split_entry(manifest, kind[0], kind[1], split, kind[2])
            except UserError as error:
                raise UserError(
                    f"{data} cannot cross-validate candidate trial {candidate['trial_id']}: "
                    f"{error}; promote with --data a dataset that has train and val"
                ) from None
        if kind not in kinds:
            kinds.append(kind)
    _check_test_is_unseen(meta, data, manifest, task, kinds[0])
    folds_content = fold_assignment(data, manifest, task, kinds, folds=folds, seed=seed)
    promotion_id = promotion_id or _next_id(experiment)
    url = storage.join(experiment, PROMOTIONS, promotion_id)
    storage.check_writable(experiment)
    resources = space.get("resources", {})
    return {
        "format": PROMOTION_FORMAT,
        "id": promotion_id,
        "url": url,
        "experiment": experiment,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "key": uuid.uuid4().hex,  # names this promotion's test look in the ledger
        "mammotune_version": tuner.__version__,
        "data": data,
        "dataset_id": manifest["id"],
        "has_test": _has_test(manifest, kinds),
        "task": task.name,
        "classes": list(task.classes),
        "metric": board.metric,
        "mode": board.mode,
        "top": top,
        "folds": folds,
        "seeds": [seed + 1000 * s for s in range(seeds)],
        "seed": seed,
        "final": final,
        "tta": tta,
        "target_recall": target_recall,
        "resamples": resamples,
        "overrides": overrides,
        "resources": {"cpu": resources.get("cpu", 1), "gpu": resources.get("gpu", 0)},
        "max_concurrent": space.get("max_concurrent", 2),
        "candidates": candidates,
        "_folds": folds_content,
    }


def _patients(data: str, manifest: dict, task, kind, splits) -> set[str]:
    from tuner.data.stream import TileStream

    view, size, enhance = kind
    stream = TileStream(
        data, manifest, view=view, size=size, enhance=enhance, split=splits, task=task
    )
    return {r["patient_id"] for r in stream.context(["patient_id"])}


def _check_test_is_unseen(meta: dict, data: str, manifest: dict, task, kind) -> None:
    """Another dataset than the search's (``--data``) must not hold in its test split
    patients the search trained or selected on: the one look would not be a fresh one."""
    if data == storage.normalize(meta["data"]) or manifest["id"] == meta.get("dataset_id"):
        return
    if not _has_test(manifest, [kind]):
        return
    try:
        searched = load_manifest(meta["data"])
        seen = _patients(meta["data"], searched, task, kind, TRAIN_VAL)
    except UserError:
        raise UserError(
            f"cannot check that the test patients of {data} are new to the search: its dataset "
            f"{meta['data']} is gone; promote on the search's dataset (no --data)"
        ) from None
    overlap = seen & _patients(data, manifest, task, kind, "test")
    if overlap:
        raise UserError(
            f"{len(overlap)} test patients of {data} were in the search's train+val "
            f"({meta['data']}); promote on a dataset whose test patients the search never saw"
        )


def _has_test(manifest: dict, kinds) -> bool:
    try:
        for view, size, enhance in kinds:
            split_entry(manifest, view, size, "test", enhance)
    except UserError:
        return False
    return True


# ---------------------------------------------------------------------------- the trial
def promotion_trial(config: dict) -> None:
    """Ray Tune function trainable: one (candidate, fold, seed) of a promotion; fold -1 is
    a refit on all of train+val."""
    from tuner.training.trainable import train_trial

    plan = storage.read_json(config["plan"])
    candidate = plan["candidates"][config["candidate"]]
    settings = {
        **candidate["config"],
        **plan["overrides"],
        "data": plan["data"],
        "seed": config["seed"],
        "patience": 0,  # no early stopping: every fold model trains its configured epochs
        "folds": storage.join(plan["url"], FOLDS_FILE),
        "fold": None if config["fold"] < 0 else config["fold"],
    }
    if config.get("epochs"):
        settings["epochs"] = config["epochs"]
    train_trial(settings)


def _tune_run(plan: dict, name: str, param_space: dict, *, console, max_failures: int):
    """Run (or resume, when its folder holds a snapshot) one Tune run of the promotion."""
    from ray import tune

    from tuner.search.callbacks import CheckpointRetention, TrialTable
    from tuner.search.runner import _trial_dirname, _tune_environment

    _tune_environment()
    metric = plan["metric"] if plan["metric"].startswith("val_") else "val_roc_auc"
    trainable = tune.with_resources(promotion_trial, plan["resources"])
    run_url = storage.join(plan["url"], name)
    filesystem, run_path = storage.pyarrow_filesystem(run_url)
    if tune.Tuner.can_restore(run_path, storage_filesystem=filesystem):
        tuner_ = tune.Tuner.restore(
            run_path,
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=filesystem,
        )
    else:
        callbacks = [CheckpointRetention(run_url, metric, plan["mode"], keep=0)]
        if console is not None:
            label = f"promotion {plan['id']} ({name})"
            callbacks.append(
                TrialTable(console, label, metric, "max", ["candidate", "fold", "seed"])
            )
        _, parent = storage.pyarrow_filesystem(plan["url"])
        tuner_ = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                max_concurrent_trials=plan["max_concurrent"],
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=parent,
                storage_filesystem=filesystem,
                failure_config=tune.FailureConfig(max_failures=plan["max_failures"]),
                callbacks=callbacks,
                verbose=0 if console is not None else 1,
            ),
        )
    tuner_.fit()
    from tuner.search.retention import prune_checkpoints

    prune_checkpoints(run_url, metric=metric, mode="max", keep=0)


def _cv_space(plan: dict) -> dict:
    from ray import tune

    return {
        "plan": storage.join(plan["url"], PLAN_FILE),
        "candidate": tune.grid_search([c["index"] for c in plan["candidates"]]),
        "fold": tune.grid_search(list(range(plan["folds"]))),
        "seed": tune.grid_search(plan["seeds"]),
    }


def run_promotion(plan: dict, *, console=None, max_failures: int = 1, log=None) -> dict:
    """Run a planned promotion on the connected Ray cluster; returns ``promotion.json``."""
    emit = log or logger.info
    folds_content = plan.pop("_folds")
    plan["max_failures"] = max_failures
    storage.write_json(storage.join(plan["url"], FOLDS_FILE), folds_content)
    storage.write_json(storage.join(plan["url"], PLAN_FILE), plan)
    cells = len(plan["candidates"]) * plan["folds"] * len(plan["seeds"])
    emit(
        f"promotion {plan['id']}: {len(plan['candidates'])} candidates x {plan['folds']} "
        f"folds x {len(plan['seeds'])} seeds = {cells} trials, under {plan['url']}"
    )
    _tune_run(plan, CV, _cv_space(plan), console=console, max_failures=max_failures)
    return _conclude(plan, console=console, emit=emit)


def resume_promotion(
    experiment: str, promotion_id: str | None = None, *, console=None, log=None
) -> dict:
    """Go on with an interrupted promotion (its driver stopped or was killed): unfinished
    trials resume from their last checkpoint, finished ones are kept; then the ranking, the
    final model and the test look (never a second one) follow.

    Raises:
        UserError: no such promotion, or it is complete.
    """
    emit = log or logger.info
    experiment = storage.normalize(experiment)
    ids = promotions(experiment)
    if promotion_id is None:
        unfinished = [
            i
            for i in ids
            if not storage.exists(storage.join(experiment, PROMOTIONS, i, PROMOTION_FILE))
        ]
        if not unfinished:
            raise UserError(f"{experiment} has no unfinished promotion to resume")
        promotion_id = unfinished[-1]
    elif promotion_id not in ids:
        listed = ", ".join(ids) or "none"
        raise UserError(f"{experiment} has no promotion {promotion_id!r} (it has: {listed})")
    url = storage.join(experiment, PROMOTIONS, promotion_id)
    if storage.exists(storage.join(url, PROMOTION_FILE)):
        raise UserError(f"promotion {promotion_id} is complete ({url}/{PROMOTION_FILE})")
    plan = storage.read_json(storage.join(url, PLAN_FILE))
    emit(f"resuming promotion {promotion_id} at {url}")
    if _looked(plan):
        # Killed after its test look: the trials that chose the looked-at model stay as they
        # are (an errored trial run again could change the winner after the look).
        emit("its test look is recorded: finishing promotion.json from it")
    else:
        _tune_run(plan, CV, _cv_space(plan), console=console, max_failures=plan["max_failures"])
    return _conclude(plan, console=console, emit=emit)


# ---------------------------------------------------------------------------- the results
def _cells(plan: dict, name: str) -> list[dict]:
    """Each trial of a promotion run: its cell (candidate, fold, seed), state, last
    checkpoint, held-out predictions, best epoch and compute."""
    fs, path = storage.filesystem(storage.join(plan["url"], name))
    states = trial_states(fs, path)
    cells = []
    for folder in sorted(fs.glob(f"{path}/trial_*")):
        trial_id = folder.rsplit("/", 1)[-1].removeprefix("trial_")
        params = f"{folder}/params.json"
        if trial_id not in states or not fs.exists(params):
            continue  # a folder of a run that never got to Tune's first snapshot

        config = json.loads(fs.cat_file(params))
        rows = trial_results(fs, folder)
        checkpoints = trial_checkpoints(fs, folder)
        last = checkpoints[-1][0] if checkpoints else None
        heldout = f"{last}/heldout.json" if last else None
        cells.append(
            {
                "trial_id": trial_id,
                "candidate": config["candidate"],
                "fold": config["fold"],
                "seed": config["seed"],
                "state": states.get(trial_id, ("UNKNOWN", 0))[0],
                "epochs": len(rows),
                "checkpoint": storage.join(plan["url"], name, posixpath.relpath(last, path))
                if last
                else None,
                "heldout": json.loads(fs.cat_file(heldout))
                if heldout and fs.exists(heldout)
                else None,
                "best_epoch": _best_epoch(rows, plan),
                "seconds": float(rows[-1].get("time_total_s", 0.0)) if rows else 0.0,
                "fold_metrics": {
                    k: v for k, v in (rows[-1] if rows else {}).items() if k.startswith("val_")
                },
            }
        )
    return cells


def _best_epoch(rows: list[dict], plan: dict) -> int | None:
    metric = plan["metric"] if plan["metric"].startswith("val_") else "val_loss"
    mode = plan["mode"] if metric == plan["metric"] else "min"
    scored = [r for r in rows if isinstance(r.get(metric), int | float)]
    scored = [r for r in scored if not math.isnan(r[metric])]
    if not scored:
        return None
    pick = max if mode == "max" else min
    return int(pick(scored, key=lambda r: r[metric])["epoch"])


def _key(row: dict) -> tuple:
    """One OOF row per lesion, and per tissue tile. A lesion of a train-split patient was
    prepared as several jittered crops (``train_variants``), of a val patient as one centred
    crop; its crops' predictions are averaged into one row, so that every lesion weighs the
    same in the OOF estimate, the threshold and the calibration. Tissue variants are
    distinct places, in every split."""
    variant = 0 if row["lesion"] == "lesion" else row["variant"]
    return (row["image_id"], row["abnormality_id"], row["lesion"], variant)


def _per_lesion(rows: list[dict], probabilities: np.ndarray) -> tuple[list[dict], np.ndarray]:
    """Rows merged by :func:`_key` (probabilities averaged), sorted by key."""
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(_key(row), []).append(i)
    keys = sorted(groups)
    merged = [{**rows[groups[k][0]], "crops": len(groups[k])} for k in keys]
    averaged = np.array([probabilities[groups[k]].mean(axis=0) for k in keys])
    return merged, averaged


def _oof(plan: dict, cells: list[dict], candidate: int, seed: int) -> dict | None:
    """One candidate's out-of-fold predictions for one seed, rows in a fixed order (by key),
    or None when a fold is missing."""
    parts = [c for c in cells if c["candidate"] == candidate and c["seed"] == seed]
    done = {c["fold"]: c for c in parts if c["heldout"] is not None and c["state"] == "TERMINATED"}
    if len(done) < plan["folds"]:
        return None
    rows, probabilities = [], []
    column = "probabilities_tta" if plan["tta"] else "probabilities"
    for fold in range(plan["folds"]):
        rows += done[fold]["heldout"]["rows"]
        probabilities += done[fold]["heldout"][column]
    rows, merged = _per_lesion(rows, np.array(probabilities, dtype=float))
    return {
        "rows": rows,
        "labels": np.array([r["label"] for r in rows], dtype=int),
        "probabilities": merged,
    }


def _expected_rows(plan: dict, candidate: dict) -> int:
    """The train+val rows of the candidate's tile kind that the task labels."""
    from tuner.data.stream import TileStream

    cfg = TrialConfig.model_validate({**candidate["config"], **plan["overrides"]})
    manifest = load_manifest(plan["data"])
    stream = TileStream(
        plan["data"],
        manifest,
        view=cfg.view,
        size=cfg.input_size,
        enhance=cfg.enhance,
        split=TRAIN_VAL,
        task=get_task(plan["task"]),
    )
    columns = ["image_id", "abnormality_id", "lesion", "variant"]
    return len({_key(r) for r in stream.context(columns)})


def _rank(plan: dict, cells: list[dict]) -> tuple[list[dict], dict]:
    """Per candidate: OOF AUC per seed, mean and spread over seeds, the patient-bootstrap
    interval of the seed-mean, and the coverage check; ranked by the interval's lower bound.
    Returns (ranking, the OOF predictions by candidate and seed)."""
    expected = len(plan["candidates"]) * plan["folds"] * len(plan["seeds"])
    unfinished = [c for c in cells if c["state"] != "TERMINATED" or c["heldout"] is None]
    if unfinished or len(cells) < expected:
        named = ", ".join(
            f"trial {c['trial_id']} (candidate {c['candidate']}, fold {c['fold']}, seed "
            f"{c['seed']}: {c['state'].lower()})"
            for c in unfinished[:3]
        )
        raise UserError(
            f"promotion {plan['id']}: {len(unfinished) or expected - len(cells)} of {expected} "
            f"trials did not finish ({named or 'not started'}); nothing was looked at on test: "
            f"fix the cause (see {plan['url']}/{CV}) and run promote --resume --id {plan['id']}"
        )
    ranking, oofs = [], {}
    for candidate in plan["candidates"]:
        index = candidate["index"]
        per_seed = {s: _oof(plan, cells, index, s) for s in plan["seeds"]}
        entry = {
            "candidate": index,
            "trial_id": candidate["trial_id"],
            "search_value": candidate["value"],
            "config": candidate["config"],
        }
        if any(o is None for o in per_seed.values()):
            missing = [
                (c["fold"], c["seed"])
                for c in cells
                if c["candidate"] == index and (c["heldout"] is None or c["state"] != "TERMINATED")
            ]
            entry.update(complete=False, missing_folds_seeds=missing)
            ranking.append(entry)
            continue
        oofs[index] = per_seed
        first = per_seed[plan["seeds"][0]]
        keys = [_key(r) for r in first["rows"]]
        expected = _expected_rows(plan, candidate)
        covered = len(keys) == len(set(keys)) == expected and all(
            [_key(r) for r in o["rows"]] == keys for o in per_seed.values()
        )
        if not covered:
            raise RuntimeError(
                f"candidate {index}: out-of-fold rows do not cover train+val once "
                f"({len(keys)} rows, {len(set(keys))} distinct, {expected} expected)"
            )
        aucs = [stats.auc(o["labels"], o["probabilities"]) for o in per_seed.values()]
        groups = stats.patient_groups([r["patient_id"] for r in first["rows"]])
        labels = first["labels"]

        def seed_mean(rows, per_seed=per_seed, labels=labels):
            return float(
                np.mean(
                    [stats.auc(labels[rows], o["probabilities"][rows]) for o in per_seed.values()]
                )
            )

        low, high = stats.patient_bootstrap(
            seed_mean, groups, resamples=plan["resamples"], seed=plan["seed"]
        )
        entry.update(
            complete=True,
            oof_rows=len(keys),
            oof_patients=len(groups),
            oof_covers_train_val_once=covered,
            oof_auc_by_seed=dict(zip(map(str, plan["seeds"]), aucs, strict=True)),
            oof_auc_mean=float(np.mean(aucs)),
            oof_auc_sd=float(np.std(aucs, ddof=1)) if len(aucs) > 1 else 0.0,
            oof_auc_95=[low, high],
        )
        ranking.append(entry)
    complete = [e for e in ranking if e["complete"]]
    if not complete:
        raise UserError(
            f"promotion {plan['id']}: no candidate finished all its folds and seeds; see the "
            f"errored trials under {plan['url']}/{CV} and resume (promote --resume)"
        )
    wins = Counter()
    for seed in plan["seeds"]:
        scores = {e["candidate"]: e["oof_auc_by_seed"][str(seed)] for e in complete}
        wins[max(scores, key=lambda c: (scores[c], -c))] += 1
    for entry in ranking:
        entry["wins_across_seeds"] = wins.get(entry["candidate"], 0) if entry["complete"] else 0

    def order(e):
        low = (e.get("oof_auc_95") or [None])[0]
        mean = e.get("oof_auc_mean")
        low = -1.0 if low is None or math.isnan(low) else low  # undefined: last
        mean = -1.0 if mean is None or math.isnan(mean) else mean
        return (not e["complete"], -low, -mean, e["candidate"])

    ranking.sort(key=order)
    for rank, entry in enumerate(ranking, 1):
        entry["rank"] = rank
    return ranking, oofs


def _calibration(plan: dict, oof: dict) -> dict:
    """Temperature, ECE and Brier before and after, the threshold for the target recall
    (two classes) and the OOF metrics there, all from OOF predictions only."""
    from tuner.results.evaluate import threshold_table
    from tuner.training.checkpoint import temper
    from tuner.training.metrics import binary_metrics

    labels, raw = oof["labels"], oof["probabilities"]
    temperature = stats.fit_temperature(labels, raw)
    calibrated = temper(raw, temperature)
    result = {
        "temperature": temperature,
        "ece_before": stats.ece(labels, raw),
        "ece_after": stats.ece(labels, calibrated),
        "brier_before": stats.brier(labels, raw),
        "brier_after": stats.brier(labels, calibrated),
        "threshold": None,
    }
    if calibrated.shape[1] == 2:
        _, target = threshold_table(labels, calibrated[:, 1], target_recall=plan["target_recall"])
        result["threshold"] = target["threshold"]
        result["oof_at_threshold"] = binary_metrics(labels, calibrated[:, 1], target["threshold"])
    return result, calibrated


def _final_model(plan: dict, winner: dict, cells: list[dict], calibration: dict, *, console, emit):
    """Write ``final/``: the winner's fold models (first seed) or a refit, and model.json."""
    from tuner.results.leaderboard import download_checkpoint

    index, seed = winner["candidate"], plan["seeds"][0]
    final_url = storage.join(plan["url"], FINAL)
    if _looked(plan) and storage.exists(storage.join(final_url, "model.json")):
        return final_url, storage.read_json(storage.join(final_url, "model.json"))["refit_epochs"]
    if plan["final"] == "folds":
        members = {
            f"fold_{c['fold']}": c["checkpoint"]
            for c in cells
            if c["candidate"] == index and c["seed"] == seed
        }
        refit_epochs = None
    else:
        folds = [c["best_epoch"] for c in cells if c["candidate"] == index and c["best_epoch"]]
        if folds:
            refit_epochs = int(round(statistics.median(folds)))
        else:  # no fold reported the metric: the candidate's own epochs
            refit_epochs = TrialConfig.model_validate(
                {**winner["config"], **plan["overrides"]}
            ).epochs
        emit(f"refit of candidate {index} on all of train+val for {refit_epochs} epochs")
        space = {
            "plan": storage.join(plan["url"], PLAN_FILE),
            "candidate": index,
            "fold": -1,
            "seed": seed,
            "epochs": refit_epochs,
        }
        _tune_run(plan, REFIT, space, console=console, max_failures=plan["max_failures"])
        refit = [c for c in _cells(plan, REFIT) if c["state"] == "TERMINATED" and c["checkpoint"]]
        if not refit:
            raise UserError(
                f"promotion {plan['id']}: the refit trial did not finish; see "
                f"{plan['url']}/{REFIT} and resume (promote --resume)"
            )
        members = {"refit": refit[0]["checkpoint"]}
    for name, checkpoint in sorted(members.items()):
        dest = storage.join(final_url, name)
        fs, path = storage.filesystem(dest)
        if fs.exists(path):
            fs.rm(path, recursive=True)  # a copy a killed driver left half written
        download_checkpoint(checkpoint, dest)
    model = {
        "format": "mammotune-model/1",
        "members": sorted(members),
        "tta": plan["tta"],
        "temperature": calibration["temperature"],
        "threshold": calibration["threshold"],
        "target_recall": plan["target_recall"],
        "task": plan["task"],
        "classes": plan["classes"],
        "experiment": plan["experiment"],
        "promotion": plan["id"],
        "candidate": {"index": index, "trial_id": winner["trial_id"], "config": winner["config"]},
        "final": plan["final"],
        "refit_epochs": refit_epochs,
        "sources": members,
    }
    storage.write_json(storage.join(final_url, "model.json"), model)
    return final_url, refit_epochs


def _test_look(plan: dict, final_url: str) -> dict | None:
    """The one look at test: the final model through evaluate's door, which records it with
    this promotion's key and its report in one write. A look this promotion already recorded
    for this final model (a driver killed after it) is reused, not taken again."""
    from tuner.results.evaluate import evaluate, json_safe
    from tuner.results.ledger import read_ledger

    for look in read_ledger(plan["experiment"]):
        if look.get("key") == plan["key"] and look.get("models") == [final_url]:
            return {**look["report"], "test_look": _look_record(plan, look)}
    if not plan["has_test"]:
        return None

    def keep(report: dict) -> dict:
        images = report["_predictions"]["per_image"]
        plain = json_safe({k: v for k, v in report.items() if not k.startswith("_")})
        for level in ("per_image", "per_breast"):
            # A threshold chosen on test is not for use: the operating one is OOF's.
            for name in ("thresholds", "target_recall"):
                plain.get(level, {}).pop(name, None)
        plain["subgroups"] = json_safe(
            stats.subgroup_table(
                images.rows,
                images.labels,
                images.probabilities,
                threshold=report["threshold"],
                resamples=plan["resamples"],
                seed=plan["seed"],
            )
        )
        return plain

    report = evaluate(
        final_url,
        plan["data"],
        split="test",
        target_recall=plan["target_recall"],
        resamples=plan["resamples"],
        what=f"promote {plan['id']}",
        key=plan["key"],
        keep=keep,
    )
    # The look's per-image scores, for the report's curves (not in the ledger, which every
    # evaluate reads): written right after the look; a driver killed in between leaves the
    # report without test curves, never a second look.
    images = report["_predictions"]["per_image"]
    _write_predictions(
        storage.join(plan["url"], TEST_PREDICTIONS), images.labels, images.probabilities
    )
    for look in read_ledger(plan["experiment"]):
        if look.get("key") == plan["key"] and look.get("models") == [final_url]:
            return {**look["report"], "test_look": report["test_look"]}
    raise RuntimeError("the test look was not recorded")  # the model lies in the experiment


def _write_predictions(url: str, labels, probabilities) -> None:
    storage.write_json(
        url,
        {
            "labels": np.asarray(labels).tolist(),
            "probabilities": np.round(np.asarray(probabilities), 6).tolist(),
        },
    )


def _look_record(plan: dict, look: dict) -> dict:
    from tuner.results.ledger import LEDGER

    ledger = storage.join(plan["experiment"], LEDGER)
    return {"ledger": ledger, "look": look["look"], "looks_before": look["look"] - 1}


def _looked(plan: dict) -> bool:
    from tuner.results.ledger import read_ledger

    return any(look.get("key") == plan["key"] for look in read_ledger(plan["experiment"]))


def _compute(plan: dict, cells: list[dict], refit_cells: list[dict]) -> dict:
    """Trial seconds of the promotion and of the search, and their ratio."""
    fs, path = storage.filesystem(plan["experiment"])
    search = 0.0
    for folder in fs.glob(f"{path}/trial_*"):
        rows = trial_results(fs, folder)
        if rows:
            search += float(rows[-1].get("time_total_s", 0.0))
    promotion = sum(c["seconds"] for c in cells) + sum(c["seconds"] for c in refit_cells)
    return {
        "promotion_trial_seconds": promotion,
        "search_trial_seconds": search,
        "ratio_to_search": promotion / search if search else None,
        "trials": len(cells) + len(refit_cells),
    }


def _conclude(plan: dict, *, console, emit) -> dict:
    from tuner.results.evaluate import json_safe

    cells = _cells(plan, CV)
    ranking, oofs = _rank(plan, cells)
    winner = ranking[0]
    emit(
        f"winner: candidate {winner['candidate']} (search trial {winner['trial_id']}), OOF AUC "
        f"{winner['oof_auc_mean']:.3f} [{winner['oof_auc_95'][0]:.3f}, "
        f"{winner['oof_auc_95'][1]:.3f}]"
    )
    oof = oofs[winner["candidate"]][plan["seeds"][0]]
    calibration, calibrated = _calibration(plan, oof)
    threshold = calibration["threshold"]
    oof_subgroups = stats.subgroup_table(
        oof["rows"],
        oof["labels"],
        calibrated,
        threshold=threshold,
        resamples=plan["resamples"],
        seed=plan["seed"],
    )
    # The winner's calibrated OOF scores (first seed): the report's curves and its
    # threshold table come from these, never from test.
    _write_predictions(storage.join(plan["url"], OOF_PREDICTIONS), oof["labels"], calibrated)
    final_url, refit_epochs = _final_model(
        plan, winner, cells, calibration, console=console, emit=emit
    )
    folds_content = storage.read_json(storage.join(plan["url"], FOLDS_FILE))
    promotion = {
        "format": PROMOTION_FORMAT,
        "id": plan["id"],
        "experiment": plan["experiment"],
        "plan": {k: v for k, v in plan.items() if k not in ("candidates", "format")},
        "candidates": plan["candidates"],
        "folds": {k: v for k, v in folds_content.items() if k != "patients"},
        "cells": [
            {k: v for k, v in c.items() if k != "heldout"}
            for c in sorted(cells, key=lambda c: (c["candidate"], c["fold"], c["seed"]))
        ],
        "ranking": ranking,
        "winner": {
            "candidate": winner["candidate"],
            "trial_id": winner["trial_id"],
            "oof_auc_mean": winner["oof_auc_mean"],
            "oof_auc_95": winner["oof_auc_95"],
            "wins_across_seeds": winner["wins_across_seeds"],
        },
        "final_model": final_url,
        "final": plan["final"],
        "refit_epochs": refit_epochs,
        "calibration": calibration,
        "threshold": threshold,
        "target_recall": plan["target_recall"],
        "oof_subgroups": oof_subgroups,
        "test": None,
    }
    test = _test_look(plan, final_url)
    refit_cells = _cells(plan, REFIT) if plan["final"] == "refit" else []
    promotion.update(
        test=test,
        compute=_compute(plan, cells, refit_cells),
        finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    promotion = json_safe(promotion)
    storage.write_json(storage.join(plan["url"], PROMOTION_FILE), promotion)
    return promotion
