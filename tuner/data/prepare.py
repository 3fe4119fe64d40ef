"""prepare: a CBIS-DDSM or mini-MIAS source becomes tile shards plus ``manifest.json``.

The images are split into chunks of one split each; Ray Data runs the chunks in parallel
across the cluster, and each chunk writes one content-named shard per tile kind (view,
enhancement, size) and a small record under ``_work/``. The manifest is written last and is
the commit point: a reader never sees a half-written dataset. Re-running with the same
inputs finds the manifest and does nothing; an interrupted run finds the finished chunks'
records and does only the rest. A bad input (unreadable file, missing mask, blank image) is
skipped and listed with its reason; everything good is still prepared. Every tile is made by
``preprocess.model_inputs``, the path predict takes too.

A dataset or source in ``memory://`` lives in this process only, so its chunks run here,
one after another, instead of on Ray workers that could not see it.
"""

from __future__ import annotations

import hashlib
import json
import time
import zlib
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass

import numpy as np

import tuner
from tuner import storage
from tuner.data import limits, preprocess, shards
from tuner.data.records import ROI_FILES_MISSING, Finding, ImageRecord, worst_finding
from tuner.data.sources import open_source, source_class
from tuner.data.splits import SPLITS
from tuner.data.synthetic import MARKER as SYNTH_MARKER
from tuner.errors import UserError, unknown_choice

__all__ = [
    "FORMAT",
    "MANIFEST",
    "VIEWS",
    "PrepareParams",
    "PreparePlan",
    "tile_key",
    "bit_depth",
    "plan_prepare",
    "run_prepare",
    "prepare",
]

FORMAT = "mammotune-dataset/2"
# Bumped when prepare makes other pixels from the same source and params (2: bright border
# strips cut from the breast crop; whole images of findings without ROI files): part of the
# dataset id, so an old dataset or an interrupted old run is never taken for a new one.
PREPROCESSING = 2
MANIFEST = "manifest.json"
VIEWS = preprocess.VIEWS
_IN_PROGRESS = "_prepare.json"
_WORK = "_work"


def tile_key(view: str, size: int, enhance: str = "none") -> str:
    """Folder and manifest key of one kind of tile: ``roi-224``, ``whole-clahe-1024``."""
    return f"{view}-{size}" if enhance == "none" else f"{view}-{enhance}-{size}"


@dataclass(frozen=True)
class PrepareParams:
    """How tiles are made. Part of the dataset's identity: other params, other dataset."""

    views: tuple[str, ...] = ("roi",)
    sizes: tuple[int, ...] = (224,)  # ROI tile sides
    whole_sizes: tuple[int, ...] = (512,)  # whole-image long (height) sides
    enhance: tuple[str, ...] = ("none",)
    context_px: int | None = None  # ROI tile side in source pixels; None: the source's own
    train_variants: int = 4  # random-crop variants per training ROI (val/test: centred only)
    tissue_tiles: int = 1  # background-tissue tiles per image (ROI view)
    val_fraction: float = 0.2  # of the training patients
    test_fraction: float = 0.2  # of the patients, for sources without an official split
    seed: int = 0
    images_per_shard: int = 16

    def validate(self) -> None:
        for view in self.views:
            if view not in VIEWS:
                raise UserError(unknown_choice("view", view, VIEWS))
        for mode in self.enhance:
            if mode not in preprocess.ENHANCEMENTS:
                raise UserError(unknown_choice("enhancement", mode, preprocess.ENHANCEMENTS))
        if not self.views or not self.enhance:
            raise UserError("give at least one view (--views) and one enhancement (--enhance)")
        for flag, sizes in (("--sizes", self.sizes), ("--whole-sizes", self.whole_sizes)):
            if not sizes or any(not 16 <= s <= 4096 for s in sizes):
                raise UserError(f"{flag} {list(sizes)}: give sizes between 16 and 4096")
        if self.context_px is not None and self.context_px < 16:
            raise UserError(f"--context-px {self.context_px} is too small; use at least 16")
        for flag, value in (
            ("--val-fraction", self.val_fraction),
            ("--test-fraction", self.test_fraction),
        ):
            if not 0.0 <= value < 0.9:
                raise UserError(f"{flag} {value}: use 0.0 up to 0.9")
        if self.train_variants < 1:
            raise UserError(f"--train-variants {self.train_variants}: use at least 1")
        if self.tissue_tiles < 0:
            raise UserError(f"--tissue-tiles {self.tissue_tiles}: use 0 or more")

    def to_json(self) -> dict:
        data = asdict(self)
        for name in ("views", "sizes", "whole_sizes", "enhance"):
            data[name] = sorted(data[name])
        return data

    @classmethod
    def from_json(cls, data: dict) -> PrepareParams:
        lists = ("views", "sizes", "whole_sizes", "enhance")
        return cls(**{k: tuple(v) if k in lists else v for k, v in data.items()})


