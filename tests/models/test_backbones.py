import pytest
import torch
import torchvision

from tuner.errors import UserError
from tuner.models import ModelArgs, build_model, get_spec, list_backbones
from tuner.models.weights import imagenet_filename


@pytest.mark.parametrize("name", list_backbones())
def test_every_registered_backbone_builds_and_runs_forward(name):
    size = max(get_spec(name).min_size, 32)
    model = build_model(ModelArgs(name, num_classes=2, dropout=0.3)).eval()
    tiles = torch.randint(0, 256, (2, 1, size, size), dtype=torch.uint8)
    with torch.no_grad():
        logits = model(tiles)
    assert logits.shape == (2, 2)
    assert torch.isfinite(logits).all()


def test_the_five_published_backbones_are_registered():
    published = {n for n in list_backbones() if get_spec(n).published}
    assert published == {"vgg19", "resnet50", "inception_v3", "densenet121", "mobilenet_v2"}


def test_unknown_backbone_suggests_a_close_name():
    with pytest.raises(UserError, match=r"did you mean 'resnet50'"):
        build_model(ModelArgs("resnet5", num_classes=2))


@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
def test_imagenet_weights_come_from_the_given_folder(tmp_path, name):
    """The loaded tensors are the ones in the file (a locally made stand-in for ImageNet)."""
    torch.manual_seed(0)
    reference = torchvision.models.get_model(name, weights=None)
    state = reference.state_dict()
    if name == "densenet121":
        # torchvision's published DenseNet files use the old key names; write those.
        for new_key, old_key in (
            (".norm1.", ".norm.1."),
            (".conv1.", ".conv.1."),
            (".norm2.", ".norm.2."),
            (".conv2.", ".conv.2."),
        ):
            state = {k.replace(new_key, old_key): v for k, v in state.items()}
    torch.save(state, tmp_path / imagenet_filename(name))

    model = build_model(
        ModelArgs(name, num_classes=2), transfer="imagenet", weights_dir=str(tmp_path)
    )
    ours = dict(model.backbone.named_parameters())
    theirs = dict(reference.named_parameters())
    shared = [k for k in theirs if k in ours and ours[k].shape == theirs[k].shape]
    assert len(shared) > 10
    for key in shared:
        assert torch.equal(ours[key], theirs[key]), key
    # The RGB stem became one greyscale channel: the sum of the three filters.
    stem = "conv1.weight" if name == "resnet18" else "features.conv0.weight"
    assert torch.allclose(ours[stem], theirs[stem].sum(dim=1, keepdim=True))


def test_missing_imagenet_weights_are_a_user_error(tmp_path):
    with pytest.raises(UserError, match="mobilenet_v2-7ebf99e0.pth"):
        build_model(ModelArgs("mobilenet_v2", 2), transfer="imagenet", weights_dir=str(tmp_path))
    with pytest.raises(UserError, match="--weights"):
        build_model(ModelArgs("mobilenet_v2", 2), transfer="imagenet")
    with pytest.raises(UserError, match="no ImageNet weights"):
        build_model(ModelArgs("small_vgg_bn", 2), transfer="imagenet", weights_dir=str(tmp_path))
    with pytest.raises(UserError, match="unknown transfer"):
        build_model(ModelArgs("small_vgg_bn", 2), transfer="minimias")
