"""The datasets prepare can read, by name, and how a folder is recognised."""

from __future__ import annotations

import posixpath

from tuner import storage
from tuner.data.cbis_ddsm import CSV_FILES, CbisDdsmSource
from tuner.data.mini_mias import INFO, MiniMiasSource
from tuner.errors import UserError, unknown_choice

__all__ = ["SOURCES", "open_source", "source_class"]

SOURCES = {cls.kind: cls for cls in (CbisDdsmSource, MiniMiasSource)}


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
        if INFO in names:
            kind = MiniMiasSource.kind
        elif names & set(CSV_FILES.values()):
            kind = CbisDdsmSource.kind
        else:
            raise UserError(
                f"{storage.normalize(root)} is neither a CBIS-DDSM folder (the four "
                f"case-description CSVs next to the DICOM tree) nor a mini-MIAS folder "
                f"({INFO} and mdbNNN.pgm files)"
            )
    return source_class(kind)(root, files=files)
