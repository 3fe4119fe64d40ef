"""The readers of what Tune keeps in an experiment folder while a search runs: on a local or
mounted folder Tune rewrites its snapshot and each trial's result.json in place, so a reader
may catch them half written."""

import shutil
import threading

import fsspec
import pytest

from tuner.search.experiment import trial_results, trial_states

FS = fsspec.filesystem("file")


@pytest.fixture
def copy(experiment, tmp_path):
    folder = tmp_path / "exp"
    shutil.copytree(experiment, folder)
    return folder


def test_a_result_file_caught_half_written_gives_its_complete_epochs(copy):
    trial = next(copy.glob("trial_*"))
    whole = trial_results(FS, str(trial))
    assert len(whole) >= 2
    text = (trial / "result.json").read_text()
    (trial / "result.json").write_text(text[: len(text) - 40])  # into the last line
    assert trial_results(FS, str(trial)) == whole[:-1]


def test_a_snapshot_caught_half_written_is_read_again_once_rewritten(copy):
    snapshot = next(copy.glob("experiment_state-*.json"))
    whole = trial_states(FS, str(copy))
    assert whole and all(status == "TERMINATED" for status, _ in whole.values())
    text = snapshot.read_text()
    snapshot.write_text(text[: len(text) // 2])
    rewrite = threading.Timer(0.2, snapshot.write_text, args=(text,))
    rewrite.start()
    try:
        assert trial_states(FS, str(copy)) == whole
    finally:
        rewrite.join()


def test_a_snapshot_that_stays_broken_is_named(copy):
    snapshot = next(copy.glob("experiment_state-*.json"))
    snapshot.write_text(snapshot.read_text()[:100])
    with pytest.raises(ValueError, match=f"{snapshot.name} is not valid JSON"):
        trial_states(FS, str(copy))
