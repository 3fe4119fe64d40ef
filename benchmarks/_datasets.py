"""Synthetic inputs for the benchmarks, made once in a work folder and reused (synth and
prepare are idempotent): full-size CBIS-DDSM DICOMs, and a prepared tile dataset."""

from __future__ import annotations

from pathlib import Path

from tuner.data.prepare import PrepareParams, prepare
from tuner.data.synthetic import SynthParams, synthesize

WORK = Path(__file__).resolve().parent / ".work"


def full_size_source(patients: int, work: Path = WORK, layout: str = "csv") -> Path:
    """CBIS-DDSM-layout DICOMs at real resolution (~5000 x 3000, 16-bit), or with
    ``layout="jpeg-edition"`` the same images as the community JPEG edition (8-bit)."""
    out = work / (f"cbis-full-{patients}" + ("" if layout == "csv" else f"-{layout}"))
    summary = synthesize(
        str(out), SynthParams(patients=patients, seed=11, scale=1.0, layout=layout)
    )
    if not summary.get("reused"):
        print(f"made {summary['images']} full-size {layout} images in {summary['seconds']}s")
    return out


def tile_dataset(patients: int = 200, size: int = 224, work: Path = WORK) -> Path:
    """ROI tiles of ``size`` px from a quarter-resolution synthetic download."""
    source = work / f"cbis-quarter-{patients}"
    synthesize(str(source), SynthParams(patients=patients, seed=12, scale=0.25))
    out = work / f"tiles-{patients}-{size}"
    prepare(str(source), str(out), PrepareParams(sizes=(size,), context_px=150))
    return out
