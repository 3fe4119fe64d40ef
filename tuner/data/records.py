"""What every source hands to prepare: images with their findings and labels.

Records are plain dataclasses so that they travel to Ray workers as JSON. Label vocabulary,
shared by all sources and stored on every tile:

- ``pathology``: BENIGN, BENIGN_WITHOUT_CALLBACK, MALIGNANT, or NORMAL (no finding);
- ``abnormality_type``: mass, calcification, or none;
- ``lesion``: lesion or tissue (a background-tissue tile, or an image without findings).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["SEVERITY", "ROI_FILES_MISSING", "Finding", "ImageRecord", "worst_finding"]

# Why a finding has no ROI tiles when its crop and mask files are missing (its image is still
# prepared whole): one wording for every source and for prepare.
ROI_FILES_MISSING = "ROI mask/crop files not found"

# Every pathology value, in the order used to label a whole image by its worst finding.
SEVERITY = {"NORMAL": 0, "BENIGN_WITHOUT_CALLBACK": 1, "BENIGN": 2, "MALIGNANT": 3}


@dataclass
class Finding:
    """One annotated abnormality. ``roi`` is source-specific: the ROI files of a CBIS-DDSM
    finding, or the circle (x, y, radius; top-left origin) of a mini-MIAS one."""

    abnormality_id: int
    abnormality_type: str
    pathology: str
    roi: dict
    subtlety: int = 0


@dataclass
class ImageRecord:
    image_id: str  # the source's own key: series folder (CBIS-DDSM) or mdbNNN (mini-MIAS)
    url: str
    patient_id: str  # the source's anonymised patient key
    split: str = ""  # assigned by prepare: train, val or test
    laterality: str = ""
    view: str = ""
    breast_density: int = 0
    findings: list[Finding] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ImageRecord:
        findings = [Finding(**f) for f in data.get("findings", [])]
        return cls(**{**data, "findings": findings})


def worst_finding(findings: list[Finding]) -> Finding | None:
    """The most severe finding of an image (its label in the whole-image view)."""
    return max(findings, key=lambda f: SEVERITY[f.pathology], default=None)
