"""``mammotune pretrain-mias``: the mini-MIAS models that transfer degrees (a) and (b) start from.

As published: an ImageNet backbone, frozen, with a new head trained on binarised mini-MIAS
(benign vs malignant) -- stored as stage ``head``, used by degree (b) -- then every layer
fine-tuned at a lower learning rate -- stored as stage ``all``, used by degree (a). Both are
mammotune checkpoints under ``<weights>/mini-mias/<backbone>/<stage>/``, beside the ImageNet
files they started from.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

import tuner
from tuner import storage
from tuner.data.preprocess import whole_shape
from tuner.data.stream import TileStream, default_augment, load_manifest, split_entry
from tuner.data.tasks import get_task
from tuner.errors import UserError
from tuner.models.backbones import get_spec
from tuner.models.classifier import ModelArgs, build_model
from tuner.models.weights import find_imagenet_weights, mias_checkpoint
from tuner.training.checkpoint import META, STATE, save_checkpoint
from tuner.training.config import TrialConfig
from tuner.training.metrics import classification_metrics
from tuner.training.trainable import (
    class_weights,
    evaluate,
    make_optimizer,
    set_phase,
    train_one_epoch,
)

__all__ = ["PretrainParams", "pretrain_mias"]

STAGES = ("head", "all")


@dataclass(frozen=True)
class PretrainParams:
    view: str = "whole"
    size: int = 224
    enhance: str = "none"
    task: str = "benign_vs_malignant"  # binarised mini-MIAS
    head_epochs: int = 5
    all_epochs: int = 10
    lr: float = 1e-3
    finetune_lr_factor: float = 0.1
    batch_size: int = 16
    dropout: float = 0.2
    class_weight: str = "balanced"  # mini-MIAS has fewer malignant than benign findings
    seed: int = 0


def _check(data: str, weights_dir: str, backbones: list[str], params: PretrainParams) -> dict:
    if params.head_epochs < 1 or params.all_epochs < 1:
        raise UserError("pretraining needs at least one head epoch and one all-layers epoch")
    if not backbones:
        raise UserError("name at least one backbone (--backbones mobilenet_v2,resnet50)")
    manifest = load_manifest(data)
    if manifest.get("source", {}).get("kind") not in (None, "mini-mias"):
        raise UserError(
            f"{data} was prepared from {manifest['source']['kind']}, not mini-MIAS; "
            "prepare the mini-MIAS folder and pass that dataset"
        )
    task = get_task(params.task)
    for split in ("train", "val"):
        entry = split_entry(manifest, params.view, params.size, split, params.enhance)
        if min(task.counts(entry)) == 0:
            raise UserError(
                f"{data}: the {split} split has no {task.classes[task.counts(entry).index(0)]} "
                f"{params.view} images for {params.task}; prepare with a larger validation share"
            )
    todo = []
    for backbone in backbones:
        TrialConfig(backbone=backbone)  # a registered backbone, or a UserError
        side = whole_shape(params.size)[1] if params.view == "whole" else params.size
        if get_spec(backbone).min_size > side:
            raise UserError(
                f"{backbone} needs inputs of at least {get_spec(backbone).min_size} px; "
                f"--size {params.size} gives {side} px on the short side: raise --size"
            )
        find_imagenet_weights(backbone, weights_dir)
        done = [
            storage.exists(storage.join(mias_checkpoint(weights_dir, backbone, stage), META))
            for stage in STAGES
        ]
        if all(done):
            continue  # trained before: kept as it is
        if any(done):
            partial = mias_checkpoint(weights_dir, backbone, "head")
            raise UserError(
                f"{partial} is left from an interrupted run of {backbone}; remove it and run "
                "again (nothing was changed)"
            )
        todo.append(backbone)
    return manifest, todo


def _upload(local: str, url: str) -> None:
    for name in (STATE, META):  # the state first: checkpoint.json marks a complete stage
        with open(os.path.join(local, name), "rb") as f:
            storage.write_bytes(storage.join(url, name), f.read())


def pretrain_mias(
    data: str,
    weights_dir: str,
    backbones: list[str],
    params: PretrainParams = PretrainParams(),
    *,
    progress: Callable[[str], None] = print,
) -> dict[str, dict]:
    """Train the mini-MIAS models of ``backbones`` and store them in ``weights_dir``.

    Returns:
        ``{backbone: {stage: validation metrics}}``.

    Backbones whose models are already in ``weights_dir`` are skipped (never overwritten).

    Raises:
        UserError: not a mini-MIAS dataset, a missing view or size, an input too small for
            a backbone, no ImageNet weights, or a half-written model from an interrupted run.
    """
    data, weights_dir = storage.normalize(data), storage.normalize(weights_dir)
    manifest, todo = _check(data, weights_dir, backbones, params)
    for backbone in backbones:
        if backbone not in todo:
            progress(f"{backbone}: mini-MIAS models already in {weights_dir}; kept as they are")
    task = get_task(params.task)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    stream = dict(view=params.view, size=params.size, enhance=params.enhance, task=task)
    train_set = TileStream(
        data,
        manifest,
        split="train",
        shuffle=True,
        seed=params.seed,
        augment=default_augment(square=params.view == "roi"),
        **stream,
    )
    val_set = TileStream(data, manifest, split="val", **stream)
    train_loader = DataLoader(train_set, batch_size=params.batch_size)
    val_loader = DataLoader(val_set, batch_size=params.batch_size)
    counts = task.counts(split_entry(manifest, params.view, params.size, "train", params.enhance))
    weights = class_weights(params.class_weight, counts)
    loss_fn = nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device))

    results: dict[str, dict] = {}
    for backbone in todo:
        torch.manual_seed(params.seed)
        cfg = TrialConfig(
            backbone=backbone,
            transfer="imagenet",
            head_epochs=params.head_epochs,
            epochs=params.head_epochs + params.all_epochs,
            lr=params.lr,
            finetune_lr_factor=params.finetune_lr_factor,
            dropout=params.dropout,
            input_size=params.size,
            seed=params.seed,
        )
        args = ModelArgs(backbone=backbone, num_classes=len(task.classes), dropout=params.dropout)
        model = build_model(args, transfer="imagenet", weights_dir=weights_dir).to(device)
        optimizer = make_optimizer(model, params.lr)
        results[backbone] = {}
        for epoch in range(cfg.epochs):
            started = time.perf_counter()
            phase = set_phase(model, optimizer, cfg, epoch)
            train_set.set_epoch(epoch)
            trained = train_one_epoch(model, train_loader, loss_fn, optimizer, device=device)
            validated = evaluate(model, val_loader, loss_fn, device=device)
            scores = classification_metrics(validated["labels"], validated["probabilities"])
            metrics = {
                "epoch": epoch + 1,
                "train_loss": trained["loss"],
                "val_loss": validated["loss"],
                **{f"val_{k}": v for k, v in scores.items()},
            }
            progress(
                f"{backbone} {phase} epoch {epoch + 1}/{cfg.epochs}: train loss "
                f"{trained['loss']:.3f}, val loss {validated['loss']:.3f}, "
                f"val AUC {scores['roc_auc']:.3f} ({time.perf_counter() - started:.0f} s)"
            )
            last_of_stage = epoch + 1 == cfg.epochs or (
                phase == "head" and epoch + 1 == params.head_epochs
            )
            if not last_of_stage:
                continue
            meta = {
                "mammotune_version": tuner.__version__,
                "stage": phase,
                "epoch": epoch + 1,
                "seed": params.seed,
                "config": cfg.model_dump(),
                "pretrain": asdict(params),
                "metrics": metrics,
                "task": {"name": task.name, "classes": list(task.classes)},
                "dataset": {"id": manifest["id"], "params_hash": manifest.get("params_hash")},
            }
            with tempfile.TemporaryDirectory() as local:
                save_checkpoint(local, model=model.cpu(), optimizer=None, meta=meta)
                model.to(device)
                target = mias_checkpoint(weights_dir, backbone, phase)
                _upload(local, target)
            progress(f"{backbone}: stage {phase} saved to {target}")
            results[backbone][phase] = metrics
    return results
