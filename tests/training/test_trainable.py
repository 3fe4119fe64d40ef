import numpy as np
import torch
from torch.utils.data import DataLoader

from tests.conftest import SIZES
from tuner.data.stream import TileStream, default_augment, load_manifest
from tuner.data.tasks import TASKS
from tuner.models import ModelArgs, build_model
from tuner.training.metrics import binary_metrics
from tuner.training.trainable import class_weights, evaluate, train_one_epoch


def test_class_weights():
    assert class_weights("none", [30, 10]) is None
    balanced = class_weights("balanced", [30, 10])
    assert torch.allclose(balanced, torch.tensor([40 / 60, 40 / 20]))
    assert class_weights(5.0, [30, 10]).tolist() == [1.0, 5.0]


def test_training_learns_the_synthetic_task(prepared):
    """A few epochs of real training on real shards separate the classes on validation
    tiles. (Mass vs calcification: learnt within two epochs whatever the seed; how fast
    benign vs malignant takes off depends on the seed, so it is measured by the quickstart.)"""
    torch.manual_seed(0)
    manifest = load_manifest(str(prepared))
    task = TASKS["mass_vs_calcification"]
    common = dict(view="roi", size=SIZES[1], task=task)
    train = TileStream(
        str(prepared), manifest, split="train", shuffle=True, augment=default_augment(), **common
    )
    val = TileStream(str(prepared), manifest, split="val", **common)
    model = build_model(ModelArgs("small_vgg_bn", num_classes=2, dropout=0.1))
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(3):
        train.set_epoch(epoch)
        stats = train_one_epoch(model, DataLoader(train, batch_size=16), loss_fn, optimizer)
    assert stats["images"] == sum(task.counts(train.entry))
    result = evaluate(model, DataLoader(val, batch_size=64), loss_fn)
    assert len(result["labels"]) == sum(task.counts(val.entry))
    assert result["probabilities"].shape == (len(result["labels"]), 2)
    assert np.allclose(result["probabilities"].sum(axis=1), 1, atol=1e-5)
    auc = binary_metrics(result["labels"], result["probabilities"][:, 1])["roc_auc"]
    assert auc > 0.9
