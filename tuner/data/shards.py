"""The tile shard format: one Parquet file of tiles of one view, size and split.

A row is one tile or whole image (raw uint8 pixels, zstd-compressed by Parquet) with every
label and the non-identifying context, so the task is chosen at search time rather than baked
in. Nothing from DICOM headers is stored: no names, dates, institutions or foreign IDs. Shards
are named by the SHA-256 of their bytes, which makes them immutable and lets a re-run skip
what is already there.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["SCHEMA", "LABELS", "LABEL_COLUMNS", "encode", "decode", "images", "content_name"]

# The labels a task may use (see tuner/data/records.py for their values).
LABELS = ("pathology", "abnormality_type", "lesion")

SCHEMA = pa.schema(
    [
        ("image", pa.binary()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("pathology", pa.string()),
        ("abnormality_type", pa.string()),
        ("lesion", pa.string()),
        # non-identifying context: the source's own anonymised keys, view, laterality, ...
        ("patient_id", pa.string()),
        ("image_id", pa.string()),
        ("abnormality_id", pa.int32()),
        ("view", pa.string()),
        ("laterality", pa.string()),
        ("breast_density", pa.int32()),
        ("subtlety", pa.int32()),
        ("variant", pa.int32()),
    ]
)
LABEL_COLUMNS = tuple(name for name in SCHEMA.names if name not in ("image", "height", "width"))


def encode(rows: list[dict]) -> bytes:
    """Parquet bytes for ``rows`` (dicts with an ``image`` uint8 array and label columns)."""
    columns = {name: [row[name] for row in rows] for name in SCHEMA.names if name != "image"}
    columns["image"] = [np.ascontiguousarray(row["image"]).tobytes() for row in rows]
    table = pa.table(columns, schema=SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def content_name(data: bytes) -> str:
    """File name of a shard: the first 20 hex digits of its SHA-256."""
    return hashlib.sha256(data).hexdigest()[:20] + ".parquet"


def decode(source, columns: list[str] | None = None) -> pa.Table:
    """Read a shard (bytes or a file object), optionally only some columns."""
    if isinstance(source, bytes):
        source = pa.BufferReader(source)
    return pq.read_table(source, columns=columns)


def images(table: pa.Table) -> np.ndarray:
    """The tiles of a shard as a (rows, height, width) uint8 array.

    A zero-copy view of the Parquet column's data buffer (tiles of one size lie back to
    back), so reading a shard allocates nothing per tile.
    """
    heights = table.column("height").to_numpy()
    widths = table.column("width").to_numpy()
    if len(table) == 0:
        return np.zeros((0, 0, 0), np.uint8)
    h, w = int(heights[0]), int(widths[0])
    if not ((heights == h).all() and (widths == w).all()):
        raise ValueError("a shard must hold tiles of one size")
    column = table.column("image").combine_chunks()
    _, offsets, data = column.buffers()
    starts = np.frombuffer(offsets, np.int32, count=len(column) + 1, offset=column.offset * 4)
    if not (np.diff(starts) == h * w).all():
        raise ValueError(f"a shard's tiles must hold {h}x{w} bytes each")
    flat = np.frombuffer(data, np.uint8, count=len(column) * h * w, offset=int(starts[0]))
    return flat.reshape(len(column), h, w)
