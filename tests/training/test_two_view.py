"""Two-view models: CC and MLO of one breast as one sample.

The pairing rule and the pair stream run on the session's prepared synthetic CBIS-DDSM. The
comparison with single-view models runs on a dataset written here, through the real whole-
image preprocessing and shard format, where what tells the classes apart can only be seen
across the two views: a malignant breast shows its lesion in one view only; a benign breast
shows nothing, or a finding in both views (the same look). Per image, a finding is then as
likely benign as malignant, so a single-view model's per-breast average is near chance, while
one model that sees both views can learn that a finding in one view only is the malignant one.
"""

import hashlib
import json
import zlib

import numpy as np
import pytest
from torch.utils.data import DataLoader

from tuner.cli import main
from tuner.data import _phantom, preprocess, shards
from tuner.data.pairs import PairStream, breast_key, pair_breasts
from tuner.data.prepare import FORMAT, MANIFEST, PREPROCESSING, tile_key
from tuner.data.stream import load_manifest
from tuner.data.tasks import get_task

pytestmark = pytest.mark.slow

SIZE = 64  # whole images 64 x 43
TASK = get_task("benign_vs_malignant")


def _row(at, patient, side, view, label, image_id=None):
    return {
        "at": at,
        "patient_id": patient,
        "laterality": side,
        "view": view,
        "image_id": image_id or f"{patient}_{side}_{view}",
        "label": label,
    }


def test_pairing_rule_one_sample_per_cc_mlo_pair_labelled_by_the_worst_image():
    rows = [
        _row((0, 0), "P1", "LEFT", "CC", 0),
        _row((1, 0), "P1", "LEFT", "MLO", 1),
        _row((0, 1), "P1", "RIGHT", "MLO", 0),  # one view only: fed twice
        # the same mammogram under a mass and a calcification case: two CCs, one MLO
        _row((0, 2), "P2", "LEFT", "CC", 0, "Calc-Training_P2_LEFT_CC"),
        _row((1, 1), "P2", "LEFT", "CC", 1, "Mass-Training_P2_LEFT_CC"),
        _row((1, 2), "P2", "LEFT", "MLO", 0, "Mass-Training_P2_LEFT_MLO"),
    ]
    pairs = pair_breasts(rows)
    assert [(p.breast, p.cc, p.mlo, p.label, p.single) for p in pairs] == [
        ("P1_LEFT", (0, 0), (1, 0), 1, False),
        ("P1_RIGHT", (0, 1), (0, 1), 0, True),
        ("P2_LEFT", (0, 2), (1, 2), 1, False),
        ("P2_LEFT", (1, 1), (1, 2), 1, False),
    ]
    assert pairs[0].row["image_id"] == "P1_LEFT" and pairs[0].row["view"] == "CC+MLO"
    assert pairs[1].row["view"] == "MLO"


def _stream(prepared, **kwargs):
    manifest = load_manifest(str(prepared))
    size = manifest["tiles"][next(k for k in manifest["tiles"] if k.startswith("whole"))]["size"]
    options = dict(size=size, split="train", task=TASK)
    return PairStream(str(prepared), manifest, **{**options, **kwargs})


