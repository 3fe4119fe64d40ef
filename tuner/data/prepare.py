"""prepare: a CBIS-DDSM-layout source becomes ROI tile shards plus ``manifest.json``.

The work is split into chunks of images of one split; Ray Data runs the chunks in parallel
across the cluster, and each chunk writes one content-named shard per tile size and a small
record under ``_work/``. The manifest is written last and is the commit point: a reader never
sees a half-written dataset. Re-running with the same inputs finds the manifest and does
nothing; an interrupted run finds the finished chunks' records and does only the rest.
"""

from __future__ import annotations

import hashlib
import json
import time
import zlib
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np

import tuner
from tuner import storage
from tuner.data import cbis_ddsm, shards
from tuner.data.dicom import read_image
from tuner.data.preprocess import roi_tiles, to_uint8
from tuner.data.splits import SPLITS, assign_splits
from tuner.errors import UserError, unknown_choice

__all__ = [
    "FORMAT",
    "MANIFEST",
    "VIEWS",
    "PrepareParams",
    "PreparePlan",
    "plan_prepare",
    "run_prepare",
    "prepare",
]

FORMAT = "mammotune-dataset/1"
MANIFEST = "manifest.json"
VIEWS = ("roi",)
_IN_PROGRESS = "_prepare.json"
_WORK = "_work"


@dataclass(frozen=True)
class PrepareParams:
    """How tiles are made. Part of the dataset's identity: other params, other dataset."""

    view: str = "roi"
    sizes: tuple[int, ...] = (224,)
    context_px: int = 598  # tile side around a ROI, in source pixels (Scuccimarra: 598)
    train_variants: int = 4  # random-crop variants per training ROI (val/test: centred only)
    val_fraction: float = 0.2
    seed: int = 0
    images_per_shard: int = 16

    def validate(self) -> None:
        if self.view not in VIEWS:
            raise UserError(unknown_choice("view", self.view, VIEWS))
        if not self.sizes or any(not 16 <= s <= 4096 for s in self.sizes):
            raise UserError(f"--sizes {list(self.sizes)}: give tile sizes between 16 and 4096")
        if self.context_px < 16:
            raise UserError(f"--context-px {self.context_px} is too small; use at least 16")
        if not 0.0 <= self.val_fraction < 0.9:
            raise UserError(f"--val-fraction {self.val_fraction}: use 0.0 up to 0.9")
        if self.train_variants < 1:
            raise UserError(f"--train-variants {self.train_variants}: use at least 1")

    def to_json(self) -> dict:
        return {**asdict(self), "sizes": sorted(self.sizes)}

    @classmethod
    def from_json(cls, data: dict) -> PrepareParams:
        return cls(**{**data, "sizes": tuple(data["sizes"])})


@dataclass
class _Image:
    series: str
    url: str
    split: str
    findings: list[dict] = field(default_factory=list)


def _plan(source: cbis_ddsm.CbisDdsmSource, params: PrepareParams):
    abnormalities = source.abnormalities()
    if not abnormalities:
        raise UserError(f"{source.root}: the case-description CSVs list no abnormalities")
    index = source.dicom_index()
    if not index:
        raise UserError(f"{source.root}: no DICOM files under the CSVs' series folders")
    patient_split, leakage = assign_splits(
        abnormalities, val_fraction=params.val_fraction, seed=params.seed
    )
    images: dict[str, _Image] = {}
    skipped: list[dict] = []
    for a in abnormalities:
        files = index.get(a.image_series, [])
        if not files:
            skipped.append({"series": a.image_series, "reason": "full mammogram not found"})
            continue
        roi_files = sorted(set(index.get(a.roi_series, []) + index.get(a.crop_series, [])))
        if not roi_files:
            skipped.append({"series": a.roi_series, "reason": "ROI mask/crop files not found"})
            continue
        image = images.setdefault(
            a.image_series, _Image(a.image_series, files[0], patient_split[a.patient_id])
        )
        image.findings.append({**a.to_dict(), "roi_files": roi_files})
    return list(images.values()), skipped, leakage


def _chunks(images: list[_Image], params: PrepareParams, dataset_id: str) -> list[dict]:
    chunks = []
    for split in SPLITS:
        # Hash order mixes masses and calcifications, patients and views within each shard.
        members = sorted(
            (i for i in images if i.split == split), key=lambda i: zlib.crc32(i.series.encode())
        )
        for start in range(0, len(members), params.images_per_shard):
            group = members[start : start + params.images_per_shard]
            key = hashlib.sha256(
                (dataset_id + "".join(i.series for i in group)).encode()
            ).hexdigest()[:16]
            chunks.append({"key": key, "split": split, "images": [asdict(i) for i in group]})
    return chunks


