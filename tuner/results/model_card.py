"""A model card (Mitchell et al., 2019, "Model Cards for Model Reporting") for a checkpoint or
a promotion's final model, filled from what the model carries and what its experiment,
dataset and promotion recorded: nothing in it is typed in by hand but the fixed statements
about intended use and the data's known limits.

Reads storage alone; parts it cannot reach (a dataset or experiment not at hand) say so.
"""

from __future__ import annotations

import time

from tuner import __version__, storage
from tuner.errors import UserError
from tuner.training.checkpoint import ModelSet, read_meta

__all__ = ["CARD_FORMAT", "model_card", "read_dataset"]

CARD_FORMAT = "mammotune-model-card/1"

_INTENDED = {
    "primary_uses": [
        "Research on mammography classification: comparing architectures, transfer learning "
        "and training settings, and studying where a model fails.",
    ],
    "primary_users": ["Machine-learning and radiology researchers."],
    "out_of_scope": [
        "Not a medical device: not cleared or approved by any regulator. Not for diagnosis, "
        "screening, triage or any decision about a patient.",
        "Images unlike its training data: full-field digital mammography, tomosynthesis, "
        "other vendors, sites or populations, without a new validation on them.",
    ],
}

_CBIS_CAVEATS = [
    "CBIS-DDSM is digitised screen-film mammography from the 1990s (DDSM), scanned at US "
    "sites; today's screening is digital. Expect a shift on digital images.",
    "CBIS-DDSM has no normal exams: every case holds a finding. Tissue tiles of the same "
    "images stand in for normal tissue; a normal screening population is not represented, "
    "so prevalence-dependent figures (precision, NPV) do not carry over to screening.",
    "No race, ethnicity or age is recorded in CBIS-DDSM: performance across those groups is "
    "unknown.",
    "Pathology labels: BENIGN_WITHOUT_CALLBACK is counted as benign.",
]
_MIAS_CAVEATS = [
    "mini-MIAS is 322 digitised films from one UK screening programme (1990s), reduced to "
    "1024x1024: small, old and from one source.",
]
_SYNTH_CAVEATS = [
    "SYNTHETIC DATA: the images are generated phantoms laid out like the real dataset, not "
    "mammograms. Every figure here describes the pipeline, not clinical performance.",
]
_ETHICS = [
    "Mammograms are health data: use de-identified images under their source's licence and "
    "an ethics approval fitting the use.",
    "A false negative delays a cancer's diagnosis; a false positive leads to recalls and "
    "biopsies. The operating threshold trades one for the other and was fixed for a recall "
    "goal on out-of-fold predictions; check it on the population it would serve.",
    "Automation bias: readers shown a model's output may over-trust it.",
]


def _read(url: str | None) -> dict | None:
    if url and storage.exists(url):
        return storage.read_json(url)
    return None


def read_dataset(data_url: str | None, experiment: str | None = None) -> tuple[dict | None, bool]:
    """(the prepared dataset's manifest, or None when it cannot be reached; whether its
    source is a synthetic dataset).

    The copy a search keeps of its dataset's manifest (``EXP/dataset_manifest.json``) is read
    first when ``data_url`` is that search's dataset; no URL written inside a manifest is
    followed (``prepare`` records there whether its source was synthetic).
    """
    from tuner.data.stream import MANIFEST
    from tuner.search.experiment import DATASET_COPY

    manifest = None
    if data_url and experiment:
        copy = _read(storage.join(experiment, DATASET_COPY))
        if copy and copy.get("url") == storage.normalize(data_url):
            manifest = copy.get("manifest")
    if manifest is None and data_url:
        manifest = _read(storage.join(data_url, MANIFEST))
    source = (manifest or {}).get("source", {})
    if "synthetic" in source:
        return manifest, bool(source["synthetic"])
    # A manifest from before prepare recorded it: look beside its source, as then (a read of
    # one marker's existence; an unreadable source counts as not synthetic).
    from tuner.data.synthetic import MARKER

    try:
        synthetic = bool(source.get("url")) and storage.exists(storage.join(source["url"], MARKER))
    except (UserError, OSError, ValueError):
        synthetic = False
    return manifest, synthetic


def _data_summary(data_url: str | None, experiment: str | None = None) -> dict:
    manifest, synthetic = read_dataset(data_url, experiment)
    if manifest is None:
        return {"dataset": data_url, "available": False}
    patients = {k: v.get("patients") for k, v in manifest.get("splits", {}).items()}
    return {
        "dataset": data_url,
        "available": True,
        "dataset_id": manifest.get("id"),
        "params_hash": manifest.get("params_hash"),
        "source": manifest.get("source", {}).get("kind"),
        "synthetic": synthetic,
        "patients": patients,
        "leakage": manifest.get("leakage"),
        "skipped_inputs": len(manifest.get("skipped", [])),
    }


