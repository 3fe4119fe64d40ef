"""Transfer-learning degrees load exactly the tensors they are given, and stem blocks."""

import pytest
import torch
import torchvision

from tuner.errors import UserError
from tuner.models import ModelArgs, build_model
from tuner.models.classifier import stem_blocks
from tuner.models.weights import imagenet_filename, mias_checkpoint
from tuner.training.checkpoint import save_checkpoint

BACKBONE = "resnet18"


def _imagenet(folder) -> dict:
    torch.manual_seed(1)
    state = torchvision.models.get_model(BACKBONE, weights=None).state_dict()
    torch.save(state, folder / imagenet_filename(BACKBONE))
    return state


def _mias(folder, stage: str) -> dict:
    torch.manual_seed(2 if stage == "all" else 3)
    model = build_model(ModelArgs(BACKBONE, num_classes=2))
    save_checkpoint(
        mias_checkpoint(str(folder), BACKBONE, stage), model=model, optimizer=None, meta={}
    )
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model, reference: dict, prefix: str) -> int:
    own = model.state_dict()
    keys = [k for k in reference if k.startswith(prefix)]
    for key in keys:
        assert torch.equal(own[key], reference[key]), key
    return len(keys)


def test_mias_all_takes_every_layer(tmp_path):
    mias = _mias(tmp_path, "all")
    model = build_model(ModelArgs(BACKBONE, 2), transfer="mias_all", weights_dir=str(tmp_path))
    assert _same(model, mias, "backbone.") > 50
    assert _same(model, mias, "head.") == 6


def test_imagenet_mias_head_takes_imagenet_backbone_and_mias_head(tmp_path):
    imagenet = _imagenet(tmp_path)
    mias = _mias(tmp_path, "head")
    model = build_model(
        ModelArgs(BACKBONE, 2), transfer="imagenet_mias_head", weights_dir=str(tmp_path)
    )
    assert _same(model, mias, "head.") == 6
    own = model.backbone.state_dict()
    deep = [k for k in imagenet if k.startswith("layer4.")]
    assert deep and all(torch.equal(own[k], imagenet[k]) for k in deep)


def test_a_four_class_task_keeps_all_but_the_last_head_layer(tmp_path):
    mias = _mias(tmp_path, "all")
    model = build_model(ModelArgs(BACKBONE, 4), transfer="mias_all", weights_dir=str(tmp_path))
    own = model.state_dict()
    assert torch.equal(own["head.1.weight"], mias["head.1.weight"])
    assert own["head.6.weight"].shape == (4, 32)  # new, randomly initialised


def test_a_stem_takes_the_mias_first_convolution_over_three_channels(tmp_path):
    mias = _mias(tmp_path, "all")
    model = build_model(
        ModelArgs(BACKBONE, 2, stem_blocks=1), transfer="mias_all", weights_dir=str(tmp_path)
    )
    first = model.state_dict()["backbone.conv1.weight"]
    assert first.shape[1] == 3
    assert torch.allclose(first.sum(dim=1, keepdim=True), mias["backbone.conv1.weight"])


@pytest.mark.parametrize("transfer", ["mias_all", "imagenet_mias_head"])
def test_a_mias_degree_without_its_model_names_the_command(tmp_path, transfer):
    _imagenet(tmp_path)
    with pytest.raises(UserError, match="mammotune pretrain-mias"):
        build_model(ModelArgs(BACKBONE, 2), transfer=transfer, weights_dir=str(tmp_path))
    with pytest.raises(UserError, match="--weights"):
        build_model(ModelArgs(BACKBONE, 2), transfer=transfer)


def test_a_mias_model_of_another_backbone_is_refused(tmp_path):
    model = build_model(ModelArgs("small_vgg_bn", 2))
    save_checkpoint(
        mias_checkpoint(str(tmp_path), BACKBONE, "all"),
        model=model,
        optimizer=None,
        meta={},
    )
    with pytest.raises(UserError, match="holds a small_vgg_bn model"):
        build_model(ModelArgs(BACKBONE, 2), transfer="mias_all", weights_dir=str(tmp_path))


@pytest.mark.parametrize(
    "size, blocks", [(224, 0), (512, 0), (600, 1), (1024, 1), (2048, 2), (4096, 3)]
)
def test_stem_blocks_follow_the_published_sizes(size, blocks):
    assert stem_blocks(size) == blocks


def test_stem_halves_the_input_per_block():
    model = build_model(ModelArgs("small_vgg_bn", 2, stem_blocks=2)).eval()
    x = torch.randint(0, 256, (1, 1, 128, 96), dtype=torch.uint8)
    with torch.no_grad():
        assert model.stem((x.float() - model.mean) / model.std).shape == (1, 3, 32, 24)
        assert model(x).shape == (1, 2)
