"""A real promotion of the session's tiny search, on a copy of its experiment (so that the
test ledger's looks are this module's own)."""

import json
import shutil

import pytest

from tuner.cli import main

# 2 candidates x 2 folds x 2 seeds = 8 trials of 2 epochs (about 2 minutes on 2 CPUs).
PROMOTE = ["--top", "2", "--folds", "2", "--seeds", "2", "--set", "epochs=2"]
PROMOTE += ["--resamples", "200"]


@pytest.fixture(scope="session")
def promoted(experiment, tmp_path_factory):
    """(experiment copy, promotion.json) of ``promote EXP`` with :data:`PROMOTE`."""
    copy = tmp_path_factory.mktemp("promoted") / "exp"
    shutil.copytree(experiment, copy)
    (copy / "test_ledger.json").unlink(missing_ok=True)
    assert main(["promote", str(copy), *PROMOTE, "--json"]) == 0
    promotion = json.loads((copy / "promotions" / "p1" / "promotion.json").read_text())
    return copy, promotion