def model_card(models: ModelSet, *, experiment: str | None = None) -> dict:
    """The model card of ``models`` as a JSON-able dict, under Mitchell et al.'s headings:
    model_details, intended_use, factors, metrics, evaluation_data, training_data,
    quantitative_analyses, ethical_considerations, caveats_and_recommendations.

    Args:
        experiment: the experiment it came from (default: the one ``model.json`` names).
    """
    from tuner.results.ledger import read_ledger

    meta = read_meta(models.members[0])
    config, task = meta["config"], meta["task"]
    experiment = experiment or models.meta.get("experiment")
    promotion = None
    if models.meta.get("promotion") and experiment:
        folder = storage.join_under(
            storage.join(experiment, "promotions"), models.meta["promotion"], what="promotion"
        )
        promotion = _read(storage.join(folder, "promotion.json"))
    data_url = config.get("data")
    data = _data_summary(data_url, experiment)
    looks = read_ledger(experiment) if experiment and storage.exists(experiment) else []

    details = {
        "name": f"mammotune {task['name']} classifier ({config['backbone']})",
        "version": models.meta.get("promotion") or meta.get("epoch"),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "type": (
            f"{config['backbone']} CNN with an MLP head (512-32), input "
            f"{config['view']} view at {config['input_size']} px, "
            + (
                "two views of a breast (CC + MLO) through one shared backbone, late fusion, "
                if config.get("fusion") == "two_view"
                else ""
            )
            + (
                f"{len(models.members)} fold models averaged"
                if len(models.members) > 1
                else "one model"
            )
            + (", flip TTA" if models.tta else "")
            + (f", temperature {models.temperature:.3f}" if models.temperature != 1.0 else "")
        ),
        "task": task["name"],
        "classes": task["classes"],
        "transfer_learning": config.get("transfer"),
        "training": {
            k: config.get(k)
            for k in ("lr", "batch_size", "epochs", "dropout", "class_weight", "enhance")
        },
        "selected_by": (
            f"promotion {models.meta['promotion']} of experiment {experiment}: patient-grouped "
            "cross-validation of the search's best configurations, reseeded"
            if promotion or models.meta.get("promotion")
            else f"hyperparameter search {experiment}"
            if experiment
            else "not recorded"
        ),
        "software": f"mammotune {__version__}",
        "license": "Apache-2.0 (code); the weights follow the training data's licence",
    }
    metrics = {
        "performance_measures": [
            "ROC AUC (threshold-free), with 95% patient-bootstrap intervals",
            "sensitivity (recall), specificity, precision and F1 at the operating threshold",
        ],
        "decision_threshold": models.threshold,
        "threshold_chosen_on": (
            f"out-of-fold predictions, for recall >= {models.meta.get('target_recall')}"
            if models.threshold is not None
            else "none fixed (0.5 by default)"
        ),
        "variation": "95% percentile bootstrap, resampling patients with all their rows",
    }
    quantitative: dict = {"validation": meta.get("metrics", {})}
    evaluation = {"test_split": None, "test_looks_recorded": len(looks)}
    if promotion:
        winner = promotion.get("winner", {})
        quantitative["out_of_fold"] = {
            "roc_auc_mean": winner.get("oof_auc_mean"),
            "roc_auc_95": winner.get("oof_auc_95"),
            "at_threshold": promotion.get("calibration", {}).get("oof_at_threshold"),
        }
        test = promotion.get("test")
        if test:
            quantitative["test"] = {
                "per_image": {
                    "metrics": test["per_image"]["metrics"],
                    "intervals_95": test["per_image"]["intervals_95"],
                },
                "look": (test.get("test_look") or {}).get("look"),
                "subgroups": test.get("subgroups"),
            }
            evaluation["test_split"] = {
                "rows": test["per_image"]["rows"],
                "patients": test["per_image"].get("patients"),
            }
    caveats = []
    if data.get("synthetic"):
        caveats += _SYNTH_CAVEATS
    if data.get("source") == "mini-mias":
        caveats += _MIAS_CAVEATS
    else:
        caveats += _CBIS_CAVEATS
    if len(looks) > 1:
        caveats.append(
            f"The test split of this experiment was looked at {len(looks)} times: figures "
            "after the first look are no longer unbiased."
        )
    if not promotion:
        caveats.append(
            "Not promoted: chosen by validation score alone, which overstates the best of "
            "many trials (the winner's curse); run `mammotune promote` before relying on it."
        )
    return {
        "format": CARD_FORMAT,
        "model_details": details,
        "intended_use": _INTENDED,
        "factors": {
            "relevant": [
                "breast density (1-4)",
                "abnormality type (mass, calcification)",
                "subtlety (1-5)",
                "view (CC, MLO)",
                "scanner / digitiser",
            ],
            "evaluation": "subgroup tables of the promotion (out-of-fold and test)"
            if promotion
            else "none evaluated",
        },
        "metrics": metrics,
        "evaluation_data": {**evaluation, "dataset": data},
        "training_data": {
            "dataset": data,
            "splits": "train and validation by patient (no patient in two splits)",
            "preprocessing": {
                "view": config["view"],
                "input_size": config["input_size"],
                "enhance": config.get("enhance", "none"),
                "fusion": config.get("fusion", "single"),
            },
        },
        "quantitative_analyses": quantitative,
        "ethical_considerations": _ETHICS,
        "caveats_and_recommendations": caveats,
        "model": {"url": models.url, "members": models.members},
    }
