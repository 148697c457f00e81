"""The dashboard end to end, in headless Chromium against a live `backprop serve`: enter the
key, submit a job in the page, watch its loss curve grow while it runs (fed by the events
stream), download its model, cancel another job, upload a dataset, follow a sweep to its
end, and keep screenshots of the job and sweep pages as artifacts."""

from __future__ import annotations

import json
import re
import struct
import uuid
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import REPO_ROOT, Dashboard
from tests.integration.client import TERMINAL
from tests.servers import wait_until
from tests.specs import LONG_DIGITS_MLP, XOR, mlp

# A few seconds of training on two busy cores, so the page sees the curve grow: the long
# digits MLP's many small batches, for fewer epochs, with validation for the val_ curves
# and metrics every 5 steps.
WATCHED_SPEC: dict[str, Any] = {
    **LONG_DIGITS_MLP,
    "name": "digits-watched",
    "validation": {"split": 0.1},
    "training": {"epochs": 40, "batch_size": 8, "seed": 0, "log_every_steps": 5},
}
# One `backprop serve` for the module's tests, also under `pytest -n 2 --dist loadgroup`.
pytestmark = pytest.mark.xdist_group("dashboard")

JOB_URL = re.compile(r"#/jobs/([0-9a-f-]{36})$")
JOB_SECONDS = 120  # compile + train, with the rest of the suite on the same cores

# Four short trials on iris, two at a time, the learning rate drawn on a log scale and
# ASHA judging val_loss after the first epoch (whether it prunes one depends on the draws).
SWEEP: dict[str, Any] = {
    "name": "iris-lr",
    "spec": mlp(
        "builtin:iris",
        [16, 3],
        validation={"split": 0.2},
        metrics=["accuracy"],
        optimizer={"type": "adam", "learning_rate": 0.01},
        training={"epochs": 4, "batch_size": 16, "seed": 0},
        device="cpu",
    ),
    "parameters": {
        "optimizer.learning_rate": {"distribution": "log_uniform", "min": 0.0001, "max": 0.3},
        "model.layers[0].units": {"values": [4, 16, 64]},
    },
    "method": "random",
    "metric": {"name": "val_loss", "goal": "minimize"},
    "max_trials": 4,
    "max_concurrent": 2,
    "early_termination": {"type": "asha", "min_epochs": 1},
    "seed": 0,
}
SWEEP_SECONDS = 300  # four trials one after another on the embedded worker


