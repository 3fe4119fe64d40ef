"""The published divide-and-conquer space, end to end at reduced scale on CPU: whole images
at two sizes (the larger through a stem block), both enhancements, all four transfer degrees
(from locally made ImageNet stand-ins and a mini-MIAS model trained here), two-phase
training, ASHA, then evaluate on the test split."""

import json

import torch
import torchvision

from tests.conftest import prepare_params
from tuner.cli import main
from tuner.data.prepare import prepare
from tuner.data.synthetic import SynthParams, synthesize
from tuner.models.weights import imagenet_filename
from tuner.training.checkpoint import read_meta

BACKBONE = "mobilenet_v2"
REDUCED = [
    *("--trials", "4"),
    *("--set", f"backbone=[{BACKBONE}]"),
    *("--set", "input_size=[48,96]"),
    *("--set", "max_backbone_size=48"),  # as 512 is to 1024: 96 px gets one stem block
    *("--set", "epochs=3"),
    *("--set", "batch_size=16"),
    *("--set", "patience=2"),
    *("--set", "max_concurrent=2"),
    *("--set", "sampler.n_startup_trials=4"),
    *("--set", "scheduler.grace_period=2"),
    *("--cpus-per-trial", "1", "--gpus-per-trial", "0"),
]


def test_divide_and_conquer_at_reduced_scale(synthetic_source, ray_local, tmp_path, capsys):
    data = tmp_path / "whole"
    params = prepare_params(views=("whole",), whole_sizes=(48, 96), enhance=("none", "equalize"))
    prepare(str(synthetic_source), str(data), params)
    synthesize(str(tmp_path / "mias-src"), SynthParams(format="mini-mias", patients=60, seed=4))
    mias = tmp_path / "mias"
    prepare(
        str(tmp_path / "mias-src"),
        str(mias),
        prepare_params(views=("whole",), whole_sizes=(64,), val_fraction=0.3),
    )

    weights = tmp_path / "weights"
    weights.mkdir()
    torch.manual_seed(0)  # an offline stand-in for torchvision's ImageNet file
    state = torchvision.models.get_model(BACKBONE, weights=None).state_dict()
    torch.save(state, weights / imagenet_filename(BACKBONE))
    assert (
        main(
            [
                "pretrain-mias",
                "--data",
                str(mias),
                "--weights",
                str(weights),
                "--backbones",
                BACKBONE,
            ]
            + ["--size", "64", "--head-epochs", "1", "--all-epochs", "1"]
        )
        == 0
    )

    experiment = tmp_path / "exp"
    code = main(
        ["search", "--space", "divide_and_conquer", "--data", str(data)]
        + ["--storage", str(experiment), "--weights", str(weights), *REDUCED]
    )
    assert code == 0
    capsys.readouterr()
    assert main(["best", str(experiment), "--json"]) == 0
    board = json.loads(capsys.readouterr().out)
    assert len(board["trials"]) == 4
    assert board["dimensions"][:5] == [
        "backbone",
        "class_weight",
        "dropout",
        "input_size",
        "transfer",
    ]
    assert all(t["status"] in ("done", "stopped") for t in board["trials"]), board["trials"]
    for trial in board["trials"]:
        config = trial["config"]
        assert config["transfer"] in ("mias_all", "imagenet_mias_head", "imagenet", "random")
        assert config["enhance"] in ("none", "equalize")
        assert ("head_epochs" in config) == (config["transfer"] != "random")
        meta = read_meta(trial["checkpoint"])
        assert meta["model_args"]["stem_blocks"] == (1 if config["input_size"] == 96 else 0)
        assert meta["config"]["view"] == "whole"
        # single or two-view (the CC and MLO of one breast through one backbone)
        assert meta["model_args"]["fusion"] == config["fusion"] in ("single", "two_view")
    assert main(["evaluate", str(experiment), "--data", str(data), "--resamples", "100"]) == 0
    assert "per_breast" in capsys.readouterr().out
