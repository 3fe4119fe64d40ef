"""The per-trial trainable: plain ``train_one_epoch`` / ``evaluate`` functions and the Ray
Tune function trainable that streams shards, trains, and reports one metrics dict and one
checkpoint per epoch (ASHA decides from those reports whether the trial goes on).

A trial trains in two phases when its backbone is pretrained: the head alone with the
backbone frozen, then every layer at a lower learning rate. One Adam optimizer holds two
parameter groups (backbone, head) whose learning rates the phase sets, so a trial restored
from a checkpoint resumes in the right phase with its optimizer state. On a GPU it trains in
bf16 autocast with channels-last tensors.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import tempfile
import time
import traceback

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch import nn
from torch.utils.data import DataLoader

import tuner
from tuner.data.pairs import PairStream, breast_key, per_breast_probabilities
from tuner.data.preprocess import whole_shape
from tuner.data.stream import TileStream, default_augment, flip_rot90, load_manifest, split_entry
from tuner.data.tasks import get_task
from tuner.models.classifier import ModelArgs, build_model, class_probabilities
from tuner.models.weights import read_state
from tuner.telemetry import record_epoch
from tuner.training.checkpoint import META, STATE, save_checkpoint
from tuner.training.config import MINORITY, TrialConfig
from tuner.training.metrics import classification_metrics

__all__ = [
    "REPORTED_METRICS",
    "NonFiniteLoss",
    "train_one_epoch",
    "evaluate",
    "class_weights",
    "make_optimizer",
    "set_phase",
    "model_cost",
    "train_trial",
]

# What each epoch reports: a search may optimise any of these.
REPORTED_METRICS = (
    "val_roc_auc",
    "val_breast_roc_auc",  # whole images: per breast (its images averaged, or two-view's own)
    "val_loss",
    "val_accuracy",
    "val_precision",
    "val_recall",
    "val_specificity",
    "val_f1",
    "train_loss",
    "inference_ms",  # batch-1 forward time on the trial's device (for multi-objective spaces)
    "params_m",  # millions of parameters
)


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite: the trial ends as errored with this reason."""


def _autocast(device: torch.device, precision: str):
    """bf16 (or fp16) autocast on a GPU; full precision elsewhere."""
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type="cuda", dtype=dtype)


def _to_device(tiles: torch.Tensor, device: torch.device) -> torch.Tensor:
    tiles = tiles.to(device, non_blocking=True)
    if device.type == "cuda":
        tiles = tiles.contiguous(memory_format=torch.channels_last)
    return tiles


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device | str = "cpu",
    batch_augment=None,
    precision: str = "auto",
    scaler: torch.amp.GradScaler | None = None,
) -> dict:
    """One pass over ``loader``; returns mean loss, images seen and images per second.

    Args:
        batch_augment: optional function applied to each batch on ``device`` (for example
            :func:`tuner.data.stream.flip_rot90` on a GPU).
        precision: "auto" or "bf16" (bf16 autocast on a GPU), "fp16" (with ``scaler``) or
            "fp32".

    Raises:
        NonFiniteLoss: the loss became NaN or infinite.
    """
    device = torch.device(device)
    first_step_at = None
    model.train()
    backbone = getattr(model, "backbone", None)
    if backbone is not None and not any(p.requires_grad for p in backbone.parameters()):
        backbone.eval()  # a frozen backbone keeps its batch-norm statistics
    total, images, started = 0.0, 0, time.perf_counter()
    waited, asked = 0.0, started  # time spent waiting for the loader's next batch
    for step, (tiles, labels) in enumerate(loader):
        waited += time.perf_counter() - asked
        tiles, labels = _to_device(tiles, device), labels.to(device, non_blocking=True)
        if batch_augment is not None:
            tiles = batch_augment(tiles)
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, precision):
            loss = loss_fn(model(tiles), labels)
        value = loss.item()
        if not math.isfinite(value):
            raise NonFiniteLoss(
                f"training loss became {value} at step {step + 1}; lower the learning rate "
                "or use precision fp32"
            )
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if first_step_at is None:
            first_step_at = time.time()
        total += value * len(labels)
        images += len(labels)
        asked = time.perf_counter()
    seconds = time.perf_counter() - started
    return {
        "loss": total / max(images, 1),
        "images": images,
        "images_per_s": images / seconds,
        "data_wait_share": waited / seconds,  # near 0: the GPU/CPU never waits for shards
        "first_step_at": first_step_at,  # wall clock (time.time()) after the first step
    }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: nn.Module,
    *,
    device: torch.device | str = "cpu",
    precision: str = "auto",
) -> dict:
    """Mean loss, labels and class probabilities (N, classes) over ``loader``."""
    device = torch.device(device)
    model.eval()
    total, labels, probabilities = 0.0, [], []
    for tiles, target in loader:
        tiles, target = _to_device(tiles, device), target.to(device)
        with _autocast(device, precision):
            logits = model(tiles).float()
        total += loss_fn(logits, target).item() * len(target)
        labels.append(target.cpu().numpy())
        probabilities.append(torch.softmax(logits, dim=1).cpu().numpy())
    labels_np = np.concatenate(labels) if labels else np.zeros(0, int)
    return {
        "loss": total / max(len(labels_np), 1),
        "labels": labels_np,
        "probabilities": np.concatenate(probabilities) if probabilities else np.zeros((0, 2)),
    }