def _read_mask(roi_files: list[str], shape: tuple[int, int]) -> tuple[np.ndarray | None, str]:
    """Find the ROI mask among a finding's files by content; rescale it to ``shape``."""
    import cv2

    masks = []
    for url in roi_files:
        fs, path = storage.filesystem(url)
        with fs.open(path, "rb") as f:
            pixels = read_image(f)
        if cbis_ddsm.is_mask(pixels):
            masks.append(pixels)
    if not masks:
        return None, "no ROI mask among the finding's files"
    mask = max(masks, key=lambda m: (m.shape == shape, m.size))
    note = ""
    if mask.shape != shape:
        note = f"mask {mask.shape[1]}x{mask.shape[0]} rescaled to image {shape[1]}x{shape[0]}"
        mask = cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    mask = mask > mask.min()
    if not mask.any():
        return None, "ROI mask is empty"
    return mask, note


def _process_chunk(row: dict, *, out: str, params_json: str) -> dict:
    """Ray Data task: tile one chunk of images and write one shard per size."""
    params = PrepareParams.from_json(json.loads(params_json))
    chunk = json.loads(row["chunk"])
    tiles: dict[int, list[dict]] = defaultdict(list)
    skipped, notes = [], []
    for image in chunk["images"]:
        fs, path = storage.filesystem(image["url"])
        try:
            with fs.open(path, "rb") as f:
                pixels = to_uint8(read_image(f))
        except Exception as exc:  # one unreadable file must not sink the dataset
            skipped.append({"series": image["series"], "reason": f"unreadable image: {exc}"})
            continue
        for finding in image["findings"]:
            label = finding["roi_series"] or image["series"]
            try:
                mask, note = _read_mask(finding["roi_files"], pixels.shape)
            except Exception as exc:
                mask, note = None, f"unreadable ROI file: {exc}"
            if mask is None:
                skipped.append({"series": label, "reason": note})
                continue
            if note:
                notes.append({"series": label, "note": note})
            seed = zlib.crc32(f"{params.seed}/{label}/{finding['abnormality_id']}".encode())
            variants = params.train_variants if chunk["split"] == "train" else 0
            for variant, by_size in enumerate(
                roi_tiles(
                    pixels,
                    mask,
                    context_px=params.context_px,
                    sizes=params.sizes,
                    variants=variants,
                    rng=np.random.default_rng(seed),
                )
            ):
                for size, tile in by_size.items():
                    tiles[size].append(
                        {
                            "image": tile,
                            "height": size,
                            "width": size,
                            "series": image["series"],
                            "variant": variant,
                            **{k: finding[k] for k in shards.LABEL_COLUMNS if k in finding},
                        }
                    )
    records = []
    for size, rows in sorted(tiles.items()):
        data = shards.encode(rows)
        relative = f"{params.view}-{size}/{chunk['split']}/{shards.content_name(data)}"
        target = storage.join(out, relative)
        if not storage.exists(target):
            storage.write_bytes(target, data)
        records.append(
            {
                "view": params.view,
                "size": size,
                "split": chunk["split"],
                "path": relative,
                "rows": len(rows),
                "sha256": hashlib.sha256(data).hexdigest(),
                "pathology": dict(Counter(r["pathology"] for r in rows)),
                "abnormality_type": dict(Counter(r["abnormality_type"] for r in rows)),
                "patients": sorted({r["patient_id"] for r in rows}),
            }
        )
    result = {"key": chunk["key"], "shards": records, "skipped": skipped, "notes": notes}
    storage.write_json(storage.join(out, _WORK, chunk["key"] + ".json"), result)
    return {"key": chunk["key"]}


def _existing(out: str, dataset_id: str) -> dict | None:
    """The finished manifest if ``out`` already holds this dataset, None if ``out`` is free
    (or holds an unfinished run of this dataset); raise if it holds anything else."""
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


@dataclass(frozen=True)
class PreparePlan:
    """A checked prepare, ready to run (see :func:`plan_prepare`)."""

    source: str
    out: str
    params: PrepareParams
    dataset_id: str
    fingerprint: str
    chunks: list[dict]
    skipped: list[dict]
    leakage: dict
    existing: dict | None  # the manifest, when ``out`` already holds this dataset