def test_pair_stream_yields_each_breast_cc_first_workers_share_breasts(prepared):
    stream = _stream(prepared)
    manifest = load_manifest(str(prepared))
    images = stream.image_rows(["image_id", "view", "patient_id"])
    breasts = {r["breast"] for r in images}
    assert stream.breasts == len(breasts) and len(stream) >= len(breasts)
    # Every pair is the CC then the MLO of one breast, with the breast's worst label.
    for pair in stream.pairs:
        cc, mlo = (next(r for r in stream._planned()[0] if r["at"] == at) for at in pair_at(pair))
        assert breast_key(cc) == breast_key(mlo) == pair.breast
        assert pair.single or (cc["view"], mlo["view"]) == ("CC", "MLO")
        same = [r["label"] for r in stream._planned()[0] if breast_key(r) == pair.breast]
        assert pair.label == max(same)
    # Breasts with one view only are fed it twice, and counted.
    views = {}
    for r in images:
        views.setdefault(r["breast"], set()).add(r["view"])
    assert stream.single_view_breasts == sum(len(v) == 1 for v in views.values())
    # Unshuffled: the yielded labels follow context(); shuffled and split among workers:
    # every pair once.
    yielded = [int(y) for _, y in stream]
    assert yielded == [r["label"] for r in stream.context(["image_id"])]
    shuffled = _stream(prepared, shuffle=True, seed=3, buffer_size=8)
    seen = []
    shape = tuple(manifest["tiles"][tile_key("whole", _size(manifest), "none")]["shape"])
    for views, _ in DataLoader(shuffled, batch_size=4, num_workers=2):
        assert tuple(views.shape[1:]) == (2, *shape)
        seen += [bytes(v.numpy()) for v in views]
    assert len(seen) == len(stream) and sorted(seen) == sorted(bytes(v.numpy()) for v, _ in stream)
    # Patients of other splits never appear: pairs never cross splits.
    val = _stream(prepared, split="val")
    assert not {p.breast for p in val.pairs} & breasts


def pair_at(pair):
    return pair.cc, pair.mlo


def _size(manifest) -> int:
    return next(v["size"] for v in manifest["tiles"].values() if v["view"] == "whole")


# -- a dataset where only the two views together tell the classes apart --
# benign: nothing, or a finding in both views; malignant: a finding in one view only. Findings
# alone say a little (benign breasts with one are the fewer), so a single-view model learns
# to see them, and then ranks at best the clean breasts below the malignant and the breasts
# with two findings above them.
KINDS = ("clean", "one", "both", "clean", "one")


def _image(rng, view: str, finding: bool) -> np.ndarray:
    """A 150 x 100 phantom breast (uint16), with a bright round finding when asked."""
    image, _, allowed = _phantom.render_breast(rng, 150, 100, view=view, density=1, scale=0.03)
    if finding:
        ys, xs = np.nonzero(allowed)
        pick = int(rng.integers(len(ys)))
        yy, xx = np.mgrid[-20:21, -20:21]
        blob = np.exp(-(yy**2 + xx**2) / (2 * 7.0**2)).astype(np.float32) * 0.6
        lesion = _phantom.Lesion(blob, blob > 0.1)
        _phantom.paste(image, lesion, (int(ys[pick]), int(xs[pick])))
    return (np.clip(image, 0, 1) * 60000 + 200).astype(np.uint16)


def _whole(pixels: np.ndarray) -> np.ndarray:
    source = preprocess.SourceImage(pixels)
    return preprocess.model_inputs(source, view="whole", enhance="none", sizes=(SIZE,))[SIZE]


