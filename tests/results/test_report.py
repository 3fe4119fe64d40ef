"""The HTML report, opened in headless Chromium as a person would open it: every image
decodes, the leaderboard has a row per trial, nothing is fetched, the console stays clean."""

import json
import os
import shutil

import pytest

from tuner.cli import main
from tuner.results.leaderboard import leaderboard
from tuner.results.ledger import read_ledger
from tuner.search.experiment import trial_results

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MITCHELL = {
    "model_details",
    "intended_use",
    "factors",
    "metrics",
    "evaluation_data",
    "training_data",
    "quantitative_analyses",
    "ethical_considerations",
    "caveats_and_recommendations",
}


def open_in_chromium(page_path, screenshot) -> dict:
    """Load a local HTML file in headless Chromium (Debian's, driven by Playwright); what
    its images decoded to, its leaderboard rows, console errors and every request made."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    errors, requests = [], []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(f"file://{page_path}", wait_until="load")
            found = page.evaluate(
                """() => ({
                    images: [...document.images].map(i => [i.complete, i.naturalWidth]),
                    leaderboard: document.querySelectorAll('#leaderboard tbody tr').length,
                    headings: [...document.querySelectorAll('h2')].map(h => h.textContent),
                })"""
            )
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    kept = os.environ.get("MAMMOTUNE_SCREENSHOTS")
    if kept:  # for a person to look at
        os.makedirs(kept, exist_ok=True)
        shutil.copy(screenshot, kept)
    return {**found, "errors": errors, "requests": requests}


def test_the_report_of_a_promoted_search_opens_whole_in_a_browser(promoted, tmp_path, capsys):
    experiment, promotion = promoted
    out = tmp_path / "report" / "report.html"
    capsys.readouterr()
    assert main(["report", str(experiment), "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["sections"] == ["search", "data", "promotion", "model card"]
    assert result["notes"] == []  # the study, the data and the promotion were all read

    seen = open_in_chromium(out, tmp_path / "report.png")
    assert seen["errors"] == []
    assert [r for r in seen["requests"] if not r.startswith("data:")] == [f"file://{out}"]
    # Learning curves, importance, slice, parallel coordinates; ROC, PR and calibration on
    # OOF and on test: every one decoded.
    assert len(seen["images"]) == result["figures"] >= 10
    assert all(done and width > 0 for done, width in seen["images"])
    trials = leaderboard(str(experiment)).trials
    assert seen["leaderboard"] == len(trials) == 3
    assert seen["headings"] == ["Search", "Data", "Promotion", "Model card"]

    page = out.read_text()
    assert "http://" not in page and "https://" not in page
    assert f"Test looks recorded ({len(read_ledger(str(experiment)))})" in page
    assert f"{promotion['winner']['trial_id']}" in page

    # The compute ledger is each trial's resources x its reported training time.
    import fsspec

    fs = fsspec.filesystem("file")
    seconds = {
        t.trial_id: trial_results(fs, str(experiment / f"trial_{t.trial_id}"))[-1]["time_total_s"]
        for t in trials
    }
    compute = result["compute"]
    assert compute["cpu_hours"] == pytest.approx(sum(seconds.values()) / 3600)  # 1 CPU each
    assert {t["trial_id"]: t["seconds"] for t in compute["trials"]} == pytest.approx(seconds)

    card = json.loads((out.parent / "model_card.json").read_text())
    assert MITCHELL <= set(card)
    assert card["model"]["url"] == promotion["final_model"]
    caveats = " ".join(card["caveats_and_recommendations"])
    assert "SYNTHETIC" in caveats and "no normal exams" in caveats and "1990s" in caveats

    # A second report to the same file is refused; the first is kept.
    before = out.read_bytes()
    assert main(["report", str(experiment), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == before


def test_a_search_with_no_finished_trial_gets_a_report_that_says_so(experiment, tmp_path, capsys):
    # A search whose driver stopped before its first trial: search.json and nothing else.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(experiment / "search.json", fresh / "search.json")
    out = tmp_path / "r" / "report.html"
    assert main(["report", str(fresh), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "no trial has finished yet" in printed
    page = out.read_text()
    assert "No trial of this search has finished yet" in page
    assert "No model yet" in page and not (out.parent / "model_card.json").exists()
    seen = open_in_chromium(out, tmp_path / "empty.png")
    assert seen["errors"] == [] and seen["images"] == [] and seen["leaderboard"] == 0

    # The API takes a Path, the CLI a file:// URL: both local files.
    import tuner

    again = tuner.Experiment.open(str(fresh)).report(out=tmp_path / "api" / "report.html")
    assert again.path == str(tmp_path / "api" / "report.html")
    assert main(["report", str(fresh), "--out", f"file://{tmp_path}/url/report.html"]) == 0
    assert (tmp_path / "url" / "report.html").is_file()

    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "no mammotune experiment" in capsys.readouterr().err


def test_a_bucket_experiments_study_is_read_from_its_snapshot_copy(experiment, bucket, tmp_path):
    """A bucket experiment without --study (the search's database is gone with its cluster):
    the report reads the copy Tune's snapshots put beside it, and leaves no temp copy."""
    import glob
    import tempfile

    import fsspec
    import optuna

    from tuner.results.report import _study

    meta = json.loads((experiment / "search.json").read_text())
    original = optuna.load_study(study_name=meta["study"]["name"], storage=meta["study"]["storage"])
    snapshot = tmp_path / "snapshot.db"
    optuna.copy_study(
        from_study_name=original.study_name,
        from_storage=meta["study"]["storage"],
        to_storage=f"sqlite:///{snapshot}",
    )
    url = f"{bucket}/tiny"
    fsspec.filesystem("s3").put(str(snapshot), f"{url}/optuna.db")
    gone = {"storage": "sqlite:////nonexistent/head-node/optuna.db", "snapshot": "optuna.db"}
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "mammotune-study-*")))

    study, why = _study({**meta, "study": {**meta["study"], **gone}}, url)

    assert why is None and study is not None
    assert [t.params for t in study.trials] == [t.params for t in original.trials]
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "mammotune-study-*"))) == before
    study, why = _study({**meta, "study": {**meta["study"], **gone}}, f"{bucket}/elsewhere")
    assert study is None and "holds no copy" in why


