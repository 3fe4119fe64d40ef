import pytest
import torch

from tuner.cli import main
from tuner.errors import UserError
from tuner.models import ModelArgs, build_model
from tuner.training.checkpoint import STATE, load_checkpoint, read_meta, save_checkpoint


def test_checkpoint_rebuilds_the_exact_model(tmp_path):
    torch.manual_seed(1)
    model = build_model(ModelArgs("small_vgg_bn", num_classes=2, dropout=0.4)).eval()
    optimizer = torch.optim.Adam(model.parameters())
    tiles = torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8)
    model.train()
    model(tiles).sum().backward()
    optimizer.step()
    model.eval()
    save_checkpoint(
        str(tmp_path),
        model=model,
        optimizer=optimizer,
        meta={"epoch": 3, "metrics": {"val_roc_auc": 0.7}},
    )

    loaded, meta, state = load_checkpoint(str(tmp_path))
    assert meta["epoch"] == 3 and meta["model_args"]["dropout"] == 0.4
    assert "optimizer" in state
    with torch.no_grad():
        assert torch.equal(loaded(tiles), model(tiles))


class Payload:
    """Pickled code: loading it with plain pickle would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickled_payload_in_a_checkpoint_is_refused_and_never_runs(tmp_path):
    model = build_model(ModelArgs("small_vgg_bn", num_classes=2))
    checkpoint = tmp_path / "checkpoint"
    save_checkpoint(str(checkpoint), model=model, optimizer=None, meta={})
    marker = tmp_path / "payload-ran"
    torch.save({"model": Payload(marker)}, checkpoint / STATE)  # a planted payload
    with pytest.raises(UserError, match="not a plain state dict and was not loaded"):
        load_checkpoint(str(checkpoint))
    # The command line: one clear line, exit code 2, and the payload never ran.
    image = tmp_path / "image.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(image), np.zeros((64, 64), np.uint8))
    code = main(["predict", str(checkpoint), str(image)])
    assert code == 2
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickled_payload_in_imagenet_weights_is_refused(tmp_path):
    from torchvision.models import get_model_weights

    from tuner.models.weights import load_imagenet_state

    name = get_model_weights("mobilenet_v2").DEFAULT.url.rsplit("/", 1)[-1]
    marker = tmp_path / "payload-ran"
    torch.save({"features.0.0.weight": Payload(marker)}, tmp_path / name)
    with pytest.raises(UserError, match="weights_only refused"):
        load_imagenet_state("mobilenet_v2", str(tmp_path))
    assert not marker.exists()


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(UserError, match="not a mammotune checkpoint"):
        read_meta(str(tmp_path))
