import numpy as np
import pytest
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
    assert stats["images"] == sum(task.counts(train.entries[0]))
    result = evaluate(model, DataLoader(val, batch_size=64), loss_fn)
    assert len(result["labels"]) == sum(task.counts(val.entries[0]))
    assert result["probabilities"].shape == (len(result["labels"]), 2)
    assert np.allclose(result["probabilities"].sum(axis=1), 1, atol=1e-5)
    auc = binary_metrics(result["labels"], result["probabilities"][:, 1])["roc_auc"]
    assert auc > 0.9


def test_minority_class_weight_is_the_published_plus_half():
    assert class_weights("minority_x1.5", [30, 10]).tolist() == [1.0, 1.5]
    assert class_weights("minority_x1.5", [5, 10, 7]).tolist() == [1.5, 1.0, 1.0]


def test_two_phases_train_the_head_then_everything_at_a_lower_rate():
    from tuner.training.config import TrialConfig
    from tuner.training.trainable import make_optimizer, set_phase

    model = build_model(ModelArgs("small_vgg_bn", num_classes=2))
    optimizer = make_optimizer(model, 1e-3)
    cfg = TrialConfig(
        backbone="small_vgg_bn", transfer="mias_all", head_epochs=2, lr=1e-3, epochs=4
    )
    tiles = torch.randint(0, 256, (8, 1, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 1] * 4)
    loss_fn = torch.nn.CrossEntropyLoss()

    assert set_phase(model, optimizer, cfg, 0) == "head"
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_one_epoch(model, [(tiles, labels)], loss_fn, optimizer)
    after = model.state_dict()
    backbone = [k for k in before if k.startswith("backbone.")]
    assert all(torch.equal(before[k], after[k]) for k in backbone)  # weights and BN stats
    assert not torch.equal(before["head.1.weight"], after["head.1.weight"])
    assert [g["lr"] for g in optimizer.param_groups] == [0.0, 1e-3]

    assert set_phase(model, optimizer, cfg, 2) == "all"
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-4, 1e-4])
    train_one_epoch(model, [(tiles, labels)], loss_fn, optimizer)
    assert not torch.equal(before["backbone.0.weight"], model.state_dict()["backbone.0.weight"])

    scratch = cfg.model_copy(update={"transfer": "random"})
    assert set_phase(model, optimizer, scratch, 0) == "all"
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 1e-3]


def test_a_nan_loss_stops_the_epoch_with_its_reason():
    from tuner.training.trainable import NonFiniteLoss

    model = build_model(ModelArgs("small_vgg_bn", num_classes=2))
    with torch.no_grad():
        model.head[-1].weight.fill_(float("nan"))
    tiles = torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8)
    optimizer = torch.optim.Adam(model.parameters())
    with pytest.raises(NonFiniteLoss, match="became nan at step 1; lower the learning rate"):
        train_one_epoch(
            model, [(tiles, torch.tensor([0, 1, 0, 1]))], torch.nn.CrossEntropyLoss(), optimizer
        )
