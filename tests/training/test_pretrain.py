"""`mammotune pretrain-mias` trains the published degree (a)/(b) source models on a real
(synthetic) mini-MIAS dataset from locally made ImageNet stand-ins, and `weights fetch`
checks what it downloads."""

import functools
import http.server
import threading

import pytest
import torch
import torchvision

from tests.conftest import prepare_params
from tuner.cli import main
from tuner.data.prepare import prepare
from tuner.data.synthetic import SynthParams, synthesize
from tuner.models.weights import imagenet_filename, mias_checkpoint
from tuner.training.checkpoint import load_checkpoint, read_meta

BACKBONE = "resnet18"


@pytest.fixture(scope="module")
def mias_dataset(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("mias")
    synthesize(str(root / "src"), SynthParams(format="mini-mias", patients=60, seed=4), workers=1)
    params = prepare_params(views=("whole",), whole_sizes=(64,), val_fraction=0.3)
    prepare(str(root / "src"), str(root / "ds"), params)
    return root / "ds"


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(5)
    state = torchvision.models.get_model(BACKBONE, weights=None).state_dict()
    torch.save(state, tmp_path / imagenet_filename(BACKBONE))
    return tmp_path, state


def test_pretrain_mias_stores_a_frozen_backbone_head_stage_and_a_fine_tuned_all_stage(
    mias_dataset, weights, capsys
):
    folder, imagenet = weights
    command = ["pretrain-mias", "--data", str(mias_dataset), "--weights", str(folder)]
    command += ["--backbones", BACKBONE, "--size", "64", "--head-epochs", "1", "--all-epochs", "1"]
    assert main(command) == 0
    out = capsys.readouterr().out
    assert "resnet18 head epoch 1/2" in out and "resnet18 all epoch 2/2" in out

    head, head_meta, _ = load_checkpoint(mias_checkpoint(str(folder), BACKBONE, "head"))
    full, full_meta, _ = load_checkpoint(mias_checkpoint(str(folder), BACKBONE, "all"))
    assert (head_meta["stage"], full_meta["stage"]) == ("head", "all")
    assert head_meta["task"]["name"] == "benign_vs_malignant"
    # Head stage: the backbone is the ImageNet file's, untouched (batch-norm statistics too).
    own = head.backbone.state_dict()
    for key in ("layer4.1.conv2.weight", "layer4.1.bn2.running_mean", "layer1.0.bn1.weight"):
        assert torch.equal(own[key], imagenet[key]), key
    # All stage: every layer moved on.
    assert not torch.equal(
        full.backbone.state_dict()["layer4.1.conv2.weight"], imagenet["layer4.1.conv2.weight"]
    )
    # Never overwritten: a second run keeps what is there (and trains nothing).
    before = read_meta(mias_checkpoint(str(folder), BACKBONE, "all"))
    assert main(command) == 0
    assert "kept as they are" in capsys.readouterr().out
    assert read_meta(mias_checkpoint(str(folder), BACKBONE, "all")) == before
    # A half-written backbone (interrupted between stages) is named, not overwritten.
    import shutil

    shutil.rmtree(mias_checkpoint(str(folder), BACKBONE, "all"))
    assert main(command) == 2
    assert "interrupted run" in capsys.readouterr().err


def test_pretrain_mias_checks_the_input_size_per_backbone(mias_dataset, weights, capsys):
    folder, _ = weights
    code = main(
        ["pretrain-mias", "--data", str(mias_dataset), "--weights", str(folder)]
        + ["--backbones", "inception_v3", "--size", "64"]
    )
    assert code == 2
    assert "inception_v3 needs inputs of at least 75 px" in capsys.readouterr().err


def test_pretrain_mias_refuses_a_cbis_ddsm_dataset(prepared, weights, capsys):
    folder, _ = weights
    code = main(
        ["pretrain-mias", "--data", str(prepared), "--weights", str(folder)]
        + ["--backbones", BACKBONE, "--size", "64"]
    )
    assert code == 2
    assert "not mini-MIAS" in capsys.readouterr().err


@pytest.fixture
def mirror(tmp_path):
    """A real HTTP server on loopback serving a folder, as a weights mirror."""
    root = tmp_path / "mirror"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_weights_fetch_checks_the_hash_in_the_file_name(mirror, tmp_path, capsys):
    root, url = mirror
    (root / imagenet_filename(BACKBONE)).write_bytes(b"not the real weights")
    dest = tmp_path / "weights"
    code = main(["weights", "fetch", str(dest), "--backbones", BACKBONE, "--base-url", url])
    assert code == 2
    assert "does not match its name" in capsys.readouterr().err
    assert not (dest / imagenet_filename(BACKBONE)).exists()

    code = main(["weights", "fetch", str(dest), "--backbones", "small_vgg_bn", "--base-url", url])
    assert code == 2 and "has no ImageNet weights" in capsys.readouterr().err
    code = main(["weights", "fetch", str(dest), "--backbones", "resnet50", "--base-url", url])
    assert code == 2 and "cannot download" in capsys.readouterr().err


def test_weights_fetch_keeps_what_is_there(tmp_path, capsys):
    (tmp_path / imagenet_filename(BACKBONE)).write_bytes(b"kept")
    assert main(["weights", "fetch", str(tmp_path), "--backbones", BACKBONE]) == 0
    assert "already there" in capsys.readouterr().out
    assert (tmp_path / imagenet_filename(BACKBONE)).read_bytes() == b"kept"