def plan_prepare(source: str, out: str, params: PrepareParams = PrepareParams()) -> PreparePlan:
    """Read the source's CSVs and file list, split patients and check the output folder.
    Needs no Ray and writes nothing.

    Raises:
        UserError: missing or empty source, bad params, or ``out`` holds something else.
    """
    params.validate()
    out = storage.normalize(out)
    cbis = cbis_ddsm.CbisDdsmSource(source)
    images, skipped, leakage = _plan(cbis, params)
    fingerprint = cbis.fingerprint()
    dataset_id = hashlib.sha256(
        json.dumps([FORMAT, fingerprint, params.to_json()]).encode()
    ).hexdigest()[:16]
    return PreparePlan(
        source=cbis.root,
        out=out,
        params=params,
        dataset_id=dataset_id,
        fingerprint=fingerprint,
        chunks=_chunks(images, params, dataset_id),
        skipped=skipped,
        leakage=leakage,
        existing=_existing(out, dataset_id),
    )


def run_prepare(plan: PreparePlan) -> dict:
    """Tile the planned chunks on the Ray cluster (started locally if none is connected)
    and commit the manifest.

    Returns:
        The manifest (also written to ``out/manifest.json``), with ``"reused": True`` when
        ``out`` already held this exact dataset and nothing was done.
    """
    import ray.data

    if plan.existing is not None:
        return {**plan.existing, "reused": True}
    started = time.perf_counter()
    out = plan.out
    storage.write_json(storage.join(out, _IN_PROGRESS), {"id": plan.dataset_id})
    record = lambda chunk: storage.join(out, _WORK, chunk["key"] + ".json")  # noqa: E731
    done = {c["key"] for c in plan.chunks if storage.exists(record(c))}
    pending = [{"chunk": json.dumps(c)} for c in plan.chunks if c["key"] not in done]
    if pending:
        (
            ray.data.from_items(pending, override_num_blocks=len(pending))
            .map(
                _process_chunk,
                fn_kwargs={"out": out, "params_json": json.dumps(plan.params.to_json())},
                num_cpus=1,
            )
            .materialize()
        )
    results = [storage.read_json(record(c)) for c in plan.chunks]
    manifest = _manifest(plan, results)
    manifest["seconds"] = round(time.perf_counter() - started, 1)
    manifest["resumed_chunks"] = len(done)
    storage.write_json(storage.join(out, MANIFEST), manifest)  # the commit point
    fs, _ = storage.filesystem(out)
    for leftover in (_WORK, _IN_PROGRESS):
        target = storage.filesystem(storage.join(out, leftover))[1]
        if fs.exists(target):
            fs.rm(target, recursive=True)
    return manifest


def prepare(source: str, out: str, params: PrepareParams = PrepareParams()) -> dict:
    """Turn the CBIS-DDSM-layout dataset at ``source`` into tile shards at ``out``:
    :func:`plan_prepare` then :func:`run_prepare`."""
    return run_prepare(plan_prepare(source, out, params))


def _manifest(plan: PreparePlan, results: list[dict]) -> dict:
    views: dict = {}
    skipped = list(plan.skipped)
    patients_by_split: dict[str, set[str]] = defaultdict(set)
    for result in results:
        skipped.extend(result["skipped"])
        for record in result["shards"]:
            patients = record.pop("patients")
            patients_by_split[record["split"]].update(patients)
            entry = (
                views.setdefault(record["view"], {})
                .setdefault(str(record["size"]), {})
                .setdefault(
                    record["split"],
                    {
                        "rows": 0,
                        "pathology": Counter(),
                        "abnormality_type": Counter(),
                        "shards": [],
                    },
                )
            )
            entry["rows"] += record["rows"]
            entry["pathology"].update(record.pop("pathology"))
            entry["abnormality_type"].update(record.pop("abnormality_type"))
            entry["shards"].append({k: record[k] for k in ("path", "rows", "sha256")})
    for sizes in views.values():
        for splits in sizes.values():
            for entry in splits.values():
                entry["pathology"] = dict(sorted(entry["pathology"].items()))
                entry["abnormality_type"] = dict(sorted(entry["abnormality_type"].items()))
    split_names = sorted(patients_by_split)
    shared = set()
    for i, a in enumerate(split_names):
        for b in split_names[i + 1 :]:
            shared |= patients_by_split[a] & patients_by_split[b]
    return {
        "format": FORMAT,
        "id": plan.dataset_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mammotune_version": tuner.__version__,
        "source": {"kind": "cbis-ddsm", "url": plan.source, "fingerprint": plan.fingerprint},
        "params": plan.params.to_json(),
        "splits": {s: {"patients": len(patients_by_split.get(s, ()))} for s in SPLITS},
        "leakage": {**plan.leakage, "patients_in_two_splits": len(shared)},
        "views": views,
        "notes": [n for r in results for n in r["notes"]],
        "skipped": skipped,
    }