@dataclass(frozen=True)
class PreparePlan:
    """A checked prepare, ready to run (see :func:`plan_prepare`)."""

    source: str
    kind: str
    out: str
    params: PrepareParams  # with context_px resolved
    dataset_id: str
    fingerprint: str
    chunks: list[dict]
    skipped: list[dict]
    leakage: dict
    existing: dict | None  # the manifest, when ``out`` already holds this dataset
    # The most pixels a file may declare (tuner.data.limits): a safety setting, not a
    # parameter of the dataset, so it is outside the dataset id.
    max_pixels: int = limits.MAX_PIXELS
    synthetic: bool = False  # the source is a synthetic dataset (synth.json beside it)


def _chunks(images: list[ImageRecord], params: PrepareParams, dataset_id: str) -> list[dict]:
    chunks = []
    for split in SPLITS:
        # Hash order mixes masses and calcifications, patients and views within each shard.
        members = sorted(
            (i for i in images if i.split == split), key=lambda i: zlib.crc32(i.image_id.encode())
        )
        for start in range(0, len(members), params.images_per_shard):
            group = members[start : start + params.images_per_shard]
            key = hashlib.sha256(
                (dataset_id + "".join(i.image_id for i in group)).encode()
            ).hexdigest()[:16]
            chunks.append({"key": key, "split": split, "images": [i.to_dict() for i in group]})
    return chunks


def _row(
    pixels: np.ndarray, image: ImageRecord, *, finding: Finding | None, lesion: str, variant: int
) -> dict:
    return {
        "image": pixels,
        "height": pixels.shape[0],
        "width": pixels.shape[1],
        "pathology": finding.pathology if finding else "NORMAL",
        "abnormality_type": finding.abnormality_type if finding else "none",
        "lesion": lesion,
        "patient_id": image.patient_id,
        "image_id": image.image_id,
        "abnormality_id": finding.abnormality_id if finding else 0,
        "view": image.view,
        "laterality": image.laterality,
        "breast_density": image.breast_density,
        "subtlety": finding.subtlety if finding else 0,
        "variant": variant,
    }


def _tile_image(
    image: ImageRecord,
    split: str,
    params: PrepareParams,
    source,
    rows: dict,
    skipped: list,
    notes: list,
    max_pixels: int | None = None,
) -> int | None:
    """Every tile of one image, appended to ``rows[(view, enhance, size)]``: each one made
    by :func:`preprocess.model_inputs`, the path predict takes too.

    Returns:
        The bits the decoded image spans (see :func:`bit_depth`), None when skipped.
    """
    if "whole" not in params.views and not any(f.roi.get("files") for f in image.findings):
        # ROI tiles only, and no finding has its ROI files: nothing to decode the image for.
        for finding in image.findings:
            label = f"{image.image_id}/{finding.abnormality_id}"
            skipped.append({"item": label, "reason": ROI_FILES_MISSING})
        return None
    try:
        decoded = source.load_image(image.url, max_pixels=max_pixels)
        mammogram = preprocess.SourceImage(decoded)
    except UserError as exc:  # unreadable, or blank (no breast region)
        skipped.append({"item": image.image_id, "reason": str(exc)})
        return None
    bits = bit_depth(decoded)
    del decoded
    rng = np.random.default_rng(zlib.crc32(f"{params.seed}/{image.image_id}".encode()))

    def tiles(box: preprocess.Box):
        for mode in params.enhance:
            inputs = preprocess.model_inputs(
                mammogram, view="roi", enhance=mode, sizes=params.sizes, box=box
            )
            for size, tile in inputs.items():
                yield mode, size, tile

    if "roi" in params.views:
        lesions: list[tuple[int, int, int, int]] = []
        all_located = True
        for finding in image.findings:
            label = f"{image.image_id}/{finding.abnormality_id}"
            try:
                mask, note = source.load_mask(finding.roi, mammogram.shape, max_pixels=max_pixels)
            except UserError as exc:
                mask, note = None, str(exc)
            if mask is None:
                skipped.append({"item": label, "reason": note})
                all_located = False
                continue
            if note:
                notes.append({"item": label, "note": note})
            lesions.append(preprocess.roi_box(mask))
            variants = params.train_variants if split == "train" else 0
            boxes = preprocess.roi_boxes(
                mask, context_px=params.context_px, variants=variants, rng=rng
            )
            for variant, box in enumerate(boxes):
                for mode, size, tile in tiles(box):
                    rows[("roi", mode, size)].append(
                        _row(tile, image, finding=finding, lesion="lesion", variant=variant)
                    )
        # Tissue tiles only where every lesion is located: "away from every ROI" must hold.
        if all_located:
            boxes = preprocess.tissue_boxes(
                mammogram.pixels,
                mammogram.breast,
                lesions,
                side=params.context_px,
                count=params.tissue_tiles,
                rng=rng,
            )
            for variant, box in enumerate(boxes):
                for mode, size, tile in tiles(box):
                    rows[("roi", mode, size)].append(
                        _row(tile, image, finding=None, lesion="tissue", variant=variant)
                    )

    if "whole" in params.views:
        worst = worst_finding(image.findings)
        for mode in params.enhance:
            # All whole sizes in one call: each is resized from the next larger one.
            inputs = preprocess.model_inputs(
                mammogram, view="whole", enhance=mode, sizes=params.whole_sizes
            )
            for size, picture in inputs.items():
                rows[("whole", mode, size)].append(
                    _row(
                        picture,
                        image,
                        finding=worst,
                        lesion="lesion" if worst else "tissue",
                        variant=0,
                    )
                )
    return bits


