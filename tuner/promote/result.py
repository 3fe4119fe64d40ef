"""What a promotion returns: ``promotion.json`` as an object."""

from __future__ import annotations

from dataclasses import dataclass, field

from tuner import storage

__all__ = [
    "PROMOTIONS",
    "PLAN_FILE",
    "PROMOTION_FILE",
    "OOF_PREDICTIONS",
    "TEST_PREDICTIONS",
    "Promotion",
    "promotions",
    "read_promotion",
    "latest_promotion",
]

PROMOTIONS = "promotions"
FINAL = "final"  # a promotion's final model: promotions/<id>/final
PLAN_FILE, PROMOTION_FILE = "plan.json", "promotion.json"
# The winner's calibrated OOF scores and the test look's per-image scores (labels and
# class probabilities), for the report's curves; beside promotion.json.
OOF_PREDICTIONS, TEST_PREDICTIONS = "oof_predictions.json", "test_predictions.json"


@dataclass(frozen=True)
class Promotion:
    """A finished promotion of an experiment.

    Attributes:
        id: its name (``EXP/promotions/<id>``).
        final_model: URL of the final model (``final/``, with ``model.json``): give it to
            ``evaluate``, ``predict`` or ``best --download``.
        winner: the chosen candidate (search trial, OOF AUC mean and 95% interval).
        threshold: the operating threshold (two classes), fixed on OOF predictions.
        temperature: the temperature scaling fitted on OOF predictions.
        test: the one test look's report (None when the dataset has no test split).
        ranking: every candidate, best first (by the OOF AUC interval's lower bound).
    """

    id: str
    url: str
    final_model: str
    winner: dict
    threshold: float | None
    temperature: float
    test: dict | None
    ranking: list[dict]
    data: dict = field(repr=False, default_factory=dict)  # promotion.json

    @classmethod
    def from_json(cls, url: str, data: dict) -> Promotion:
        return cls(
            id=data["id"],
            url=url,
            # Where the promotion folder is now, not the URL recorded when it was written: a
            # moved experiment still finds it, and an edited file cannot point elsewhere.
            final_model=storage.join(url, FINAL),
            winner=data["winner"],
            threshold=data["threshold"],
            temperature=data["calibration"]["temperature"],
            test=data["test"],
            ranking=data["ranking"],
            data=data,
        )

    def summary(self) -> str:
        """One line: the winner, its OOF AUC with interval, the threshold and the test AUC."""
        w = self.winner
        line = (
            f"promotion {self.id}: trial {w['trial_id']} won, OOF AUC {w['oof_auc_mean']:.3f} "
            f"[{w['oof_auc_95'][0]:.3f}, {w['oof_auc_95'][1]:.3f}]"
        )
        if self.threshold is not None:
            line += f", threshold {self.threshold:.3f}"
        if self.test:
            two_view = "two_view" in (self.test.get("fusion") or "") and "per_breast" in self.test
            level = self.test["per_breast" if two_view else "per_image"]
            auc = level["metrics"].get("roc_auc")
            low, high = level["intervals_95"].get("roc_auc", [None, None])
            if auc is not None and low is not None:
                per = " per breast" if two_view else ""
                line += f"; test AUC{per} {auc:.3f} [{low:.3f}, {high:.3f}] (look {self.look})"
        return line

    @property
    def look(self) -> int | None:
        """Which look at the test split this promotion's was (1: the first)."""
        return (self.test or {}).get("test_look", {}).get("look") if self.test else None

    def to_dict(self) -> dict:
        return self.data


def promotions(experiment: str) -> list[str]:
    """Ids of the promotions of ``experiment`` (finished or not), oldest first."""
    fs, path = storage.filesystem(storage.join(experiment, PROMOTIONS))
    if not fs.exists(path):
        return []
    found = []
    for folder in fs.ls(path, detail=False):
        name = folder.rstrip("/").rsplit("/", 1)[-1]
        plan_url = storage.join(experiment, PROMOTIONS, name, PLAN_FILE)
        if storage.exists(plan_url):
            plan = storage.read_json(plan_url)
            found.append((plan["created"], plan["id"]))
    return [i for _, i in sorted(found)]


def latest_promotion(experiment: str) -> Promotion | None:
    """The newest finished promotion of ``experiment``, or None."""
    for promotion_id in reversed(promotions(experiment)):
        found = read_promotion(experiment, promotion_id)
        if found is not None:
            return found
    return None


def read_promotion(experiment: str, promotion_id: str) -> Promotion | None:
    """The finished promotion ``promotion_id`` of ``experiment``, or None if unfinished."""
    url = storage.join(experiment, PROMOTIONS, promotion_id)
    path = storage.join(url, PROMOTION_FILE)
    return Promotion.from_json(url, storage.read_json(path)) if storage.exists(path) else None
