"""The live trial table a search shows on a terminal, and its one-line summaries elsewhere."""

import io
import pickle

from rich.console import Console

from tests.conftest import TINY
from tuner.config import apply_overrides, load_space
from tuner.search.callbacks import TrialTable
from tuner.search.runner import plan_search, run_search


def test_a_terminal_gets_a_live_table_of_the_trials(prepared, ray_local, tmp_path):
    space = apply_overrides(load_space(TINY), {"trials": 2, "epochs": 1}, str(TINY))
    plan = plan_search(
        space, space_file=str(TINY), data=str(prepared), experiment=str(tmp_path / "e")
    )
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=200, color_system=None)
    results = run_search(plan, console=terminal)
    assert not results.errors
    text = screen.getvalue()
    for heading in (
        "trial",
        "status",
        "node",
        "failures",
        "backbone",
        "epoch",
        "val_roc_auc",
        "img/s",
        "data wait",
    ):
        assert heading in text, heading
    for result in results:
        assert result.metrics["trial_id"] in text
        assert result.metrics["node_id"][:8] in text  # the node that ran it
        assert 0 <= result.metrics["data_wait_share"] <= 1
    assert "e: 2 finished; best val_roc_auc" in text  # the table's title at the end


def test_the_table_survives_tunes_pickling_with_a_fresh_console():
    table = TrialTable(Console(file=io.StringIO()), "exp", "val_roc_auc", "max", ["backbone"])
    table.best, table.best_trial = 0.9, "abc"
    copy = pickle.loads(pickle.dumps(table))  # Tune stores callbacks in tuner.pkl
    assert copy.console is not table.console and copy.live is None
    assert (copy.best, copy.best_trial, copy.columns) == (0.9, "abc", ["backbone"])
