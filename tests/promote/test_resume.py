"""A promotion whose driver is killed outright (SIGKILL, with the local Ray it started)
resumes with `mammotune promote EXP --resume`: finished trials are kept, not trained again,
and the promotion ends with one test look."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import fsspec
import pytest

from tests.conftest import finished_and_one_halfway, trial_rows
from tuner.cli import main
from tuner.results.ledger import read_ledger

pytestmark = pytest.mark.slow
FS = fsspec.filesystem("file")
EPOCHS = 4


def test_promotion_resumes_after_the_driver_is_killed(experiment, tmp_path, capsys):
    exp = tmp_path / "exp"
    shutil.copytree(experiment, exp)
    (exp / "test_ledger.json").unlink(missing_ok=True)
    command = [sys.executable, "-m", "tuner", "promote", str(exp), "--top", "1"]
    command += ["--folds", "2", "--seeds", "2", "--set", f"epochs={EPOCHS}"]
    command += ["--resamples", "100"]
    cv = exp / "promotions" / "p1" / "cv"
    log = (tmp_path / "driver.log").open("w")
    env = os.environ | {"TUNE_GLOBAL_CHECKPOINT_S": "1"}
    driver = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
    )
    finished: set[str] = set()
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and driver.poll() is None:
            finished = finished_and_one_halfway(FS, str(cv)) or set()
            if finished:
                break
            time.sleep(0.2)
        assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        assert finished, "no trial finished within the time limit"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    assert not (exp / "promotions" / "p1" / "promotion.json").exists()
    assert read_ledger(str(exp)) == []

    capsys.readouterr()
    assert main(["promote", str(exp), "--resume"]) == 0, capsys.readouterr().err
    promotion = json.loads((exp / "promotions" / "p1" / "promotion.json").read_text())
    after = {name: len(rows) for name, rows in trial_rows(FS, str(cv)).items()}
    assert len(after) == 4 and all(n >= EPOCHS for n in after.values()), after
    for name in finished:  # finished before the kill: kept, not trained again
        assert after[name] == EPOCHS, after
    assert all(c["state"] == "TERMINATED" for c in promotion["cells"])
    assert promotion["ranking"][0]["oof_covers_train_val_once"]
    assert [look["what"] for look in read_ledger(str(exp))] == ["promote p1"]
    # Nothing is left to resume.
    assert main(["promote", str(exp), "--resume"]) == 2