def write_two_view_dataset(root, breasts: dict[str, int], seed: int = 0) -> dict:
    """Shards and a manifest of whole images (two shards per split, the views of a breast
    often in different ones), one patient per breast; returns each breast's kind."""
    rng = np.random.default_rng(seed)
    key = tile_key("whole", SIZE, "none")
    tiles = {"view": "whole", "size": SIZE, "enhance": "none", "splits": {}}
    kinds = {}
    for split, count in breasts.items():
        rows = []
        for n in range(count):
            patient, side = f"{split[:2].upper()}_{n:04d}", "LEFT"
            kind = KINDS[n % len(KINDS)]
            kinds[f"{patient}_{side}"] = kind
            shown = int(rng.integers(2))  # the view a malignant lesion is seen in
            for v, view in enumerate(("CC", "MLO")):
                finding = kind == "both" or (kind == "one" and v == shown)
                picture = _whole(_image(rng, view, finding))
                rows.append(
                    {
                        "image": picture,
                        "height": picture.shape[0],
                        "width": picture.shape[1],
                        "pathology": "MALIGNANT" if kind == "one" else "BENIGN",
                        "abnormality_type": "mass",
                        "lesion": "lesion",
                        "patient_id": patient,
                        "image_id": f"{patient}_{side}_{view}",
                        "abnormality_id": 1,
                        "view": view,
                        "laterality": side,
                        "breast_density": 1,
                        "subtlety": 3,
                        "variant": 0,
                    }
                )
        entry = {"rows": len(rows), "counts": [], "shards": []}
        for label in ("BENIGN", "MALIGNANT"):
            entry["counts"].append(
                {
                    "pathology": label,
                    "abnormality_type": "mass",
                    "lesion": "lesion",
                    "rows": sum(r["pathology"] == label for r in rows),
                }
            )
        for part in range(2):  # by a hash of the image: a breast's views often split
            members = [r for r in rows if zlib.crc32(r["image_id"].encode()) % 2 == part]
            data = shards.encode(members)
            path = f"{key}/{split}/{shards.content_name(data)}"
            (root / key / split).mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(data)
            digest = hashlib.sha256(data).hexdigest()
            entry["shards"].append({"path": path, "rows": len(members), "sha256": digest})
        tiles["splits"][split] = entry
        tiles["shape"] = list(rows[0]["image"].shape)
    manifest = {
        "format": FORMAT,
        "preprocessing": PREPROCESSING,
        "id": f"two-view-test-{seed}",
        "params": {"views": ["whole"], "whole_sizes": [SIZE], "enhance": ["none"]},
        "params_hash": None,
        "source": {"kind": "cbis-ddsm", "edition": "dicom", "bit_depth": 16},
        "splits": {s: {"patients": n} for s, n in breasts.items()},
        "tiles": {key: tiles},
        "notes": [],
        "skipped": [],
    }
    (root / MANIFEST).write_text(json.dumps(manifest))
    return kinds


def _space(folder, fusion: str, epochs: int = 8):
    text = f"""
name: {fusion}
task: benign_vs_malignant
view: whole
metric: val_roc_auc
mode: max
trials: 1
max_concurrent: 1
seed: 0
sampler: {{type: random}}
scheduler: {{type: fifo}}
keep_checkpoints: 1
fixed: {{fusion: {fusion}, epochs: {epochs}, batch_size: 16, input_size: {SIZE}, lr: 1.0e-3}}
space:
  backbone: {{type: categorical, choices: [small_vgg_bn]}}
"""
    path = folder / f"{fusion}.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def two_view_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("two-view") / "data"
    root.mkdir()
    write_two_view_dataset(root, {"train": 200, "val": 45, "test": 60})
    return root


@pytest.fixture(scope="module")
def searched(two_view_data, ray_local, tmp_path_factory):
    """One single-view and one two-view trial, trained the same way on the same breasts."""
    folder = tmp_path_factory.mktemp("two-view-searches")
    experiments = {}
    for fusion in ("single", "two_view"):
        experiments[fusion] = folder / f"exp-{fusion}"
        args = ["search", "--space", str(_space(folder, fusion)), "--data", str(two_view_data)]
        assert main([*args, "--storage", str(experiments[fusion])]) == 0
    return experiments


def _json(capsys, args) -> dict:
    capsys.readouterr()
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_two_view_beats_single_view_per_breast_when_a_lesion_shows_in_one_view(
    searched, two_view_data, capsys
):
    from tuner.results.leaderboard import leaderboard

    figures = {}
    for fusion, experiment in searched.items():
        board = leaderboard(str(experiment))
        (trial,) = board.trials
        assert trial.config["fusion"] == fusion
        report = _json(
            capsys, ["evaluate", trial.checkpoint, "--data", str(two_view_data), "--split", "test"]
        )
        assert report["fusion"] == fusion
        assert report["per_breast"]["rows"] == 60  # one row per breast, each with both views
        figures[fusion] = report["per_breast"]["metrics"]["roc_auc"]
        # Both kinds of trial report the per-breast validation AUC a search can compare.
        assert 0.0 <= trial.metrics["val_breast_roc_auc"] <= 1.0
        if fusion == "two_view":
            # The model's own level: every image row carries its breast's probability.
            assert trial.metrics["val_breasts"] == 45
            assert trial.metrics["val_single_view_breasts"] == 0
    print(f"per-breast test ROC AUC: {figures}")
    # A single-view model can at best rank clean breasts below malignant ones and breasts
    # with two findings above them: AUC 2/3 in expectation. Two views see the difference.
    assert figures["two_view"] >= 0.9
    assert figures["single"] <= 0.8
    assert figures["two_view"] - figures["single"] >= 0.2


