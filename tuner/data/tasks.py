"""Classification tasks over the labels every tile carries; chosen at search time."""

from __future__ import annotations

from dataclasses import dataclass

from tuner.errors import UserError, unknown_choice

__all__ = ["Task", "TASKS", "get_task"]


@dataclass(frozen=True)
class Task:
    """Which label columns define the class, and how their values map to class indices.
    Rows whose values are not in ``mapping`` (for example tissue tiles in a benign/malignant
    task) are not part of the task."""

    name: str
    columns: tuple[str, ...]
    classes: tuple[str, ...]
    mapping: dict[tuple[str, ...], int]

    def label(self, values: tuple[str, ...]) -> int | None:
        return self.mapping.get(values)

    def counts(self, split_entry: dict) -> list[int]:
        """Rows per class in one split of a manifest entry (for class weights)."""
        counts = [0] * len(self.classes)
        for combination in split_entry["counts"]:
            index = self.label(tuple(combination[c] for c in self.columns))
            if index is not None:
                counts[index] += combination["rows"]
        return counts


_BENIGN = ("BENIGN", "BENIGN_WITHOUT_CALLBACK")
_TYPES = ("mass", "calcification")

TASKS = {
    task.name: task
    for task in (
        Task(
            "benign_vs_malignant",
            ("pathology",),
            ("benign", "malignant"),
            # BENIGN_WITHOUT_CALLBACK stays its own value in the shards; benign here.
            {("BENIGN",): 0, ("BENIGN_WITHOUT_CALLBACK",): 0, ("MALIGNANT",): 1},
        ),
        Task(
            "mass_vs_calcification",
            ("abnormality_type",),
            _TYPES,
            {(t,): i for i, t in enumerate(_TYPES)},
        ),
        Task(
            "lesion_vs_tissue", ("lesion",), ("tissue", "lesion"), {("tissue",): 0, ("lesion",): 1}
        ),
        Task(
            "four_class",
            ("pathology", "abnormality_type"),
            ("benign_mass", "malignant_mass", "benign_calcification", "malignant_calcification"),
            {
                **{(p, "mass"): 0 for p in _BENIGN},
                ("MALIGNANT", "mass"): 1,
                **{(p, "calcification"): 2 for p in _BENIGN},
                ("MALIGNANT", "calcification"): 3,
            },
        ),
    )
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise UserError(unknown_choice("task", name, TASKS))
    return TASKS[name]