def class_weights(setting: str | float, counts: list[int]) -> torch.Tensor | None:
    """Loss weights per class: None, "balanced" (sklearn's inverse frequency),
    "minority_xF" (the class with the fewest rows weighs F) or a number (the positive
    class's weight; the others weigh 1)."""
    if setting == "none":
        return None
    minority = MINORITY.match(setting) if isinstance(setting, str) else None
    if minority:
        weights = torch.ones(len(counts))
        weights[int(np.argmin(counts))] = float(minority.group(1))
        return weights
    if setting == "balanced":
        labels = np.repeat(np.arange(len(counts)), counts)
        classes = np.arange(len(counts))
        weights = compute_class_weight("balanced", classes=classes, y=labels)
        return torch.tensor(weights, dtype=torch.float32)
    weights = torch.ones(len(counts))
    weights[-1] = float(setting)
    return weights


def make_optimizer(model, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam with two parameter groups, backbone then head (and stem), whose learning rates
    :func:`set_phase` sets per phase."""
    groups = [{"params": list(model.backbone.parameters())}, {"params": model.head_parameters()}]
    return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)


def set_phase(model, optimizer: torch.optim.Optimizer, cfg: TrialConfig, epoch: int) -> str:
    """Set up the training phase of ``epoch``; returns "head" or "all".

    Head phase: the backbone is frozen (no gradients, batch-norm statistics kept) and the
    head learns at ``lr``. All phase: every layer learns, at ``lr * finetune_lr_factor``
    after a head phase, at ``lr`` when there was none (random initialisation).
    """
    head = cfg.two_phase and epoch < cfg.head_epochs
    backbone_group, head_group = optimizer.param_groups
    for parameter in model.backbone.parameters():
        parameter.requires_grad_(not head)
    lr = cfg.lr * cfg.finetune_lr_factor if cfg.two_phase and not head else cfg.lr
    backbone_group["lr"] = 0.0 if head else lr
    head_group["lr"] = cfg.lr if head else lr
    return "head" if head else "all"


@torch.no_grad()
def model_cost(
    model: nn.Module,
    shape: tuple[int, int],
    *,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    repeats: int = 5,
    views: int = 1,
) -> dict:
    """What serving the model costs: batch-1 forward time in milliseconds on ``device`` (the
    median of ``repeats`` timed passes after a warm-up, in eval mode and the trial's
    precision) and its parameters in millions. ``views``: images per sample (2 for a
    two-view model: one breast's CC and MLO).
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    tiles = _to_device(torch.zeros((1, views, *shape), dtype=torch.uint8), device)
    times = []
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        with _autocast(device, precision):
            model(tiles)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:  # the first pass warms caches and kernels up
            times.append(time.perf_counter() - started)
    model.train(was_training)
    return {
        "inference_ms": float(np.median(times)) * 1000.0,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def _cpus() -> int:
    import ray

    try:
        return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    except Exception:  # not inside a Ray worker
        return max(1, torch.get_num_threads())


def _node_id() -> str:
    import ray

    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # not inside a Ray worker
        return ""


# The held-out context a promotion keeps with each out-of-fold prediction: identity and the
# subgroups it reports on.
HELDOUT = "heldout.json"
HELDOUT_CONTEXT = (
    "patient_id",
    "image_id",
    "abnormality_id",
    "lesion",
    "variant",
    "view",
    "laterality",
    "breast_density",
    "abnormality_type",
    "subtlety",
)
_ONE_PROCESS = {"num_workers": 0, "persistent_workers": False}


def stream_class(cfg: TrialConfig) -> type[TileStream]:
    """What feeds a trial: :class:`PairStream` (CC + MLO of a breast) for two-view fusion,
    else :class:`TileStream` (one tile or image per sample)."""
    return PairStream if cfg.fusion == "two_view" else TileStream


def _per_view(augment):
    """A batch augmentation applied to each view of (N, V, H, W) on its own draw."""

    def each_view(batch: torch.Tensor) -> torch.Tensor:
        n, views = batch.shape[:2]
        return augment(batch.reshape(n * views, 1, *batch.shape[2:])).reshape(batch.shape)

    return each_view


def _pairing_metrics(train_set: PairStream, val_set: PairStream | None) -> dict:
    """How a two-view trial's breasts were paired: breasts, and those with one view only
    (fed that view twice), per side of the trial."""
    metrics = {}
    for name, stream in (("train", train_set), ("val", val_set)):
        if stream is not None:
            metrics[f"{name}_breasts"] = stream.breasts
            metrics[f"{name}_single_view_breasts"] = stream.single_view_breasts
    return metrics


def _breast_rows(stream: TileStream) -> list[dict]:
    """Each row the (unshuffled, one-process) validation stream yields, with its breast
    as ``image_id`` and its label: pairs already are; images are grouped by patient and
    side."""
    if isinstance(stream, PairStream):
        return stream.context(["image_id"])
    return [
        {"image_id": breast_key(r), "label": r["label"]}
        for r in stream.context(["patient_id", "laterality"])
    ]


def _validation_scores(validated: dict, breasts: list[dict] | None, two_view: bool) -> dict:
    """The epoch's validation metrics: per sample (a two-view model's: per breast), and
    with whole images ``breast_roc_auc``, the one figure single- and two-view trials share."""
    labels, probabilities = validated["labels"], validated["probabilities"]
    if breasts is None:
        return classification_metrics(labels, probabilities)
    if [r["label"] for r in breasts] != [int(y) for y in labels]:
        raise RuntimeError("validation rows and their predictions do not line up")
    _, breast_labels, merged = per_breast_probabilities(breasts, probabilities)
    per_breast = classification_metrics(breast_labels, merged)
    scores = per_breast if two_view else classification_metrics(labels, probabilities)
    return {**scores, "breast_roc_auc": per_breast["roc_auc"]}


def _fold_streams(cfg: TrialConfig, manifest: dict, stream: dict, *, on_gpu: bool, square: bool):
    """Train on train+val without the held-out fold's patients; hold that fold out (none for
    a refit, ``fold`` None)."""
    from tuner import storage

    assignment = storage.read_json(cfg.folds)["patients"]
    heldout = {p for p, f in assignment.items() if f == cfg.fold}
    both = ("train", "val")
    Stream = stream_class(cfg)
    train_set = Stream(
        cfg.data,
        manifest,
        split=both,
        shuffle=True,
        seed=cfg.seed,
        augment=default_augment(square=square, flips=not on_gpu),
        without_patients=heldout,
        **stream,
    )
    if cfg.fold is None:
        return train_set, None
    return train_set, Stream(cfg.data, manifest, split=both, only_patients=heldout, **stream)


def _write_heldout(directory, model, heldout, validated, device, precision) -> None:
    """The last epoch's predictions on the held-out fold, with each row's context, plain and
    with flip TTA, into the checkpoint (``heldout.json``): the trial's out-of-fold part."""
    rows = heldout.context(HELDOUT_CONTEXT)
    plain = validated["probabilities"]
    if len(rows) != len(plain) or any(
        r["label"] != int(y) for r, y in zip(rows, validated["labels"], strict=True)
    ):
        raise RuntimeError("held-out rows and their predictions do not line up")
    model.eval()
    flipped = []
    with torch.no_grad():
        for tiles, _ in DataLoader(heldout, batch_size=64, **_ONE_PROCESS):
            with _autocast(device, precision):
                tiles = _to_device(tiles, device)
                flipped.append(class_probabilities(model, tiles, tta=True).cpu().numpy())
    flipped = np.concatenate(flipped)
    if isinstance(heldout, PairStream):
        # Two views: every image of a held-out breast gets its breast's prediction (the mean
        # over the breast's pairs), so out-of-fold rows are images, as for single-view models.
        rows, (plain, flipped) = _images_of_breasts(heldout, rows, [plain, flipped])
    with open(f"{directory}/{HELDOUT}", "w") as f:
        json.dump(
            {
                "rows": rows,
                "probabilities": np.asarray(plain).round(6).tolist(),
                "probabilities_tta": np.asarray(flipped).round(6).tolist(),
            },
            f,
        )


def _images_of_breasts(stream: PairStream, pair_rows: list[dict], predictions: list):
    """Image rows of ``stream`` (with :data:`HELDOUT_CONTEXT`), each with its breast's mean
    pair prediction, for every array in ``predictions``."""
    images = stream.image_rows(HELDOUT_CONTEXT)
    merged = []
    for probabilities in predictions:
        breasts, _, mean = per_breast_probabilities(pair_rows, probabilities)
        index = {b: i for i, b in enumerate(breasts)}
        merged.append(mean[[index[r["breast"]] for r in images]])
    return [{k: v for k, v in r.items() if k != "breast"} for r in images], merged


def train_trial(config: dict) -> None:
    """Ray Tune function trainable: one trial of the search.

    Trial worker processes are recycled (``reuse_actors``): whatever way the trial ends
    (finished, stopped by the scheduler, failed), its model, optimizer, loaders (and their
    worker processes) and CUDA cache are freed before the process takes the next trial.
    """
    try:
        _train_trial(config)
    except BaseException as exc:  # Tune stops a trial with SystemExit in its thread
        # The traceback keeps the trial's frames, and so its model and optimizer, alive.
        traceback.clear_frames(exc.__traceback__)
        raise
    finally:
        release_trial_memory()


def release_trial_memory() -> dict:
    """Collect what a finished trial left and return the CUDA cache to the device; returns
    the CUDA memory still allocated and reserved (bytes), 0 on CPU."""
    gc.collect()
    if not torch.cuda.is_available():
        return {"allocated": 0, "reserved": 0}
    torch.cuda.empty_cache()
    return {"allocated": torch.cuda.memory_allocated(), "reserved": torch.cuda.memory_reserved()}


def _train_trial(config: dict) -> None:
    from ray import tune

    entered_at = time.time()
    # One "Checkpoint successfully created" line per epoch and trial would bury the live
    # trial table in the driver's terminal; restores and errors are still logged.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    cfg = TrialConfig.model_validate(config)
    torch.set_num_threads(_cpus())
    torch.manual_seed(cfg.seed)
    manifest = load_manifest(cfg.data)
    task = get_task(cfg.task)
    counts = task.counts(split_entry(manifest, cfg.view, cfg.input_size, "train", cfg.enhance))
    if cfg.fusion == "two_view":  # the samples are breasts: weigh classes by their counts
        pairs = PairStream(
            cfg.data, manifest, size=cfg.input_size, split="train", task=task, enhance=cfg.enhance
        ).pairs
        counts = [sum(p.label == c for p in pairs) for c in range(len(task.classes))]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    args = ModelArgs(
        backbone=cfg.backbone,
        num_classes=len(task.classes),
        dropout=cfg.dropout,
        stem_blocks=cfg.stem_blocks,
        fusion=cfg.fusion,
    )
    model = build_model(args, transfer=cfg.transfer, weights_dir=cfg.weights_dir).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    scaler = (
        torch.amp.GradScaler("cuda") if device.type == "cuda" and cfg.precision == "fp16" else None
    )
    weights = class_weights(cfg.class_weight, counts)
    loss_fn = nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device))

    stream = dict(view=cfg.view, size=cfg.input_size, enhance=cfg.enhance, task=task)
    square = cfg.view == "roi"  # whole images are 1.5:1, so no quarter turns
    on_gpu = cfg.augment_on_gpu and device.type == "cuda"
    batch_augment = _per_view(flip_rot90) if on_gpu else None
    Stream = stream_class(cfg)
    train_set = Stream(
        cfg.data,
        manifest,
        split="train",
        shuffle=True,
        seed=cfg.seed,
        augment=default_augment(square=square, flips=not on_gpu),
        **stream,
    )
    val_set = Stream(cfg.data, manifest, split="val", **stream)
    if cfg.folds:
        train_set, val_set = _fold_streams(cfg, manifest, stream, on_gpu=on_gpu, square=square)
    loader = dict(
        batch_size=cfg.batch_size,
        num_workers=cfg.loader_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.loader_workers > 0,
    )
    train_loader = DataLoader(train_set, **loader)
    # Held-out folds are scored in one process so that rows keep the order of their context.
    val_loader = None if val_set is None else DataLoader(val_set, **{**loader, **_ONE_PROCESS})
    # Whole images are scored in one process too, so that each breast's rows (images, or
    # two-view pairs) can be found and merged: validation reports per breast as well.
    if not cfg.folds and cfg.view == "roi":
        val_loader = DataLoader(val_set, **loader)
    two_view = cfg.fusion == "two_view"
    paired = _pairing_metrics(train_set, val_set) if two_view else {}
    breasts = _breast_rows(val_set) if cfg.view == "whole" and val_set is not None else None

    start_epoch, best_loss, stale = 0, math.inf, 0
    resumed = tune.get_checkpoint()
    if resumed:
        # A restarted trial (dead worker, resumed search) goes on from its last epoch.
        with resumed.as_directory() as directory:
            state = read_state(f"{directory}/{STATE}")
            with open(f"{directory}/{META}") as f:
                saved = json.load(f)
        start_epoch = int(saved["epoch"])
        best_loss = saved.get("early_stopping", {}).get("best_val_loss", math.inf)
        stale = saved.get("early_stopping", {}).get("stale_epochs", 0)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])  # moves its state to the model's device

    node_id = _node_id()
    shape = whole_shape(cfg.input_size) if cfg.view == "whole" else (cfg.input_size,) * 2
    cost = model_cost(model, shape, device=device, precision=cfg.precision, views=cfg.views)
    for epoch in range(start_epoch, cfg.epochs):
        started = time.perf_counter()
        phase = set_phase(model, optimizer, cfg, epoch)
        train_set.set_epoch(epoch)
        trained = train_one_epoch(
            model,
            train_loader,
            loss_fn,
            optimizer,
            device=device,
            batch_augment=batch_augment,
            precision=cfg.precision,
            scaler=scaler,
        )
        if val_loader is None:  # a refit on all of train+val: nothing held out
            validated = {"loss": math.nan, "labels": None}
            scores = {}
        else:
            validated = evaluate(model, val_loader, loss_fn, device=device, precision=cfg.precision)
            scores = _validation_scores(validated, breasts, two_view)
        if validated["loss"] < best_loss:
            best_loss, stale = validated["loss"], 0
        else:
            stale += 1
        stop = cfg.patience > 0 and stale >= cfg.patience
        metrics = {
            "epoch": epoch + 1,
            "phase": phase,
            "train_loss": trained["loss"],
            "val_loss": validated["loss"],
            **{f"val_{name}": value for name, value in scores.items()},
            "train_images_per_s": trained["images_per_s"] * cfg.views,  # images, not pairs
            "data_wait_share": trained["data_wait_share"],
            "epoch_seconds": time.perf_counter() - started,
            "node_id": node_id,  # which Ray node ran this epoch (restarts may move a trial)
            "early_stopped": stop,
            **paired,
            **cost,
        }
        context = tune.get_context()
        record_epoch(
            context.get_experiment_name() or "",
            context.get_trial_id() or "",
            images_per_s=trained["images_per_s"],
            data_wait_share=trained["data_wait_share"],
            seconds=metrics["epoch_seconds"],
        )
        if epoch == start_epoch:
            # For benchmarks/overhead.py: when this process entered the trial and when its
            # first training step finished (wall clock).
            metrics["trial_entered_at"] = entered_at
            metrics["first_step_at"] = trained["first_step_at"]
        meta = {
            "mammotune_version": tuner.__version__,
            "epoch": epoch + 1,
            "seed": cfg.seed,
            "config": cfg.model_dump(),
            "metrics": metrics,
            "task": {"name": task.name, "classes": list(task.classes)},
            "dataset": {
                "id": manifest["id"],
                "params_hash": manifest.get("params_hash"),
                "params": manifest["params"],
                # Which collection, edition and bit depth the pixels came from: evaluation
                # on another edition's shards is refused unless asked for.
                "source": {
                    k: manifest.get("source", {}).get(k) for k in ("kind", "edition", "bit_depth")
                },
            },
            "early_stopping": {"best_val_loss": best_loss, "stale_epochs": stale},
        }
        with tempfile.TemporaryDirectory() as directory:
            save_checkpoint(directory, model=model, optimizer=optimizer, meta=meta)
            if cfg.folds and val_set is not None and epoch + 1 == cfg.epochs:
                _write_heldout(directory, model, val_set, validated, device, cfg.precision)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        if stop:
            return  # within-trial early stopping: validation loss stopped improving
