"""Classification tasks over the labels every tile carries; chosen at search time."""

from __future__ import annotations

from dataclasses import dataclass

from tuner.errors import UserError, unknown_choice

__all__ = ["Task", "TASKS", "get_task"]


@dataclass(frozen=True)
class Task:
    """Which column of a shard is the label, and how its values map to class indices."""

    name: str
    column: str
    classes: tuple[str, ...]
    mapping: dict[str, int]

    @property
    def positive(self) -> str:
        """The class whose probability is reported (binary tasks: the second class)."""
        return self.classes[-1]

    def counts(self, split_entry: dict) -> list[int]:
        """Tiles per class in one split of a manifest view (for class weights)."""
        counts = [0] * len(self.classes)
        for value, n in split_entry[self.column].items():
            if value in self.mapping:
                counts[self.mapping[value]] += n
        return counts


TASKS = {
    task.name: task
    for task in (
        Task(
            "benign_vs_malignant",
            "pathology",
            ("benign", "malignant"),
            # BENIGN_WITHOUT_CALLBACK stays its own value in the shards; benign for this task.
            {"BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0, "MALIGNANT": 1},
        ),
        Task(
            "mass_vs_calcification",
            "abnormality_type",
            ("mass", "calcification"),
            {"mass": 0, "calcification": 1},
        ),
    )
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise UserError(unknown_choice("task", name, TASKS))
    return TASKS[name]
