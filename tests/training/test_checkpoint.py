import pickle

import pytest
import torch

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
    def __reduce__(self):
        return (print, ("this ran while loading",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickled_payload_is_refused(tmp_path):
    model = build_model(ModelArgs("small_vgg_bn", num_classes=2))
    save_checkpoint(str(tmp_path), model=model, optimizer=None, meta={})
    with open(tmp_path / STATE, "wb") as f:
        pickle.dump({"model": Payload()}, f)
    with pytest.raises(UserError, match="not a plain state dict"):
        load_checkpoint(str(tmp_path))


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(UserError, match="not a mammotune checkpoint"):
        read_meta(str(tmp_path))