def test_the_report_connects_only_to_a_database_the_user_names(
    experiment, postgres, tmp_path, monkeypatch
):
    """An edited search.json naming a database must not send this machine's PGPASSWORD
    there: the report reads the experiment's own copy of the study, or a URL given to it."""
    import optuna

    from tuner.results.report import _study

    meta = json.loads((experiment / "search.json").read_text())
    name = meta["study"]["name"]
    moved = tmp_path / "exp"
    moved.mkdir()
    monkeypatch.setenv("PGPASSWORD", postgres.password)
    optuna.copy_study(
        from_study_name=name,
        from_storage=meta["study"]["storage"],
        to_storage=postgres.url,
        to_study_name=name,
    )
    # The URL in the file is a database of the user's: still not connected to unasked.
    edited = {**meta, "study": {"storage": postgres.url, "name": name}}
    study, why = _study(edited, str(moved))
    assert study is None and "read only when named" in why and postgres.password not in why
    study, why = _study(edited, str(moved), postgres.url)
    assert why is None and len(study.trials) == len(
        optuna.load_study(study_name=name, storage=meta["study"]["storage"]).trials
    )
    # A wrong password in a named URL: a note, the password masked.
    wrong = postgres.url.replace("mammotune@", "mammotune:wrong-pw@")
    monkeypatch.delenv("PGPASSWORD")
    study, why = _study(edited, str(moved), wrong)
    assert study is None and "wrong-pw" not in why and "***" in why
