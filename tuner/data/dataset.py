"""A prepared dataset as an object: what ``prepare`` wrote (``manifest.json``), typed.

``Dataset.open(url)`` reads a dataset from storage; :func:`tuner.prepare` returns one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tuner import storage
from tuner.errors import UserError

__all__ = ["Dataset", "TileKind", "Synthetic"]


@dataclass(frozen=True)
class TileKind:
    """One kind of tile a dataset holds (view, enhancement, size), and its rows per split."""

    key: str  # "roi-48", "whole-clahe-1024"
    view: str
    size: int
    enhance: str
    shape: tuple[int, int]  # (height, width)
    rows: dict[str, int]  # split -> rows
    pathology: dict[str, dict[str, int]]  # split -> pathology -> rows
    lesion: dict[str, dict[str, int]]  # split -> lesion/tissue -> rows


@dataclass(frozen=True)
class Dataset:
    """A prepared dataset: immutable shards plus ``manifest.json`` at ``url``.

    Attributes:
        url: where it is (a folder or bucket URL).
        id: the dataset id (a hash of the source's fingerprint and the prepare params).
        source_kind: cbis-ddsm (the DICOM edition), cbis-ddsm-jpeg (the JPEG edition) or
            mini-mias (or a synthetic one of them).
        params: how the tiles were made (views, sizes, enhancements, context, split).
        patients: patients per split.
        tiles: the kinds of tile it holds.
        leakage: patients in the official train and test splits, and in two splits now (0).
        skipped: inputs left out, each ``{"item", "reason"}``.
        seconds: time prepare took (the run that wrote it).
        reused: True when ``prepare`` found this exact dataset there and did nothing.
        manifest: the whole manifest, as written.
        edition: what the source's pixels were: "dicom", "jpeg" or "pgm".
        bit_depth: the most bits a decoded source image spanned (8 for JPEG and PGM, up to
            16 for CBIS-DDSM's DICOM); None for datasets made before it was recorded.
    """

    url: str
    id: str
    source_kind: str
    params: dict[str, Any]
    patients: dict[str, int]
    tiles: list[TileKind]
    leakage: dict[str, Any]
    skipped: list[dict[str, str]]
    seconds: float | None
    reused: bool = False
    manifest: dict[str, Any] = field(default_factory=dict, repr=False)
    edition: str = ""
    bit_depth: int | None = None

    @classmethod
    def from_manifest(cls, url: str, manifest: dict, *, reused: bool = False) -> Dataset:
        tiles = []
        for key, kind in manifest.get("tiles", {}).items():
            splits = kind["splits"]
            tiles.append(
                TileKind(
                    key=key,
                    view=kind["view"],
                    size=int(kind["size"]),
                    enhance=kind["enhance"],
                    shape=tuple(kind["shape"]),
                    rows={s: e["rows"] for s, e in splits.items()},
                    pathology={s: dict(e.get("pathology", {})) for s, e in splits.items()},
                    lesion={s: dict(e.get("lesion", {})) for s, e in splits.items()},
                )
            )
        return cls(
            url=url,
            id=manifest["id"],
            source_kind=manifest.get("source", {}).get("kind", ""),
            params=dict(manifest.get("params", {})),
            patients={s: v["patients"] for s, v in manifest.get("splits", {}).items()},
            tiles=tiles,
            leakage=dict(manifest.get("leakage", {})),
            skipped=list(manifest.get("skipped", [])),
            seconds=manifest.get("seconds"),
            reused=reused,
            manifest={k: v for k, v in manifest.items() if k != "reused"},
            edition=manifest.get("source", {}).get("edition", ""),
            bit_depth=manifest.get("source", {}).get("bit_depth"),
        )

    @classmethod
    def open(cls, url: str) -> Dataset:
        """The prepared dataset at ``url``.

        Raises:
            UserError: no finished dataset there (no ``manifest.json``).
        """
        from tuner.data.stream import load_manifest

        url = storage.normalize(url)
        return cls.from_manifest(url, load_manifest(url))


@dataclass(frozen=True)
class Synthetic:
    """A synthetic dataset written by :func:`tuner.synth`.

    Attributes:
        url: where it is.
        format: cbis-ddsm or mini-mias.
        patients, images, abnormalities, malignant: what it holds.
        seconds: time it took to write (the run that wrote it).
        reused: True when ``synth`` found it there with the same settings and wrote nothing.
        params: the settings it was made with.
    """

    url: str
    format: str
    patients: int
    images: int
    abnormalities: int
    malignant: int
    seconds: float | None
    reused: bool
    params: dict[str, Any]

    @classmethod
    def from_summary(cls, url: str, summary: dict) -> Synthetic:
        params = summary.get("params", {})
        try:
            return cls(
                url=url,
                format=params.get("format", "cbis-ddsm"),
                patients=summary["patients"],
                images=summary["images"],
                abnormalities=summary.get("abnormalities", 0),
                malignant=summary.get("malignant", 0),
                seconds=summary.get("seconds"),
                reused=bool(summary.get("reused")),
                params=params,
            )
        except KeyError as exc:
            raise UserError(f"{url}: synth.json lacks {exc}; make the dataset again") from None
