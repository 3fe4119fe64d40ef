"""The datasets prepare can read, by name, and how a folder is recognised."""

from __future__ import annotations

import posixpath

from tuner import storage
from tuner.data.cbis_ddsm import CSV_FILES, CbisDdsmSource
from tuner.data.cbis_ddsm_jpeg import DICOM_INFO, CbisDdsmJpegSource
from tuner.data.mini_mias import INFO, MiniMiasSource
from tuner.errors import UserError, unknown_choice

__all__ = ["SOURCES", "open_source", "source_class", "source_identity", "mixed_editions"]

SOURCES = {cls.kind: cls for cls in (CbisDdsmSource, CbisDdsmJpegSource, MiniMiasSource)}
EDITION_NAMES = {"dicom": "DICOM", "jpeg": "JPEG", "pgm": "PGM"}


def source_class(kind: str):
    if kind not in SOURCES:
        raise UserError(unknown_choice("source kind", kind, SOURCES))
    return SOURCES[kind]


def open_source(root: str, kind: str | None = None):
    """Open the dataset at ``root``, recognising its kind from its files unless given.

    Raises:
        UserError: the folder does not exist, or holds neither dataset.
    """
    files = storage.Folder(root).files
    if kind is None:
        names = {posixpath.basename(p) for p in files}
        jpeg_edition = DICOM_INFO in names
        dicom_edition = names & set(CSV_FILES.values()) and any(
            p.lower().endswith(".dcm") for p in files
        )
        if INFO in names:
            kind = MiniMiasSource.kind
        elif jpeg_edition and dicom_edition:
            raise UserError(
                f"{storage.normalize(root)} holds both CBIS-DDSM editions (DICOM files and "
                f"the JPEG edition's {DICOM_INFO}): say which to read with --source-kind "
                f"{CbisDdsmSource.kind} (16-bit DICOM) or --source-kind "
                f"{CbisDdsmJpegSource.kind} (8-bit JPEG)"
            )
        elif jpeg_edition:
            kind = CbisDdsmJpegSource.kind
        elif names & set(CSV_FILES.values()):
            kind = CbisDdsmSource.kind
        else:
            raise UserError(
                f"{storage.normalize(root)} is neither a CBIS-DDSM folder (the four "
                f"case-description CSVs next to the DICOM tree, or the JPEG edition's csv/ "
                f"and jpeg/ folders) nor a mini-MIAS folder ({INFO} and mdbNNN.pgm files)"
            )
    return source_class(kind)(root, files=files)


def source_identity(manifest_source: dict) -> dict:
    """What a prepared dataset's pixels came from: source kind, collection, edition and
    bit depth (from its manifest's ``source``; older manifests lack the last two)."""
    kind = manifest_source.get("kind", "")
    cls = SOURCES.get(kind)
    return {
        "kind": kind,
        "collection": getattr(cls, "collection", kind),
        "edition": manifest_source.get("edition") or getattr(cls, "edition", ""),
        "bit_depth": manifest_source.get("bit_depth"),
    }


def mixed_editions(first: dict | None, second: dict | None) -> tuple[str, str] | None:
    """Whether two manifests' ``source`` are different editions of one collection (their
    pixels differ in bit depth and windowing): None when they are one edition or different
    collections (external validation is a choice of its own), else how to name each, e.g.
    ("the CBIS-DDSM DICOM edition (cbis-ddsm, 16-bit)", "its JPEG edition (...)")."""
    if not first or not second:
        return None
    a, b = source_identity(first), source_identity(second)
    if a["collection"] != b["collection"] or a["edition"] == b["edition"]:
        return None

    def name(s: dict) -> str:
        depth = f", {s['bit_depth']}-bit" if s["bit_depth"] else ""
        return f"{EDITION_NAMES.get(s['edition'], s['edition'])} edition ({s['kind']}{depth})"

    return f"the {a['collection']} {name(a)}", f"its {name(b)}"
