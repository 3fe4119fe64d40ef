"""Shared fixtures: small synthetic datasets, a prepared dataset, an in-process Ray cluster
and a real S3-protocol server on loopback (moto's standalone server) — all real, all local,
nothing downloaded."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import tuner  # noqa: F401  (sets RAY_USAGE_STATS_ENABLED=0, NO_ALBUMENTATIONS_UPDATE=1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REPO = Path(__file__).resolve().parents[1]

# Small enough to prepare in seconds, large enough that every split has both classes and a
# small network learns the task at 48 px in a few CPU epochs (32 px is too coarse to learn).
SYNTH = dict(patients=80, seed=7, difficulty=0.2, scale=0.25)
SIZES = (32, 48)
WHOLE_SIZES = (64,)
CONTEXT_PX = 150


# infra/local/stack.py is a script, not part of the package: loaded from its file.
_spec = importlib.util.spec_from_file_location("stack", REPO / "infra" / "local" / "stack.py")
stack_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stack_module)
# Ports for servers from below the ephemeral range, where no outgoing connection takes them
# between the choice and the server's start.
free_port = stack_module.free_port


# The S3 endpoint and test credentials are set before anything starts Ray, so that Ray
# workers inherit them, as they would inherit a user's environment. Child processes that
# import this module again (spawned readers) keep their parent's port.
S3_PORT = int(os.environ.setdefault("MAMMOTUNE_TEST_S3_PORT", str(free_port())))
os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{S3_PORT}"
os.environ["AWS_ACCESS_KEY_ID"] = "mammotune-test"
os.environ["AWS_SECRET_ACCESS_KEY"] = "mammotune-test-secret"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ.pop("AWS_PROFILE", None)
# Shard caches of this session in its own folder, not the user's.
os.environ.setdefault(
    "MAMMOTUNE_CACHE_DIR",
    str(Path(os.environ.get("TMPDIR", "/tmp")) / f"mammotune-test-cache-{os.getpid()}"),
)


def start_moto(port: int, log: Path, env: dict | None = None) -> subprocess.Popen:
    """moto's standalone S3 server on loopback; returns once it answers."""
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
            return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"moto server did not start: {log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """The S3-protocol server every s3:// URL of the session goes to; yields its log file."""
    log = tmp_path_factory.mktemp("moto") / "server.log"
    process = start_moto(S3_PORT, log)
    yield log
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def bucket(s3_server, request):
    """A fresh bucket on the loopback S3 server: ``s3://<name>``."""
    import fsspec

    name = (
        "t-" + request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[:40]
    )
    fs = fsspec.filesystem("s3")
    if not fs.exists(name):
        fs.mkdir(name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server on loopback (Debian's package), a generated password, a
    database for Optuna studies; clients get the password as PGPASSWORD."""
    from tests.servers import PostgresServer

    server = PostgresServer(free_port()).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real CBIS-DDSM/mini-MIAS metadata not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_local():
    """A real in-process Ray cluster with the machine's 2 CPUs, shut down at the end."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def synthetic_source(tmp_path_factory) -> Path:
    from tuner.data.synthetic import SynthParams, synthesize

    out = tmp_path_factory.mktemp("synth") / "cbis-ddsm"
    synthesize(str(out), SynthParams(**SYNTH))
    return out


def prepare_params(**overrides):
    from tuner.data.prepare import PrepareParams

    options = dict(
        views=("roi", "whole"),
        sizes=SIZES,
        whole_sizes=WHOLE_SIZES,
        context_px=CONTEXT_PX,
        train_variants=3,
        val_fraction=0.25,
    )
    return PrepareParams(**{**options, **overrides})


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, synthetic_source, ray_local) -> Path:
    from tuner.data.prepare import prepare

    out = tmp_path_factory.mktemp("prepared") / "dataset"
    prepare(str(synthetic_source), str(out), prepare_params())
    return out


TINY = REPO / "tests" / "search" / "tiny.yaml"


@pytest.fixture(scope="session")
def experiment(prepared, ray_local, tmp_path_factory) -> Path:
    """A real 3-trial search (tests/search/tiny.yaml) on the prepared dataset."""
    from tuner.cli import main

    exp = tmp_path_factory.mktemp("experiments") / "tiny"
    code = main(["search", "--space", str(TINY), "--data", str(prepared), "--storage", str(exp)])
    assert code == 0
    return exp


# A real promotion of the session's tiny search, on a copy of its experiment (so that the
# test ledger's looks are the promotion's own): 2 candidates x 2 folds x 2 seeds = 8 trials
# of 1 epoch (about a minute on 2 CPUs), shared by the promote and results tests.
PROMOTE = ["--top", "2", "--folds", "2", "--seeds", "2", "--set", "epochs=1"]
PROMOTE += ["--resamples", "200"]


@pytest.fixture(scope="session")
def promoted(experiment, tmp_path_factory):
    """(experiment copy, promotion.json) of ``promote EXP`` with :data:`PROMOTE`."""
    import json
    import shutil

    from tuner.cli import main

    copy = tmp_path_factory.mktemp("promoted") / "exp"
    shutil.copytree(experiment, copy)
    (copy / "test_ledger.json").unlink(missing_ok=True)
    assert main(["promote", str(copy), *PROMOTE, "--json"]) == 0
    promotion = json.loads((copy / "promotions" / "p1" / "promotion.json").read_text())
    return copy, promotion


def trial_rows(fs, path: str) -> dict[str, list[dict]]:
    """Each trial folder's reported epochs (Tune's result.json), by folder name; ``path`` is
    a folder or URL on ``fs``."""
    from tuner.search.experiment import trial_results

    path = path.split("://", 1)[-1]
    return {f.rsplit("/", 1)[-1]: trial_results(fs, f) for f in fs.glob(f"{path}/trial_*")}


def _checkpoint_names(fs, folder: str) -> set[str]:
    return {p.rsplit("/", 1)[-1] for p in fs.glob(f"{folder}/checkpoint_*")}


def lost_checkpoints(fs, path: str) -> dict[str, list[str]]:
    """Checkpoints gone from the trials that Tune's newest snapshot does not record as
    finished: each reported epoch names its checkpoint, and a resume may need any of them."""
    from tuner.search.experiment import trial_states

    path = path.split("://", 1)[-1]
    states = trial_states(fs, path)
    lost = {}
    for name, rows in trial_rows(fs, path).items():
        if states.get(name.removeprefix("trial_"), ("",))[0] == "TERMINATED":
            continue
        reported = {row["checkpoint_dir_name"] for row in rows if row.get("checkpoint_dir_name")}
        missing = sorted(reported - _checkpoint_names(fs, f"{path}/{name}"))
        if missing:
            lost[name] = missing
    return lost


def retention_errors(fs, path: str, metric: str, mode: str, keep: int) -> dict[str, tuple]:
    """Finished trials whose checkpoints on storage are not their ``keep`` best by the
    metric plus their latest, as their reported epochs rank them: name -> (expected, kept)."""
    from tuner.search.experiment import trial_states

    path = path.split("://", 1)[-1]
    states = trial_states(fs, path)
    errors = {}
    for name, rows in trial_rows(fs, path).items():
        if states.get(name.removeprefix("trial_"), ("",))[0] != "TERMINATED" or not rows:
            continue
        # An epoch run again after a resume rewrote its checkpoint: its last report counts.
        last = {row["checkpoint_dir_name"]: row[metric] for row in rows}
        ranked = sorted(last, key=lambda c: -last[c] if mode == "max" else last[c])
        expected = set(ranked[:keep]) | {rows[-1]["checkpoint_dir_name"]}
        kept = _checkpoint_names(fs, f"{path}/{name}")
        if kept != expected:
            errors[name] = (sorted(expected), sorted(kept))
    return errors


def finished_and_one_halfway(fs, path: str) -> set[str] | None:
    """The trials Tune's newest snapshot records as finished, once there is one and another
    trial that it does not record as finished has reported two epochs or more (checkpoints
    that a resume may need): the state the driver-kill tests kill at."""
    from tuner.search.experiment import trial_states

    path = path.split("://", 1)[-1]
    states = trial_states(fs, path)
    finished = {f"trial_{t}" for t, (status, _) in states.items() if status == "TERMINATED"}
    halfway = [
        n for n, rows in trial_rows(fs, path).items() if n not in finished and len(rows) >= 2
    ]
    return finished if finished and halfway else None