def bit_depth(decoded: np.ndarray) -> int:
    """The bits a decoded image spans: 8 for an 8-bit JPEG or PGM, 12 to 16 for the
    16-bit DICOM edition (its values, not its container, so 12-bit data says 12)."""
    if decoded.dtype.itemsize == 1:
        return 8
    low, high = float(decoded.min()), float(decoded.max())
    return max(8, int(np.ceil(np.log2(high - low + 1))))


def _keep_large_arrays_on_the_heap() -> None:
    """Ask glibc's malloc to serve arrays of up to 32 MB (a decoded full mammogram) from the
    heap. By default each such array is a fresh mmap whose pages the kernel faults in and
    zeroes again and again; that churn took a third of prepare's time (measured on 58
    full-size images, one core: 8.3 s -> 5.4 s, system time 3.1 s -> 0.8 s). 32 MB is the
    most mallopt accepts on 64-bit glibc; elsewhere this does nothing."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD (also fixes the dynamic threshold)
        libc.mallopt(-1, 256 * 2**20)  # M_TRIM_THRESHOLD: keep freed memory for the next image
    except (OSError, AttributeError):
        pass


def _process_chunk(
    row: dict, *, kind: str, out: str, params_json: str, max_pixels: int | None = None
) -> dict:
    """Ray Data task: tile one chunk of images and write one shard per tile kind."""
    import cv2

    # One task, one core: OpenCV's own thread pool would otherwise spread each task over
    # every core and make Ray's CPU accounting (and scaling with cores) a fiction.
    cv2.setNumThreads(1)
    _keep_large_arrays_on_the_heap()
    params = PrepareParams.from_json(json.loads(params_json))
    chunk = json.loads(row["chunk"])
    source = source_class(kind)
    rows: dict[tuple, list[dict]] = defaultdict(list)
    skipped, notes, depths = [], [], []
    for data in chunk["images"]:
        bits = _tile_image(
            ImageRecord.from_dict(data),
            chunk["split"],
            params,
            source,
            rows,
            skipped,
            notes,
            max_pixels,
        )
        if bits is not None:
            depths.append(bits)
    records = []
    for (view, mode, size), tiles in sorted(rows.items()):
        data = shards.encode(tiles)
        relative = f"{tile_key(view, size, mode)}/{chunk['split']}/{shards.content_name(data)}"
        target = storage.join(out, relative)
        if not storage.exists(target):
            storage.write_bytes(target, data)
        joint = Counter((t["pathology"], t["abnormality_type"], t["lesion"]) for t in tiles)
        records.append(
            {
                "view": view,
                "size": size,
                "enhance": mode,
                "shape": [tiles[0]["height"], tiles[0]["width"]],
                "split": chunk["split"],
                "path": relative,
                "rows": len(tiles),
                "sha256": hashlib.sha256(data).hexdigest(),
                "counts": [
                    {"pathology": p, "abnormality_type": a, "lesion": lesion, "rows": n}
                    for (p, a, lesion), n in sorted(joint.items())
                ],
                "patients": sorted({t["patient_id"] for t in tiles}),
            }
        )
    result = {
        "key": chunk["key"],
        "shards": records,
        "skipped": skipped,
        "notes": notes,
        "bit_depth": max(depths, default=None),
    }
    storage.write_json(storage.join(out, _WORK, chunk["key"] + ".json"), result)
    return {"key": chunk["key"]}


def _existing(out: str, dataset_id: str) -> dict | None:
    """The finished manifest if ``out`` already holds this dataset, None if ``out`` is free
    (or holds an unfinished run of this dataset); raise if it holds anything else."""
    storage.check_location(out)
    fs, path = storage.filesystem(out)
    manifest_url = storage.join(out, MANIFEST)
    if storage.exists(manifest_url):
        manifest = storage.read_json(manifest_url)
        if manifest.get("id") == dataset_id:
            return manifest
        raise UserError(
            f"{out} already holds a different dataset (id {manifest.get('id')}, made from "
            f"{manifest.get('source', {}).get('url')}); choose a new output folder"
        )
    claim = storage.join(out, _IN_PROGRESS)
    if storage.exists(claim):
        if storage.read_json(claim).get("id") != dataset_id:
            raise UserError(
                f"{out} holds an unfinished prepare of a different dataset; "
                "choose a new output folder or remove that one"
            )
        return None
    if fs.exists(path) and fs.ls(path):
        raise UserError(f"{out} is not empty; choose a new or empty folder for the dataset")
    return None


def plan_prepare(
    source: str,
    out: str,
    params: PrepareParams = PrepareParams(),
    *,
    kind: str | None = None,
    max_pixels: int | None = None,
) -> PreparePlan:
    """Read the source's annotations and file list, split patients and check the output.
    Needs no Ray and writes nothing.

    Args:
        max_pixels: the most pixels an image file may declare (default
            ``$MAMMOTUNE_MAX_PIXELS``, else 100 MP): larger ones are skipped undecoded.

    Raises:
        UserError: missing or unrecognised source, bad params, a bucket that does not exist
            or denies access, or ``out`` holds something else.
    """
    params.validate()
    cap = limits.pixel_cap(max_pixels)  # read here, so that workers get it as a value
    out = storage.normalize(out)
    opened = open_source(source, kind)
    if params.context_px is None:
        params = PrepareParams.from_json(
            {**params.to_json(), "context_px": opened.default_context_px}
        )
    images, skipped, leakage = opened.images(
        val_fraction=params.val_fraction, test_fraction=params.test_fraction, seed=params.seed
    )
    fingerprint = opened.fingerprint()
    dataset_id = hashlib.sha256(
        json.dumps([FORMAT, PREPROCESSING, opened.kind, fingerprint, params.to_json()]).encode()
    ).hexdigest()[:16]
    return PreparePlan(
        source=opened.root,
        kind=opened.kind,
        out=out,
        params=params,
        dataset_id=dataset_id,
        fingerprint=fingerprint,
        chunks=_chunks(images, params, dataset_id),
        skipped=skipped,
        leakage=leakage,
        existing=_existing(out, dataset_id),
        max_pixels=cap,
        synthetic=storage.exists(storage.join(opened.root, SYNTH_MARKER)),
    )


def run_prepare(plan: PreparePlan) -> dict:
    """Tile the planned chunks on the Ray cluster (started locally if none is connected)
    and commit the manifest.

    Returns:
        The manifest (also written to ``out/manifest.json``), with ``"reused": True`` when
        ``out`` already held this exact dataset and nothing was done.
    """
    if plan.existing is not None:
        return {**plan.existing, "reused": True}
    started = time.perf_counter()
    out = plan.out
    storage.write_json(storage.join(out, _IN_PROGRESS), {"id": plan.dataset_id})
    record = lambda chunk: storage.join(out, _WORK, chunk["key"] + ".json")  # noqa: E731
    done = {c["key"] for c in plan.chunks if storage.exists(record(c))}
    pending = [{"chunk": json.dumps(c)} for c in plan.chunks if c["key"] not in done]
    work = {
        "kind": plan.kind,
        "out": out,
        "params_json": json.dumps(plan.params.to_json()),
        "max_pixels": plan.max_pixels,
    }
    if pending and (storage.is_process_local(out) or storage.is_process_local(plan.source)):
        for item in pending:
            _process_chunk(item, **work)
    elif pending:
        import ray.data

        context = ray.data.DataContext.get_current()
        reserving = context.op_resource_reservation_enabled
        # Ray Data reserves part of the cluster for operators downstream of each map; this
        # pipeline is one map, so the reservation only kept half the CPUs idle at the start.
        context.op_resource_reservation_enabled = False
        try:
            (
                ray.data.from_items(pending, override_num_blocks=len(pending))
                .map(_process_chunk, fn_kwargs=work, num_cpus=1)
                .materialize()
            )
        finally:
            context.op_resource_reservation_enabled = reserving
    results = [storage.read_json(record(c)) for c in plan.chunks]
    manifest = _manifest(plan, results)
    manifest["seconds"] = round(time.perf_counter() - started, 1)
    manifest["max_pixels"] = plan.max_pixels
    manifest["resumed_chunks"] = len(done)
    storage.write_json(storage.join(out, MANIFEST), manifest)  # the commit point
    fs, _ = storage.filesystem(out)
    for leftover in (_WORK, _IN_PROGRESS):
        target = storage.filesystem(storage.join(out, leftover))[1]
        if fs.exists(target):
            fs.rm(target, recursive=True)
    return manifest


def prepare(
    source: str, out: str, params: PrepareParams = PrepareParams(), *, kind: str | None = None
) -> dict:
    """Turn the dataset at ``source`` into tile shards at ``out``: :func:`plan_prepare`
    then :func:`run_prepare`."""
    return run_prepare(plan_prepare(source, out, params, kind=kind))


def _summary(counts: list[dict], column: str) -> dict:
    total = Counter()
    for combination in counts:
        total[combination[column]] += combination["rows"]
    return dict(sorted(total.items()))


def _manifest(plan: PreparePlan, results: list[dict]) -> dict:
    tiles: dict = {}
    skipped = list(plan.skipped)
    notes = []
    patients_by_split: dict[str, set[str]] = defaultdict(set)
    for result in results:
        skipped.extend(result["skipped"])
        notes.extend(result["notes"])
        for record in result["shards"]:
            patients_by_split[record["split"]].update(record["patients"])
            key = tile_key(record["view"], record["size"], record["enhance"])
            kind = tiles.setdefault(
                key,
                {
                    "view": record["view"],
                    "size": record["size"],
                    "enhance": record["enhance"],
                    "shape": record["shape"],
                    "splits": {},
                },
            )
            entry = kind["splits"].setdefault(
                record["split"], {"rows": 0, "counts": Counter(), "shards": []}
            )
            entry["rows"] += record["rows"]
            for combination in record["counts"]:
                values = (
                    combination["pathology"],
                    combination["abnormality_type"],
                    combination["lesion"],
                )
                entry["counts"][values] += combination["rows"]
            entry["shards"].append({k: record[k] for k in ("path", "rows", "sha256")})
    for kind in tiles.values():
        for entry in kind["splits"].values():
            entry["counts"] = [
                {"pathology": p, "abnormality_type": a, "lesion": lesion, "rows": n}
                for (p, a, lesion), n in sorted(entry["counts"].items())
            ]
            for column in shards.LABELS:
                entry[column] = _summary(entry["counts"], column)
            lesions = sum(n for p, n in entry["pathology"].items() if p != "NORMAL")
            entry["malignant_fraction"] = (
                round(entry["pathology"].get("MALIGNANT", 0) / lesions, 4) if lesions else 0.0
            )
    names = sorted(patients_by_split)
    shared = set()
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared |= patients_by_split[a] & patients_by_split[b]
    return {
        "format": FORMAT,
        "preprocessing": PREPROCESSING,
        "id": plan.dataset_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mammotune_version": tuner.__version__,
        "source": {
            "kind": plan.kind,
            # The edition and bit depth say what the pixels were before windowing: a model
            # trained on one edition's shards is not evaluated on another's unless asked.
            "edition": source_class(plan.kind).edition,
            "bit_depth": max((r["bit_depth"] for r in results if r.get("bit_depth")), default=None),
            "url": plan.source,
            "fingerprint": plan.fingerprint,
            # Read from the source when planning, so that nothing later follows "url".
            "synthetic": plan.synthetic,
        },
        "params": plan.params.to_json(),
        "params_hash": hashlib.sha256(json.dumps(plan.params.to_json()).encode()).hexdigest()[:16],
        "splits": {s: {"patients": len(patients_by_split.get(s, ()))} for s in SPLITS},
        "leakage": {**plan.leakage, "patients_in_two_splits": len(shared)},
        "tiles": dict(sorted(tiles.items())),
        "notes": notes,
        "skipped": skipped,
    }
