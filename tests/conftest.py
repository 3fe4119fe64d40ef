"""Shared fixtures: one small synthetic CBIS-DDSM download, one prepared dataset and one
in-process Ray cluster per test session (all real, all local, nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

import tuner  # noqa: F401  (sets RAY_USAGE_STATS_ENABLED=0, NO_ALBUMENTATIONS_UPDATE=1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REPO = Path(__file__).resolve().parents[1]

# Small enough to prepare in seconds, large enough that every split has both classes and a
# small network learns the task at 48 px in a few CPU epochs (32 px is too coarse to learn).
SYNTH = dict(patients=80, seed=7, difficulty=0.2, scale=0.25)
SIZES = (32, 48)
CONTEXT_PX = 150


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


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, synthetic_source, ray_local) -> Path:
    from tuner.data.prepare import PrepareParams, prepare

    out = tmp_path_factory.mktemp("prepared") / "dataset"
    prepare(
        str(synthetic_source),
        str(out),
        PrepareParams(sizes=SIZES, context_px=CONTEXT_PX, train_variants=3, val_fraction=0.25),
    )
    return out
