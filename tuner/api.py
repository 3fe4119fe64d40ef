"""The Python API: every capability of mammotune as a function or an object.

``import tuner`` re-exports these names (lazily: nothing heavy is imported until a name is
used). The ``mammotune`` command line and the quickstart are thin faces over the same calls:
keyword options mirror the command-line flags (``--context-px 150`` is ``context_px=150``).
User mistakes raise :class:`tuner.UserError` with one line naming the problem and the fix,
before anything is written.

Functions that run long work take ``log``, a callable that receives progress lines (for
example ``print``); by default they go to the ``tuner`` logger.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.errors import UserError

if TYPE_CHECKING:
    from tuner.config import SearchSpace
    from tuner.data.dataset import Dataset, Synthetic
    from tuner.results.evaluate import Evaluation
    from tuner.results.experiment import Experiment

__all__ = [
    "synth",
    "prepare",
    "load_space",
    "presets",
    "search",
    "evaluate",
    "predict",
    "Prediction",
    "Predictions",
    "pretrain_mias",
    "Pretrained",
    "fetch_weights",
    "submit",
    "Job",
]

logger = logging.getLogger("tuner")
Log = Callable[[str], None]


def _log(log: Log | None) -> Log:
    return log or logger.info


def _require(call: str, **arguments: Any) -> None:
    """A missing required argument as one UserError naming it (not a TypeError)."""
    missing = [name for name, value in arguments.items() if value is None]
    if missing:
        raise UserError(f"{call} needs {', '.join(f'{name}=' for name in missing)}")


def _url(value: Any) -> str:
    """A URL or path given as str, Path, Dataset or Experiment."""
    return str(getattr(value, "url", value))


def _sizes(value: int | str | Sequence[int], what: str) -> tuple[int, ...]:
    """Sizes given as 224, "224,299" or [224, 299]."""
    items = (
        value.split(",") if isinstance(value, str) else [value] if isinstance(value, int) else value
    )
    try:
        return tuple(sorted({int(item) for item in items if str(item).strip()}))
    except (TypeError, ValueError):
        raise UserError(f"{what}={value!r}: give whole numbers, e.g. [224, 299]") from None


def _names(value: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(p.strip() for p in value.split(",") if p.strip())
    return tuple(value)


# ---------------------------------------------------------------------------- data
def synth(
    out: str | Path | None = None,
    *,
    format: str = "cbis-ddsm",
    layout: str = "csv",
    patients: int = 200,
    seed: int = 0,
    difficulty: float = 0.5,
    scale: float = 0.25,
    one_view_fraction: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> Synthetic:
    """Write a synthetic dataset in the layout of a real download (``mammotune synth``).

    Args:
        out: a new folder or URL.
        format: "cbis-ddsm" (DICOM + the four CSVs) or "mini-mias" (PGM + Info.txt).
        layout: CBIS-DDSM files where the CSVs' paths say ("csv"), where a TCIA download
            puts them ("archive"), or as the community JPEG edition ("jpeg-edition").
        patients, seed, difficulty, scale: how many, which, how subtle (0-1), and the
            fraction of real CBIS-DDSM resolution.
        one_view_fraction: CBIS-DDSM: the fraction of findings of two-view breasts seen in
            one view only (occult in the other, still listed for both), for two-view models.
        progress: called with ``(done, total)`` as images are written.

    Returns:
        What was written (``reused`` when ``out`` already held it, made the same way).

    Raises:
        UserError: bad settings, or ``out`` holds something else.
    """
    from tuner.data.dataset import Synthetic
    from tuner.data.synthetic import SynthParams, synthesize

    _require("synth", out=out)
    params = SynthParams(
        patients=patients,
        seed=seed,
        difficulty=difficulty,
        scale=scale,
        one_view_fraction=one_view_fraction,
        format=format,
        layout=layout,
    )
    summary = synthesize(str(out), params, progress=progress)
    return Synthetic.from_summary(str(out), summary)


def prepare(
    source: str | Path | Synthetic | None = None,
    out: str | Path | None = None,
    *,
    source_kind: str | None = None,
    views: str | Sequence[str] = ("roi",),
    sizes: int | Sequence[int] = (224,),
    whole_sizes: int | Sequence[int] = (512,),
    enhance: str | Sequence[str] = ("none",),
    context_px: int | None = None,
    train_variants: int = 4,
    tissue_tiles: int = 1,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    address: str | None = None,
    max_pixels: int | None = None,
    log: Log | None = None,
) -> Dataset:
    """Turn a CBIS-DDSM or mini-MIAS folder into tile shards + ``manifest.json`` at ``out``,
    in parallel on Ray (``mammotune prepare``).

    Args:
        source: the download (or :func:`synth`'s result); its kind is recognised from its
            files unless ``source_kind`` says: "cbis-ddsm" (the DICOM edition),
            "cbis-ddsm-jpeg" (the JPEG edition), "mini-mias".
        out: a new folder or URL (local path, file://, s3://, memory://).
        views: "roi" and/or "whole".
        sizes, whole_sizes: ROI tile sides; whole-image long sides.
        enhance: "none", "equalize", "clahe" (one or several).
        context_px: ROI tile side in source pixels (default: the source's own, 598 on
            CBIS-DDSM).
        train_variants, tissue_tiles: random crops per training ROI; tissue tiles per image.
        val_fraction, test_fraction, seed: the patient split.
        address: a Ray cluster (default: a local Ray in this process).
        max_pixels: the most pixels an image file may declare (default
            ``$MAMMOTUNE_MAX_PIXELS``, else 100 million): larger files are skipped with
            their reason before anything is decoded (decompression bombs).
        log: receives progress lines.

    Returns:
        The dataset (``reused`` when ``out`` already held exactly it: nothing was done).

    Raises:
        UserError: a missing or unrecognised source, bad settings, an unreachable or
            forbidden bucket, or ``out`` holds something else.
    """
    from tuner.cluster import connect
    from tuner.data.dataset import Dataset
    from tuner.data.prepare import PrepareParams, plan_prepare, run_prepare

    _require("prepare", source=source, out=out)
    emit = _log(log)
    params = PrepareParams(
        views=_names(views),
        sizes=_sizes(sizes, "sizes"),
        whole_sizes=_sizes(whole_sizes, "whole_sizes"),
        enhance=_names(enhance),
        context_px=context_px,
        train_variants=train_variants,
        tissue_tiles=tissue_tiles,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
    )
    plan = plan_prepare(  # before Ray
        _url(source), str(out), params, kind=source_kind, max_pixels=max_pixels
    )
    if plan.existing is None:
        images = sum(len(c["images"]) for c in plan.chunks)
        skipped = f" ({len(plan.skipped)} inputs skipped)" if plan.skipped else ""
        emit(
            f"{plan.kind} at {plan.source}: {images} images in {len(plan.chunks)} chunks -> "
            f"{plan.out}{skipped}"
        )
        dashboard = connect(address)
        if dashboard:
            emit(f"Ray dashboard: {dashboard}")
    manifest = run_prepare(plan)
    if manifest.get("reused") and manifest.get("max_pixels", plan.max_pixels) != plan.max_pixels:
        emit(
            f"note: {plan.out} was prepared with max_pixels {manifest['max_pixels']}, not "
            f"{plan.max_pixels}; files it skipped as too large stay skipped (prepare into a "
            "new folder to take them)"
        )
    return Dataset.from_manifest(plan.out, manifest, reused=bool(manifest.get("reused")))


# ---------------------------------------------------------------------------- search
def presets() -> dict[str, str]:
    """The search-space presets shipped with the package: name -> description."""
    from tuner._presets import presets as shipped

    return shipped()


def load_space(
    space: str | Path | SearchSpace,
    overrides: dict[str, Any] | None = None,
) -> SearchSpace:
    """A search space, checked: a preset name (``"quick"``, see :func:`presets`), a YAML
    file, or a :class:`SearchSpace`, with ``overrides`` (the dict form of ``--set``, e.g.
    ``{"epochs": 1, "backbone": ["resnet18"], "sampler.type": "gp"}``).

    Raises:
        UserError: an unknown preset, a file that breaks the schema, an unknown setting,
            sampler, scheduler or metric (naming the file, the key and the allowed values).
    """
    space, _ = _space_and_source(space, overrides)
    return space


def _space_and_source(space, overrides) -> tuple[SearchSpace, str]:
    from tuner._presets import resolve_space
    from tuner.config import SearchSpace, apply_overrides
    from tuner.config import load_space as load_file
    from tuner.search.space import check_space

    _require("load_space", space=space)
    if isinstance(space, SearchSpace):
        loaded, source = space, f"search space {space.name}"
    else:
        path = resolve_space(str(space))
        loaded, source = load_file(path), str(path)
    if overrides:
        if not isinstance(overrides, dict):
            raise UserError("overrides must be a dict such as {'epochs': 2}")
        loaded = apply_overrides(loaded, overrides, source)
        from tuner.config import describe_overrides

        source = f"{source} with {describe_overrides(overrides)}"
    check_space(loaded, source)
    return loaded, source


def search(
    space: str | Path | SearchSpace | None = None,
    *,
    data: str | Path | Dataset | None = None,
    storage: str | Path | None = None,
    trials: int | None = None,
    overrides: dict[str, Any] | None = None,
    address: str | None = None,
    weights: str | None = None,
    study: str | None = None,
    cpus_per_trial: float | None = None,
    gpus_per_trial: float | None = None,
    max_failures: int = 1,
    reuse_actors: bool = True,
    console=None,
    log: Log | None = None,
) -> Experiment:
    """Run an Optuna-guided Ray Tune search (``mammotune search``); returns its experiment.

    Everything is checked before any trial starts: the space, the dataset and its tile
    sizes, the weights each transfer degree needs, that ``storage`` is new and writable, and
    that the cluster can serve the resources asked for.

    Args:
        space: a preset name, a YAML file or a :class:`SearchSpace`.
        data: a prepared dataset (:func:`prepare`'s result or its URL).
        storage: the experiment's new folder or URL.
        trials: override the space's trial count.
        overrides: the dict form of ``--set KEY=VALUE``.
        address: a Ray cluster (default: RAY_ADDRESS, else a local Ray in this process).
        weights: folder/URL with ImageNet files and mini-MIAS models.
        study: the Optuna storage, any SQLAlchemy URL (default: SQLite).
        cpus_per_trial, gpus_per_trial: override the space's resources (0.5 GPU: two trials
            share one).
        max_failures: retries of an errored trial from its last checkpoint.
        reuse_actors: recycle trial worker processes (the default: a fresh process costs
            seconds per trial; each trial frees its model and CUDA cache when it ends);
            False: one process per trial.
        console: a rich Console to draw the live trial table on (default: Tune's output).
        log: receives progress lines.

    Raises:
        UserError: a missing argument, a bad space, a missing dataset, tile size or weight
            file, an experiment location that is not new, an unreachable cluster.
    """
    from tuner.cluster import check_gpus, connect
    from tuner.results.experiment import Experiment
    from tuner.search.runner import plan_search, run_search
    from tuner.search.study import redact

    _require("search", space=space, data=data, storage=storage)
    emit = _log(log)
    loaded, source = _space_and_source(space, overrides)
    plan = plan_search(
        loaded,
        space_file=source,
        data=_url(data),
        experiment=str(storage),
        weights_dir=weights,
        trials=trials,
        study=study,
        cpus=cpus_per_trial,
        gpus=gpus_per_trial,
    )
    address = address or os.environ.get("RAY_ADDRESS") or None
    dashboard = connect(address)
    check_gpus(
        plan.space.resources.gpu,
        address,
        plan.space.max_concurrent,
        warn=lambda message: emit(f"warning: {message}"),
    )
    sp = plan.space
    metrics = ", ".join(f"{o.name} ({o.mode})" for o in sp.objectives)
    emit(
        f"search {sp.name}: {sp.trials} trials, up to {sp.max_concurrent} at a time, "
        f"{plan.max_epochs} epochs max; sampler {sp.sampler.type}, scheduler "
        f"{sp.scheduler.type}, on {metrics}"
    )
    copied = f" (copied to {plan.experiment}/optuna.db at every snapshot)"
    emit(
        f"experiment: {plan.experiment}; Optuna study: {redact(plan.study_storage)}"
        + (copied if plan.study_snapshot else "")
    )
    if dashboard:
        emit(f"Ray dashboard: {dashboard}")
    run_search(plan, max_failures=max_failures, reuse_actors=reuse_actors, console=console)
    return Experiment.open(plan.experiment)


# ---------------------------------------------------------------------------- results
def evaluate(
    target: str | Path | Experiment | None = None,
    *,
    data: str | Path | Dataset | None = None,
    split: str = "test",
    ensemble: int = 1,
    target_recall: float = 0.9,
    resamples: int = 1000,
    threshold: float | None = None,
    report: str | Path | None = None,
    allow_mixed_editions: bool = False,
) -> Evaluation:
    """Metrics with patient-bootstrap intervals, a threshold table, per-breast figures and
    (with ``report``) plots, for one checkpoint, a promotion's final model, or the ensemble
    of an experiment's best (``mammotune evaluate``).

    A look at the test split is recorded in the experiment's ``test_ledger.json``; a look
    after the first logs a warning with the count of looks before it.

    Args:
        target: a checkpoint folder/URL, a final model (``promotions/<id>/final``), or an
            experiment (its best checkpoint, or its ``ensemble`` best averaged).
        data: the prepared dataset to evaluate on.
        split: train, val or test.
        target_recall: the recall the threshold table aims at.
        resamples: bootstrap resamples (of patients).
        threshold: the two-class operating threshold (default: a final model's own, fixed on
            out-of-fold predictions; else 0.5).
        report: a new folder for report.json, CSVs and PNGs.
        allow_mixed_editions: evaluate a model trained on one CBIS-DDSM edition (16-bit
            DICOM or 8-bit JPEG) on a dataset prepared from the other; refused otherwise.

    Raises:
        UserError: a missing argument, bad numbers, a target that is neither a checkpoint
            nor an experiment, a report folder that is not empty, a dataset of the other
            edition (without ``allow_mixed_editions``).
    """
    from tuner import storage
    from tuner.results.evaluate import Evaluation, write_report
    from tuner.results.evaluate import evaluate as run_evaluation
    from tuner.results.experiment import Experiment
    from tuner.search.experiment import EXPERIMENT_FILE
    from tuner.training.checkpoint import META, MODEL, open_model

    _require("evaluate", target=target, data=data)
    if ensemble < 1 or not 0 < target_recall <= 1:
        raise UserError("ensemble must be >= 1 and target_recall in (0, 1]")
    if threshold is not None and not 0 <= threshold <= 1:
        raise UserError(f"threshold {threshold} must be in [0, 1]")
    if report is not None and os.path.isdir(report) and os.listdir(report):
        raise UserError(f"{report} is not empty; choose a new folder for the report")
    url = _url(target)
    if storage.exists(storage.join(url, META)) or storage.exists(storage.join(url, MODEL)):
        if ensemble != 1:
            raise UserError("an ensemble takes the best checkpoints of an experiment, not one")
        model = open_model(url)
        if model.meta and split in ("train", "val"):
            logger.warning(
                "warning: a final model's members trained on train+val: its figures on %s "
                "are not held out (its out-of-fold figures are in promotion.json)",
                split,
            )
    elif storage.exists(storage.join(url, EXPERIMENT_FILE)):
        model = Experiment.open(url).checkpoints(ensemble)
    else:
        raise UserError(
            f"{url} is neither a checkpoint ({META}), a final model ({MODEL}) nor an experiment"
        )
    result = run_evaluation(
        model,
        _url(data),
        split=split,
        target_recall=target_recall,
        resamples=resamples,
        threshold=threshold,
        allow_mixed_editions=allow_mixed_editions,
    )
    written = write_report(result, str(report)) if report is not None else []
    return Evaluation.from_report(result, written)


@dataclass(frozen=True)
class Prediction:
    """Class probabilities for one file."""

    file: str
    probabilities: dict[str, float]
    predicted: str
    roi: str | None  # ROI models: where the tile came from ("mask", "box", "whole file")
    heatmap: str | None = None  # with heatmap=: the Grad-CAM overlay PNG
    heatmap_empty: bool | None = None  # no region raised the predicted class's score


@dataclass(frozen=True)
class Predictions:
    """What :func:`predict` returns."""

    checkpoint: str
    task: str
    preprocessing: dict[str, Any]  # view, size, enhance, context_px: as the model was trained
    threshold: float | None
    items: list[Prediction]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["predictions"] = data.pop("items")
        return data


def predict(
    checkpoint: str | Path | None = None,
    files: Sequence[str | Path] | str | Path | None = None,
    *,
    threshold: float | None = None,
    roi_mask: str | Path | None = None,
    roi_box: Sequence[int] | None = None,
    heatmap: str | Path | None = None,
    expect_sha256: str | None = None,
    max_pixels: int | None = None,
) -> Predictions:
    """Class probabilities for DICOM or image files, through the preprocessing the
    checkpoint was trained with (``mammotune predict``).

    Args:
        checkpoint: a checkpoint folder or URL (``Experiment.best().checkpoint``), a
            promotion's final model (``Promotion.final_model``), or an export bundle
            (:func:`export`: run with ONNX Runtime or TorchScript).
        files: DICOM, PNG, PGM, JPEG or TIFF files (full mammograms for a whole-image model).
        threshold: the positive class's threshold (two classes); default: a final
            model's own (fixed on out-of-fold predictions), else 0.5.
        roi_mask, roi_box: for a ROI model, where the finding is in one full mammogram (a
            mask image, or x0, y0, x1, y1 in its pixels): the tile is then cut exactly as
            ``prepare`` cut the training tiles. Without either, each file is taken to be the
            finding's tile.
        heatmap: a new or empty folder for Grad-CAM overlays over the tile the model saw,
            one PNG per file (checkpoints, final models, TorchScript bundles).
        expect_sha256: an export bundle's SHA-256 (of its ``bundle.json``, as ``export``
            printed it), from a place you trust: another bundle is refused before anything
            in it is loaded.
        max_pixels: the most pixels a file may declare (default ``$MAMMOTUNE_MAX_PIXELS``,
            else 100 million); a larger one is refused before it is decoded.

    Raises:
        UserError: a missing argument, an unreadable checkpoint, bundle or file, a bundle
            edited since export or not the one ``expect_sha256`` names, a ROI for a
            whole-image model or for several files, a heatmap folder that holds files or a
            heatmap from an ONNX bundle.
    """
    from tuner.results.predict import predict_files

    _require("predict", checkpoint=checkpoint, files=files)
    paths = [str(files)] if isinstance(files, str | Path) else [str(f) for f in files]
    if not paths:
        raise UserError("predict needs at least one file")
    if roi_box is not None:
        parts = roi_box.split(",") if isinstance(roi_box, str) else roi_box
        try:
            roi_box = tuple(int(v) for v in parts)
        except (TypeError, ValueError):
            roi_box = ()
        if len(roi_box) != 4:
            raise UserError("roi_box takes four whole numbers: x0, y0, x1, y1 (image pixels)")
    result = predict_files(
        _url(checkpoint),
        paths,
        threshold=threshold,
        roi_mask=None if roi_mask is None else str(roi_mask),
        roi_box=roi_box,
        heatmap=None if heatmap is None else str(heatmap),
        expect_sha256=expect_sha256,
        max_pixels=max_pixels,
    )
    return Predictions(
        checkpoint=result["checkpoint"],
        task=result["task"],
        preprocessing=result["preprocessing"],
        threshold=result["threshold"],
        items=[
            Prediction(
                file=item["file"],
                probabilities=item["probabilities"],
                predicted=item["predicted"],
                roi=item.get("roi"),
                heatmap=item.get("heatmap"),
                heatmap_empty=item.get("heatmap_empty"),
            )
            for item in result["predictions"]
        ],
    )


# ----------------------------------------------------------------------- report, export
def report(
    experiment: str | Path | Experiment | None = None,
    *,
    out: str | Path | None = None,
    study: str | None = None,
):
    """Write an experiment's self-contained HTML report and ``model_card.json`` beside it
    (``mammotune report``); returns a :class:`tuner.Report`.

    The report holds the search (trials by state, a compute ledger, learning curves with
    early stops, Optuna fANOVA importance, slice and parallel-coordinate plots, the
    leaderboard, the best config), the data (counts, leakage, skipped inputs), the newest
    promotion (CV table, seed spread, OOF threshold table, test figures with intervals at
    the OOF threshold, curves, subgroups, the test looks recorded) and a model card. Every
    image is inline: the file works offline. An experiment with no finished trial gets a
    report that says so.

    Args:
        experiment: the search's storage location, or an :class:`Experiment`.
        out: the HTML file to write (default ``EXP/reports/<UTC time>/report.html``; must
            not exist, nor ``model_card.json`` beside it).
        study: the Optuna storage URL of a search run with ``study=`` (``--study``), for
            the importance section. Without it only the copy the experiment holds
            (``optuna.db``) is read: no database named inside the experiment is connected to.

    Raises:
        UserError: no experiment there, or ``out`` exists.
    """
    from tuner.results.report import search_report

    _require("report", experiment=experiment)
    return search_report(_url(experiment), None if out is None else str(out), study=study)


def export(model: Any = None, out: str | Path | None = None, *, format: str = "onnx"):
    """Export a model as a bundle another inference stack can run (``mammotune export``);
    returns the opened :class:`tuner.Bundle`.

    The bundle folder holds the model as one graph (raw tiles in, calibrated probabilities
    out: an ensemble's members averaged, its TTA and temperature inside), ``bundle.json``
    (classes, threshold, input shape, checksums), ``preprocessing.json`` (how a file becomes
    the input, the path training tiles were made by) and ``model_card.json``. Run it with
    :func:`predict`, or with ONNX Runtime / libtorch directly.

    Args:
        model: a checkpoint, a promotion's final model or folder, a trial folder, or an
            experiment (its newest promotion's final model, else its best checkpoint).
        out: a new folder or URL (it must not exist).
        format: "onnx" (ONNX Runtime) or "torchscript" (also carries Grad-CAM's ``explain``).

    Raises:
        UserError: an unknown format, ``out`` exists, nothing loadable at ``model``, or an
            errored trial.
    """
    from tuner.results.bundle import export_model, open_bundle

    _require("export", model=model, out=out)
    written = export_model(_url(model), str(out), fmt=format, log=logging.getLogger("tuner").info)
    # Reopened pinned to what was written: the digest printed is of these very bytes.
    return open_bundle(written["url"], expect_sha256=written["sha256"])


# ---------------------------------------------------------------------------- weights
@dataclass(frozen=True)
class Pretrained:
    """A mini-MIAS model :func:`pretrain_mias` trained (a mammotune checkpoint)."""

    backbone: str
    stage: str  # "head" (ImageNet backbone frozen) or "all" (then every layer)
    checkpoint: str  # where transfer degrees imagenet_mias_head / mias_all load it from
    metrics: dict[str, float]  # validation metrics on mini-MIAS


def pretrain_mias(
    data: str | Path | Dataset | None = None,
    weights: str | Path | None = None,
    backbones: str | Sequence[str] | None = None,
    *,
    view: str = "whole",
    size: int = 224,
    enhance: str = "none",
    head_epochs: int = 5,
    all_epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 16,
    seed: int = 0,
    log: Log | None = None,
) -> list[Pretrained]:
    """Train the mini-MIAS models that transfer degrees ``mias_all`` and
    ``imagenet_mias_head`` start from, into ``weights`` (``mammotune pretrain-mias``).
    Backbones whose models are already there are kept as they are (and not listed).

    Returns:
        The models trained, a stage of a backbone each.

    Raises:
        UserError: a missing argument, not a mini-MIAS dataset, a missing size or ImageNet
            file, a half-written model from an interrupted run.
    """
    from tuner.training.pretrain import PretrainParams
    from tuner.training.pretrain import pretrain_mias as run_pretraining

    _require("pretrain_mias", data=data, weights=weights, backbones=backbones)
    params = PretrainParams(
        view=view,
        size=size,
        enhance=enhance,
        head_epochs=head_epochs,
        all_epochs=all_epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
    )
    from tuner import storage
    from tuner.models.weights import mias_checkpoint

    weights = storage.normalize(str(weights))
    results = run_pretraining(
        _url(data), weights, list(_names(backbones)), params, progress=_log(log)
    )
    return [
        Pretrained(backbone, stage, mias_checkpoint(weights, backbone, stage), metrics)
        for backbone, stages in results.items()
        for stage, metrics in stages.items()
    ]


def fetch_weights(
    dest: str | Path | None = None,
    backbones: str | Sequence[str] = (),
    *,
    base_url: str | None = None,
) -> list[tuple[str, str]]:
    """Download torchvision's ImageNet weights into a folder or bucket, checked against the
    hash in each file name (``mammotune weights fetch``; needs a network).

    Args:
        backbones: default: the five published backbones.
        base_url: a mirror holding torchvision's file names.

    Returns:
        ``(url, "downloaded" | "already there")`` for each file.
    """
    from tuner.models.backbones import get_spec, list_backbones
    from tuner.models.weights import fetch_imagenet

    _require("fetch_weights", dest=dest)
    names = list(_names(backbones)) or [n for n in list_backbones() if get_spec(n).published]
    return fetch_imagenet(str(dest), names, base_url=base_url)


# ---------------------------------------------------------------------------- clusters
@dataclass
class Job:
    """A mammotune command submitted to a cluster as a Ray job."""

    id: str
    address: str
    command: list[str]
    _client: Any = None

    @property
    def dashboard(self) -> str:
        return f"{self.address.rstrip('/')}/#/jobs/{self.id}"

    def status(self) -> str:
        """PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED."""
        return str(self._client.get_job_status(self.id)).rsplit(".", 1)[-1]

    def follow(self, emit: Log = print) -> str:
        """Pass the job's log to ``emit`` as it grows until the job ends; returns its final
        status."""
        from tuner.jobs import follow

        return follow(self._client, self.id, emit)


def submit(
    command: Sequence[str] | None = None,
    *,
    address: str | None = None,
    working_dir: str = ".",
    env: dict[str, str] | Sequence[str] | None = None,
    job_id: str | None = None,
) -> Job:
    """Submit ``mammotune <command>`` (e.g. ``["search", "--space", ...]``) to a cluster
    through Ray's Jobs API, shipping ``working_dir`` with it (``mammotune submit``).

    Args:
        address: the Jobs API, ``http://HEAD:8265`` (default: RAY_API_SERVER_ADDRESS); the
            token comes from RAY_AUTH_TOKEN.
        env: environment variables for the job (no secrets), a dict or ``KEY=VALUE`` items.

    Raises:
        UserError: no address or command, an unreachable API, a refused token, a
            secret-looking variable.
    """
    from tuner.jobs import check_env
    from tuner.jobs import submit as submit_job

    address = address or os.environ.get("RAY_API_SERVER_ADDRESS")
    if not address:
        raise UserError(
            "submit needs the Ray dashboard's Jobs API: --address http://HEAD:8265 "
            "(address= in Python) or RAY_API_SERVER_ADDRESS"
        )
    import shlex

    command = shlex.split(command) if isinstance(command, str) else list(command or [])
    if isinstance(env, dict):
        env = [f"{k}={v}" for k, v in env.items()]
    variables = check_env(list(env or []))
    client, submitted = submit_job(
        address, command, working_dir=working_dir, env=variables, submission_id=job_id
    )
    return Job(id=submitted, address=address, command=command, _client=client)