def _dicom(path, pixels, *, patient: str, side: str, view: str) -> str:
    from pydicom.uid import generate_uid

    from tuner.data.dicom import write_image

    attributes = {"PatientID": patient, "ImageLaterality": side[0], "ViewPosition": view}
    uid = generate_uid(entropy_srcs=[patient, side, view])
    write_image(
        str(path), pixels, study_uid=uid, series_uid=uid, instance_uid=uid, attributes=attributes
    )
    return str(path)


def test_predict_takes_one_breasts_cc_and_mlo_and_export_keeps_both_views(
    searched, tmp_path, capsys
):
    from tuner.results.leaderboard import leaderboard

    checkpoint = leaderboard(str(searched["two_view"])).trials[0].checkpoint
    rng = np.random.default_rng(7)
    files = {}
    for kind, shown in (("one", "MLO"), ("both", None), ("clean", "")):
        for view in ("CC", "MLO"):
            finding = kind == "both" or view == shown
            files[kind, view] = _dicom(
                tmp_path / f"{kind}-{view}.dcm",
                _image(rng, view, finding),
                patient=f"X_{kind}",
                side="LEFT",
                view=view,
            )
    scores = {}
    for kind in ("one", "both", "clean"):
        # Given MLO first: the headers put the CC first.
        result = _json(capsys, ["predict", checkpoint, files[kind, "MLO"], files[kind, "CC"]])
        (item,) = result["predictions"]
        assert item["file"] == f"{files[kind, 'CC']} + {files[kind, 'MLO']}"
        scores[kind] = item["probabilities"]["malignant"]
    assert scores["one"] > max(scores["both"], scores["clean"])

    bundle = tmp_path / "bundle"
    assert main(["export", checkpoint, str(bundle), "--format", "onnx"]) == 0
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["input"]["shape"] == [None, 2, SIZE, 43] and meta["version"] == 2
    scripted = tmp_path / "bundle-ts"
    assert main(["export", checkpoint, str(scripted), "--format", "torchscript"]) == 0
    for exported in (bundle, scripted):  # traced at a batch of 4, run on one breast
        via = _json(capsys, ["predict", str(exported), files["one", "CC"], files["one", "MLO"]])
        assert via["predictions"][0]["probabilities"]["malignant"] == pytest.approx(
            scores["one"], abs=1e-4
        )

    # Bad input: one line each, exit 2.
    other = _dicom(
        tmp_path / "right-mlo.dcm",
        _image(rng, "MLO", False),
        patient="X_one",
        side="RIGHT",
        view="MLO",
    )
    stranger = _dicom(
        tmp_path / "stranger-mlo.dcm",
        _image(rng, "MLO", False),
        patient="Y",
        side="LEFT",
        view="MLO",
    )
    sideways = _dicom(
        tmp_path / "ml.dcm", _image(rng, "MLO", False), patient="X_one", side="LEFT", view="ML"
    )
    for given, says in (
        ([files["one", "MLO"], sideways], "is a CC view"),
        ([files["one", "CC"]], "give two files"),
        ([files["one", "CC"], files["both", "CC"], files["one", "MLO"]], "give two files"),
        ([files["one", "CC"], files["both", "CC"]], "both CC views"),
        ([files["one", "CC"], other], "two breasts"),
        ([files["one", "CC"], stranger], "two patients"),
    ):
        capsys.readouterr()
        assert main(["predict", checkpoint, *given]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_two_view_on_roi_tiles_or_without_whole_images_is_refused_before_any_trial(
    prepared, two_view_data, tmp_path, capsys
):
    import shutil

    roi = _space(tmp_path, "two_view")
    roi.write_text(roi.read_text().replace("view: whole", "view: roi"))
    capsys.readouterr()
    code = main(
        ["search", "--space", str(roi), "--data", str(prepared), "--storage", str(tmp_path / "a")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "fusion two_view" in err and "view: whole" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "a").exists()

    # A dataset of ROI tiles only (the session's, with its whole images dropped).
    only_roi = tmp_path / "only-roi"
    shutil.copytree(prepared, only_roi)
    manifest = json.loads((only_roi / MANIFEST).read_text())
    manifest["tiles"] = {k: v for k, v in manifest["tiles"].items() if v["view"] == "roi"}
    (only_roi / MANIFEST).write_text(json.dumps(manifest))
    whole = _space(tmp_path, "two_view")
    capsys.readouterr()
    code = main(
        ["search", "--space", str(whole), "--data", str(only_roi), "--storage", str(tmp_path / "b")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "prepared without whole images" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "b").exists()

    # A task whose classes have no worst (which class would a breast take?).
    four = _space(tmp_path, "two_view")
    four.write_text(four.read_text().replace("benign_vs_malignant", "four_class"))
    capsys.readouterr()
    code = main(
        [
            "search",
            "--space",
            str(four),
            "--data",
            str(two_view_data),
            "--storage",
            str(tmp_path / "c"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "worst finding" in err and len(err.splitlines()) == 1


def test_a_two_view_model_is_promoted_and_reported_per_breast(searched, tmp_path, capsys):
    """Cross-validation by patient, the out-of-fold threshold, the one test look and the
    report take two-view candidates as they take single-view ones."""
    import shutil

    experiment = tmp_path / "exp"
    shutil.copytree(searched["two_view"], experiment)
    args = ["promote", str(experiment), "--top", "1", "--folds", "2", "--seeds", "1"]
    assert main([*args, "--set", "epochs=4", "--resamples", "100"]) == 0
    promotion = json.loads((experiment / "promotions" / "p1" / "promotion.json").read_text())
    (ranked,) = promotion["ranking"]
    # Out-of-fold rows are the train+val images, each with its breast's prediction.
    assert ranked["oof_rows"] == 2 * (200 + 45)
    test = promotion["test"]
    assert test["fusion"] == "two_view" and test["per_breast"]["rows"] == 60
    assert test["per_breast"]["metrics"]["roc_auc"] >= 0.9
    out = tmp_path / "report" / "report.html"
    capsys.readouterr()
    assert main(["report", str(experiment), "--out", str(out)]) == 0
    assert "two_view" in out.read_text()


def test_pairs_stream_from_a_bucket_as_from_a_folder(two_view_data, bucket, tmp_path):
    """Planning reads only label columns from the bucket; pixels go through the node cache."""
    import fsspec

    from tuner.data.cache import ShardCache

    fs = fsspec.filesystem("s3")
    fs.put(str(two_view_data), f"{bucket}/data", recursive=True)
    options = dict(size=SIZE, split="val", task=TASK)
    local = PairStream(str(two_view_data), load_manifest(str(two_view_data)), **options)
    remote_url = f"{bucket}/data"
    cache = ShardCache(str(tmp_path / "cache"))
    remote = PairStream(remote_url, load_manifest(remote_url), cache=cache, **options)
    assert [p.breast for p in remote.pairs] == [p.breast for p in local.pairs]
    assert not list((tmp_path / "cache").glob("*.parquet"))  # planned without fetching
    assert [bytes(v.numpy()) for v, _ in remote] == [bytes(v.numpy()) for v, _ in local]
    assert len(list((tmp_path / "cache").glob("*.parquet"))) == 2
