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


def test_a_taken_name_is_refused_and_the_first_registration_kept():
    from tuner.models.backbones import register_backbone

    before = get_spec("resnet18")
    with pytest.raises(UserError, match="already registered"):

        @register_backbone("resnet18")
        def _impostor(state_dict, in_chans):
            raise AssertionError("never built")

    assert get_spec("resnet18") is before


@pytest.mark.parametrize("name", [n for n in list_backbones() if get_spec(n).imagenet])
def test_registered_weights_metadata_matches_torchvision(name):
    """The registry's file name, URL and normalisation agree with torchvision's DEFAULT
    weights, and a model built for the backbone carries that normalisation."""
    spec = get_spec(name)
    weights = torchvision.models.get_model_weights(name).DEFAULT
    assert spec.weights_url == weights.url
    assert spec.weights_file == imagenet_filename(name)
    transform = weights.transforms()
    assert spec.mean == pytest.approx(sum(transform.mean) / 3, abs=1e-3)
    assert spec.std == pytest.approx(sum(transform.std) / 3, abs=1e-3)
    args = ModelArgs(name, num_classes=2)
    assert (args.mean, args.std) == (spec.mean, spec.std)


def test_a_backbone_plugin_registers_through_its_entry_point(tmp_path):
    """A package declaring the ``mammotune.backbones`` entry point is loaded by the registry
    in a fresh process (as in a Ray trial worker) and its backbone builds."""
    import subprocess
    import sys

    (tmp_path / "tiny_plugin.py").write_text(
        "from torch import nn\n"
        "from tuner.models.backbones import register_backbone\n\n"
        "@register_backbone('tiny_plugin_cnn', min_size=8, mean=0.5, std=0.25)\n"
        "def build(state_dict, in_chans):\n"
        "    net = nn.Sequential(nn.Conv2d(in_chans, 4, 3), nn.AdaptiveAvgPool2d(1),\n"
        "                        nn.Flatten())\n"
        "    return net, 4\n"
    )
    info = tmp_path / "tiny_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[mammotune.backbones]\ntiny = tiny_plugin\n")
    code = (
        "import torch\n"
        "from tuner.models import ModelArgs, build_model, list_backbones\n"
        "assert 'tiny_plugin_cnn' in list_backbones()\n"
        "model = build_model(ModelArgs('tiny_plugin_cnn', num_classes=2)).eval()\n"
        "assert (model.args.mean, model.args.std) == (0.5, 0.25)\n"
        "print(tuple(model(torch.zeros(1, 1, 16, 16, dtype=torch.uint8)).shape))\n"
    )
    import os

    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "(1, 2)"
