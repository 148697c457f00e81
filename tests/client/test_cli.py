"""The `backprop` client commands, run as a user runs them (subprocesses), against a live
`backprop serve`: found with no set-up through its data directory."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from backprop_client import Client
from tests.client.files import write_xor_csv
from tests.integration.deployments import EmbeddedDeployment
from tests.integration.processes import backprop_command, clean_environment
from tests.specs import XOR

COMMAND_SECONDS = 180  # `submit --watch` trains a small job on two busy cores


def backprop(
    data_dir: Path, *args: str, cwd: Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """`backprop ARGS` with no URL or key given: only `BACKPROP_DATA_DIR`, as after serve."""
    done = subprocess.run(
        backprop_command(*args),
        env=clean_environment(BACKPROP_DATA_DIR=str(data_dir)),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=COMMAND_SECONDS,
    )
    if check:
        assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def watched(
    shared_serve: EmbeddedDeployment, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, str]:
    """`backprop submit xor.json --dataset builtin:xor --watch`: the job id and the output."""
    cwd = tmp_path_factory.mktemp("cli")
    spec = {**XOR, "name": "xor-cli"}
    del spec["dataset"]  # given on the command line
    (cwd / "xor.json").write_text(json.dumps(spec))
    done = backprop(
        shared_serve.data_dir, "submit", "xor.json", "--dataset", "builtin:xor", "--watch", cwd=cwd
    )
    match = re.search(r"^job xor-cli \(([0-9a-f-]{36})\) succeeded$", done.stdout, re.MULTILINE)
    assert match, done.stdout
    return match.group(1), done.stdout


def test_submit_watch_shows_progress_and_the_final_metrics(
    watched: tuple[str, str], client: Client
) -> None:
    job_id, output = watched
    summary = client.job(job_id).summary
    assert summary is not None and summary["accuracy"] == 1.0
    assert re.search(r"^epoch \d+/100 .*loss ", output, re.MULTILINE), output
    assert re.search(r"^  accuracy +1$", output, re.MULTILINE), output
    assert re.search(rf"^  loss +{summary['loss']:.4g}$", output, re.MULTILINE), output


def test_list_status_metrics_and_plot(
    watched: tuple[str, str], data_dir: Path, tmp_path: Path
) -> None:
    job_id, _ = watched
    listed = backprop(data_dir, "list", cwd=tmp_path).stdout
    assert re.search(rf"^ *{job_id} +xor-cli +succeeded +100/100 ", listed, re.MULTILINE), listed

    status = backprop(data_dir, "status", job_id, cwd=tmp_path).stdout
    assert re.search(r"^ *status +succeeded *$", status, re.MULTILINE), status
    timings = r"queued [\d.]+ s · startup [\d.]+ s · compile [\d.]+ s · training [\d.]+ s"
    assert re.search(timings + r" · finalizing [\d.]+ s · total [\d.]+ s", status), status
    as_json = json.loads(backprop(data_dir, "status", job_id, "--json", cwd=tmp_path).stdout)
    assert as_json["id"] == job_id and as_json["spec"]["dataset"] == "builtin:xor"

    table = backprop(data_dir, "metrics", job_id, cwd=tmp_path).stdout.splitlines()
    assert table[0].split() == ["step", "epoch", "accuracy", "epoch_loss"]
    assert len(table) == 1 + 100  # one row per epoch
    assert table[-1].split()[:3] == ["100", "99", "1"]

    unknown = backprop(data_dir, "metrics", job_id, "--name", "nope", cwd=tmp_path, check=False)
    assert unknown.returncode == 1 and "has no series nope" in unknown.stderr, unknown.stderr

    chart = backprop(data_dir, "logs", job_id, "--plot", "--log", cwd=tmp_path).stdout
    lines = chart.splitlines()
    assert sum("┤" in line for line in lines) == 15 and "• loss" in lines[-1], chart
    assert "log scale" in lines[-1] and lines[-2].split() == ["5", "100"], chart


def test_download_writes_the_safetensors_file(
    watched: tuple[str, str], data_dir: Path, tmp_path: Path
) -> None:
    job_id, _ = watched
    saved = backprop(data_dir, "download", job_id, "-o", "models/", cwd=tmp_path)
    path = tmp_path / saved.stdout.strip()
    assert path == tmp_path / "models" / "xor-cli.safetensors", saved.stdout
    assert load_file(path)["dense_0.kernel"].shape == (2, 8)


def test_datasets_upload_and_list(data_dir: Path, tmp_path: Path) -> None:
    write_xor_csv(tmp_path / "gates.csv")
    uploaded = backprop(
        data_dir, "datasets", "upload", "gates.csv", "--target", "label", cwd=tmp_path
    )
    dataset_id = uploaded.stdout.strip()  # only the id on stdout
    assert re.fullmatch(r"[0-9a-f-]{36}", dataset_id), uploaded.stdout
    assert "40 examples" in uploaded.stderr
    listed = backprop(data_dir, "datasets", "list", cwd=tmp_path).stdout
    assert re.search(rf"^ *{dataset_id} +gates +csv +classification +40 ", listed, re.MULTILINE)
    builtin = backprop(data_dir, "datasets", "list", "--builtin", cwd=tmp_path).stdout
    assert "builtin:digits" in builtin


def test_cancel_a_finished_job_says_why_not(
    watched: tuple[str, str], data_dir: Path, tmp_path: Path
) -> None:
    # (Cancelling for real: the README's command line section and the client's tests.)
    job_id, _ = watched
    again = backprop(data_dir, "cancel", job_id, cwd=tmp_path, check=False)
    assert again.returncode == 1, again.stdout
    assert "HTTP 409 (http://127.0.0.1:" in again.stderr
    assert f"job {job_id} has already finished (status: succeeded)" in again.stderr


def test_flags_and_errors(data_dir: Path, tmp_path: Path, client: Client) -> None:
    key = (data_dir / "api_key").read_text().strip()
    elsewhere = tmp_path / "elsewhere"  # no data directory: the flags must do
    flags = ("--url", client.url, "--api-key", key, "--data-dir", str(elsewhere))
    assert backprop(data_dir, "list", *flags, cwd=tmp_path).returncode == 0

    wrong_key = backprop(data_dir, "list", "--api-key", "bp_wrong", cwd=tmp_path, check=False)
    assert wrong_key.returncode == 1 and "HTTP 401" in wrong_key.stderr
    missing = backprop(data_dir, "status", "no-such-job", cwd=tmp_path, check=False)
    assert missing.returncode == 1 and "no job with id 'no-such-job'" in missing.stderr
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    bad_spec = backprop(data_dir, "submit", "bad.yaml", cwd=tmp_path, check=False)
    assert bad_spec.returncode == 1 and "bad.yaml: invalid YAML" in bad_spec.stderr
    nobody = backprop(data_dir, "list", "--url", "http://127.0.0.1:9", cwd=tmp_path, check=False)
    assert nobody.returncode == 1 and "cannot reach the server" in nobody.stderr
