"""Synthetic datasets in the layouts of the real downloads, with a seed.

They exist so that every stage can run, and be tested, on a machine with no network and no
access to the real collections: ``cbis-ddsm`` writes DICOM files and the four CSVs with the
real quirks (``layout="csv"`` or ``"archive"``), or the community JPEG edition
(``"jpeg-edition"``), see ``_synth_cbis``; ``mini-mias`` writes PGM files and Info.txt (see
``_synth_mias``). Lesions carry the published radiological cues
(``_phantom``), and ``difficulty`` says how subtle they are. Equal params give byte-identical
files; writing them again into the same folder does nothing.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

from tuner import storage
from tuner.data import _synth_cbis, _synth_mias
from tuner.errors import UserError, unknown_choice

__all__ = ["FORMATS", "LAYOUTS", "SynthParams", "synthesize"]

MARKER = "synth.json"
FORMATS = {"cbis-ddsm": _synth_cbis, "mini-mias": _synth_mias}
LAYOUTS = ("csv", "archive", "jpeg-edition")


@dataclass(frozen=True)
class SynthParams:
    """What a synthetic dataset is made from; equal params give byte-identical files."""

    patients: int = 200
    seed: int = 0
    difficulty: float = 0.5
    scale: float = 0.25  # CBIS-DDSM: fraction of real resolution (~50 um/pixel)
    test_fraction: float = 0.2  # CBIS-DDSM: patients in the official test files
    malignant_fraction: float = 0.42
    format: str = "cbis-ddsm"
    # CBIS-DDSM: "csv" (the CSVs' own paths), "archive" (a TCIA download) or "jpeg-edition"
    layout: str = "csv"
    # CBIS-DDSM: the fraction of findings of two-view breasts that are seen in one view only
    # (occult in the other, still listed and masked for both, as for a lesion known from the
    # other view); 0 keeps every dataset of earlier versions byte-identical.
    one_view_fraction: float = 0.0

    def validate(self) -> None:
        if self.format not in FORMATS:
            raise UserError(unknown_choice("format", self.format, FORMATS))
        if self.layout not in LAYOUTS:
            raise UserError(unknown_choice("layout", self.layout, LAYOUTS))
        if self.patients < 10:
            raise UserError(f"--patients {self.patients} is too few; use at least 10")
        if not 0.0 <= self.difficulty <= 1.0:
            raise UserError(f"--difficulty {self.difficulty} is out of range; use 0.0 to 1.0")
        if self.one_view_fraction and self.format != "cbis-ddsm":
            raise UserError(
                "--one-view-fraction is for --format cbis-ddsm (mini-MIAS has MLO views only)"
            )
        if not 0.0 <= self.one_view_fraction <= 1.0:
            raise UserError(
                f"--one-view-fraction {self.one_view_fraction} is out of range; use 0.0 to 1.0"
            )
        if not 0.05 <= self.scale <= 1.0:
            raise UserError(f"--scale {self.scale} is out of range; use 0.05 to 1.0")


@contextlib.contextmanager
def _main_script_hidden():
    """Keep spawned workers from running the caller's script again.

    A spawned process imports the parent's ``__main__`` script before it runs any task:
    a user's script that calls :func:`synthesize` without an ``if __name__ == "__main__":``
    guard would then run again, top to bottom, in every worker (and fail). The workers
    need tuner's own functions only, so the script is hidden from multiprocessing while
    they start.
    """
    main = sys.modules.get("__main__")
    saved = {name: getattr(main, name) for name in ("__file__", "__spec__") if hasattr(main, name)}
    try:
        if "__file__" in saved:
            del main.__file__
        if "__spec__" in saved:
            main.__spec__ = None
        yield
    finally:
        for name, value in saved.items():
            setattr(main, name, value)


def synthesize(
    out: str, params: SynthParams = SynthParams(), *, workers: int | None = None, progress=None
) -> dict:
    """Write a synthetic dataset to ``out`` (a local path or URL).

    Args:
        workers: processes to render with (default: one per CPU core).
        progress: optional callable ``(done, total)`` called as images are written.

    Returns:
        The summary stored in ``out/synth.json``: params, counts, seconds taken; with
        ``"reused": True`` when ``out`` already held exactly this dataset.

    Raises:
        UserError: bad params, or ``out`` already holds something else.
    """
    params.validate()
    out = storage.normalize(out)
    storage.check_location(out)
    fs, path = storage.filesystem(out)
    marker = storage.join(out, MARKER)
    if fs.exists(path) and fs.ls(path):
        if storage.exists(marker):
            summary = storage.read_json(marker)
            # Settings added since it was written take their defaults, as it was made with.
            if {**asdict(SynthParams()), **(summary.get("params") or {})} == asdict(params):
                return {**summary, "reused": True}
            raise UserError(
                f"{out} already holds a synthetic dataset made with other settings "
                f"({summary.get('params')}); choose another folder"
            )
        raise UserError(f"{out} is not empty; choose a new or empty folder for the dataset")

    started = time.perf_counter()
    writer = FORMATS[params.format]
    jobs = [(params, item, out) for item in writer.plan(params)]
    workers = workers or os.cpu_count() or 1
    rows: list = []
    if workers > 1 and len(jobs) > 8 and not storage.is_process_local(out):
        # spawn: safe whatever threads the parent runs (rich, Ray); each child imports once.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            with _main_script_hidden():  # the workers start while map submits the jobs
                rendered = pool.map(writer.render, jobs, chunksize=4)
            for done, item_rows in enumerate(rendered, 1):
                rows.extend(item_rows)
                if progress:
                    progress(done, len(jobs))
    else:
        for done, job in enumerate(jobs, 1):
            rows.extend(writer.render(job))
            if progress:
                progress(done, len(jobs))
    counts = writer.finish(out, rows)
    summary = {
        "params": asdict(params),
        **counts,
        "seconds": round(time.perf_counter() - started, 1),
    }
    storage.write_json(marker, summary)  # written last: the dataset is complete
    return summary
