"""The Ray dashboard, the cluster's monitoring view, opened as a new user opens it: headless
Chromium (Debian's, driven by Playwright) on the stack's dashboard, token authentication on.
It asks for the token, takes it as the README says, and then shows the submitted search on
the Jobs page and both nodes alive on the Cluster page; with the stack's Prometheus given
as RAY_PROMETHEUS_HOST, its Prometheus health check passes."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.cluster.conftest import SUBMITTED_JOB
from tests.results.test_report import CHROMIUM, CHROMIUM_ARGS


def _shot(page, path) -> None:
    page.screenshot(path=str(path), full_page=True)
    kept = os.environ.get("MAMMOTUNE_SCREENSHOTS")
    if kept:  # for a person to look at
        os.makedirs(kept, exist_ok=True)
        shutil.copy(path, kept)


def test_the_ray_dashboard_in_a_browser_with_its_token(client, submitted, tmp_path):
    assert submitted.returncode == 0, submitted.stdout[-2000:] + submitted.stderr[-2000:]
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    stack = client.stack
    token = (stack.directory / "auth_token").read_text().strip()
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(stack.dashboard)
            # A new user first meets the token prompt, and nothing else works without it.
            expect(page.get_by_text("Authentication Token Required")).to_be_visible()
            assert page.request.get(f"{stack.dashboard}/api/jobs/").status in (401, 403)
            _shot(page, tmp_path / "dashboard-token.png")
            page.get_by_placeholder("Enter your authentication token").fill(token)
            page.get_by_role("button", name="Submit").click()
            expect(page.get_by_text("Authentication Token Required")).to_be_hidden()
            cookies = {c["name"]: c for c in page.context.cookies()}
            assert any(c["httpOnly"] for c in cookies.values()), cookies  # set by the head

            page.goto(f"{stack.dashboard}/#/jobs")
            row = page.get_by_role("row").filter(has_text=SUBMITTED_JOB)
            expect(row).to_be_visible()
            expect(row).to_contain_text("SUCCEEDED")
            expect(row).to_contain_text("tuner search")
            _shot(page, tmp_path / "dashboard-jobs.png")

            page.goto(f"{stack.dashboard}/#/cluster")
            alive = page.get_by_role("row").filter(has_text="ALIVE")
            expect(alive).to_have_count(2)
            _shot(page, tmp_path / "dashboard-cluster.png")

            health = page.request.get(f"{stack.dashboard}/api/prometheus_health")
            assert health.ok and health.json()["result"] is True, health.text()
        finally:
            browser.close()