def test_submit_a_job_in_the_page_and_watch_it_train(dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.open()
    expect(page.locator("main h1")).to_have_text("Jobs")

    page.click("[data-nav=submit]")
    expect(page.locator("#spec-dataset option[value='builtin:digits']")).to_have_count(1)
    # A spec the API rejects: the 422's loc is shown, pointing at the layer's field.
    invalid = {**WATCHED_SPEC, "model": {"layers": [{"type": "dense", "units": -3}]}}
    page.fill("#spec", json.dumps(invalid))
    page.click("button:has-text('Submit job')")
    expect(page.locator(".error")).to_contain_text("body → model → layers → 0 → units")

    page.fill("#spec", json.dumps(WATCHED_SPEC, indent=2))
    page.click("button:has-text('Submit job')")
    page.wait_for_url(JOB_URL)
    match = JOB_URL.search(page.url)
    assert match is not None
    job_id = match.group(1)

    # Sample what the page shows until the job ends: the loss curve's point count must
    # grow while the job is still running.
    samples: list[tuple[str | None, int]] = []

    def finished() -> bool:
        status = page.locator("article.job").get_attribute("data-status")
        points = page.locator("[data-chart=loss]").get_attribute("data-points") or "0"
        samples.append((status, int(points)))
        return status in TERMINAL

    wait_until(finished, JOB_SECONDS, what="the job page to show a finished job", interval=0.2)
    running = sorted({points for status, points in samples if status == "running" and points})
    assert samples[-1][0] == "succeeded", samples[-1]
    assert len(running) >= 2, f"the loss curve did not grow while running: {samples}"
    final_points = samples[-1][1]
    assert final_points > running[0]

    # Every point of the run is on the charts: the losses, accuracy and val_accuracy.
    metrics = dashboard.server.client.http.get(f"/v1/jobs/{job_id}/metrics").json()
    counts = {series["name"]: len(series["step"]) for series in metrics["series"]}
    expect(page.locator("[data-chart=loss]")).to_have_attribute(
        "data-points", str(counts["loss"] + counts["epoch_loss"] + counts["val_loss"])
    )
    expect(page.locator("[data-chart=accuracy]")).to_have_attribute(
        "data-points", str(counts["accuracy"] + counts["val_accuracy"])
    )
    expect(page.locator("[data-chart=loss] canvas")).to_be_visible()
    expect(page.locator(".summary")).to_contain_text("val_accuracy")
    # Where the job's time went, every phase reached.
    for phase in ("queued", "startup", "compile", "training", "finalizing", "total"):
        expect(page.locator("[data-timings]")).to_contain_text(f"{phase} ")

    expect(page.locator("[data-action=cancel]")).to_be_disabled()
    with page.expect_download() as download_info:
        page.click("[data-action=download]")
    download = download_info.value
    assert download.suggested_filename.endswith(".safetensors")
    saved = dashboard.artifacts / "dashboard-model.safetensors"
    download.save_as(saved)
    model = saved.read_bytes()
    assert model == dashboard.server.client.http.get(f"/v1/jobs/{job_id}/model").content
    (header_length,) = struct.unpack("<Q", model[:8])
    assert b"dense_1.kernel" in model[8 : 8 + header_length]

    page.mouse.move(0, 0)  # no hover legend on the screenshot
    dashboard.screenshot("dashboard-job.png", full_page=True)
    assert dashboard.problems == []


def test_the_jobs_list_and_cancel_button(dashboard: Dashboard) -> None:
    job = dashboard.server.client.submit({**LONG_DIGITS_MLP, "name": "to-cancel"})
    page = dashboard.page
    dashboard.open()
    row = page.locator(f"tr[data-job-id='{job['id']}']")
    expect(row.locator("[data-status]")).to_have_text(re.compile("queued|running"))
    expect(row.locator(".progress")).to_have_count(1)

    row.locator("a").click()
    expect(page.locator("article.job")).to_have_attribute("data-status", "running")
    page.click("[data-action=cancel]")
    expect(page.locator(".form-message")).to_contain_text("Cancel requested")
    expect(page.locator("article.job")).to_have_attribute("data-status", "cancelled")
    expect(page.locator("[data-action=cancel]")).to_be_disabled()

    page.click("[data-nav=jobs]")
    expect(row.locator("[data-status]")).to_have_text("cancelled")
    dashboard.screenshot("dashboard-jobs.png")
    assert dashboard.problems == []


def test_upload_a_dataset_in_the_page(dashboard: Dashboard, tmp_path: Path) -> None:
    page = dashboard.page
    dashboard.open("#/datasets")
    expect(page.locator("main h1")).to_have_text("Datasets")
    expect(
        page.locator("[data-table=builtin] tr[data-dataset-id='builtin:digits']")
    ).to_be_visible()

    unknown = tmp_path / "notes.txt"
    unknown.write_text("not a dataset\n")
    page.set_input_files("input[name=file]", unknown)
    page.click("button:has-text('Upload')")
    expect(page.locator(".error")).to_contain_text("body → format")

    page.set_input_files("input[name=file]", REPO_ROOT / "docs" / "examples" / "iris.csv")
    page.fill("input[name=target]", "species")
    page.click("button:has-text('Upload')")
    expect(page.locator(".form-message")).to_contain_text("150 examples")
    uploaded = page.locator("[data-table=uploaded] tr[data-dataset-id]")
    expect(uploaded).to_have_count(1)
    expect(uploaded).to_contain_text("iris")
    expect(uploaded).to_contain_text("classification")
    expect(page.locator("button:has-text('Upload')")).to_be_enabled()
    dashboard.screenshot("dashboard-datasets.png", full_page=True)
    assert dashboard.problems == []


def test_a_wrong_key_is_rejected_and_forgotten(dashboard: Dashboard) -> None:
    page = dashboard.page
    page.goto(f"{dashboard.url}/#/jobs")
    page.fill("#api-key", "bp_not_a_key")
    page.click("button:has-text('Save key')")
    expect(page.locator(".key-form .error")).to_contain_text("did not accept")
    assert page.evaluate("localStorage.getItem('backprop.apiKey')") is None

    page.fill("#api-key", dashboard.api_key)
    page.click("button:has-text('Save key')")
    expect(page.locator("main h1")).to_have_text("Jobs")
    page.reload()  # the key is kept: no second prompt
    expect(page.locator("main h1")).to_have_text("Jobs")
    assert dashboard.problems == []


# The last: a hand-edited job URL that is not valid percent-encoding.
@pytest.mark.parametrize("route", ["", "#/jobs", "#/no-such-page", "#/jobs/%E0%A4%A"])
def test_routes_land_on_a_page(dashboard: Dashboard, route: str) -> None:
    dashboard.open(route)
    expect(dashboard.page.locator("main h1")).to_have_text("Jobs")
    assert dashboard.problems == []


def test_text_from_users_stays_text_and_unknown_jobs_answer_404(dashboard: Dashboard) -> None:
    name = "<img src=x onerror=window.injected=1>"
    job = dashboard.server.client.submit({**XOR, "name": name})
    page = dashboard.page
    dashboard.open()
    expect(page.locator(f"tr[data-job-id='{job['id']}'] a")).to_have_text(name)
    assert page.evaluate("window.injected") is None

    page.goto(f"{dashboard.url}/#/jobs/{uuid.uuid4()}")
    expect(page.locator("main .error")).to_contain_text("no job with id")
    assert dashboard.problems == []


def test_a_sweep_page_follows_the_sweep_to_its_end(dashboard: Dashboard) -> None:
    http = dashboard.server.client.http
    created = http.post("/v1/sweeps", json=SWEEP)
    assert created.status_code == 201, created.text
    sweep_id = created.json()["id"]
    first_trial = http.get(f"/v1/sweeps/{sweep_id}/trials").json()["data"][0]
    page = dashboard.page
    dashboard.open()
    # A trial's job in the jobs list links to its sweep.
    trial_link = page.locator(f"tr[data-job-id='{first_trial['job_id']}'] .trial-of a")
    expect(trial_link).to_have_text("iris-lr #0")
    trial_link.click()
    expect(page.locator("[data-nav=sweeps]")).to_have_class("active")

    # Sample the page until the sweep ends: rows must appear while it runs.
    article = page.locator("article.sweep")
    rows = page.locator("table.trials tbody tr")
    samples: list[tuple[str | None, int]] = []

    def finished() -> bool:
        status = article.get_attribute("data-status")
        samples.append((status, rows.count()))
        return status not in (None, "running")

    wait_until(finished, SWEEP_SECONDS, what="the sweep page to show an ended sweep", interval=0.5)
    assert samples[-1][0] == "succeeded", samples[-1]
    assert any(status == "running" and count for status, count in samples), samples
    expect(page.locator("article.sweep .title [data-status]")).to_have_text("succeeded")
    expect(page.locator("[data-action=cancel]")).to_be_hidden()

    trials = http.get(f"/v1/sweeps/{sweep_id}/trials").json()["data"]
    best = http.get(f"/v1/sweeps/{sweep_id}").json()["best"]
    expect(rows).to_have_count(4)
    for trial in trials:
        row = page.locator(f"table.trials tr[data-trial='{trial['number']}']")
        shown = "pruned" if trial["pruned"] else trial["status"]
        expect(row.locator("[data-status]")).to_have_text(shown)
    expect(page.locator("[data-best]")).to_have_attribute("href", f"#/jobs/{best['job_id']}")

    # Sorting by the metric's value, then the other way round (ties by trial number).
    def shown_order() -> list[int]:
        return [int(n) for n in rows.evaluate_all("rows => rows.map(r => r.dataset.trial)")]

    assert shown_order() == [0, 1, 2, 3]
    ascending = [t["number"] for t in sorted(trials, key=lambda t: (t["value"], t["number"]))]
    descending = [t["number"] for t in sorted(trials, key=lambda t: (-t["value"], t["number"]))]
    assert ascending != descending
    page.click("th[data-sort=value] button")
    expect(page.locator("th[data-sort=value]")).to_have_attribute("aria-sort", "ascending")
    assert shown_order() == ascending
    page.click("th[data-sort=value] button")
    expect(page.locator("th[data-sort=value]")).to_have_attribute("aria-sort", "descending")
    assert shown_order() == descending

    # The charts: every trial's value and the best so far; each trial against each
    # parameter; every val_loss point of every trial's curve.
    curves = [
        http.get(f"/v1/jobs/{trial['job_id']}/metrics", params={"name": "val_loss"}).json()
        for trial in trials
    ]
    curve_points = sum(len(series["step"]) for curve in curves for series in curve["series"])
    expect(page.locator("[data-chart=best]")).to_have_attribute("data-points", "8")
    for path in SWEEP["parameters"]:
        expect(page.locator(f"[data-chart='param:{path}']")).to_have_attribute("data-points", "4")
    expect(page.locator("[data-chart=curves]")).to_have_attribute("data-points", str(curve_points))
    expect(page.locator("article.sweep canvas")).to_have_count(4)

    page.mouse.move(0, 0)  # no hover legend on the screenshot
    dashboard.screenshot("dashboard-sweep.png", full_page=True)

    page.click("[data-nav=sweeps]")
    listed = page.locator(f"tr[data-sweep-id='{sweep_id}']")
    expect(listed).to_contain_text("4 of 4 done")
    expect(listed.locator("[data-status]")).to_have_text("succeeded")
    dashboard.screenshot("dashboard-sweeps.png")

    page.goto(f"{dashboard.url}/#/sweeps/{uuid.uuid4()}")
    expect(page.locator("main .error")).to_contain_text("no sweep with id")
    assert dashboard.problems == []
