"""The README as a new user meets it: its walk-through's commands, run as written (only the
port changed) against `backprop serve` started in an empty directory; its configuration
table against `Settings`; its example files against API.md's spec."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx

from app.config import Settings
from core.export import import_model
from core.spec.examples import DIGITS_CNN
from tests.integration.processes import Processes, backprop_command, clean_environment
from tests.servers import free_port, require_binary, wait_until

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCUMENTED_ADDRESS = "127.0.0.1:8000"
WALK_THROUGH_SECONDS = 420  # two trainings on two cores that the rest of the suite shares


def section(markdown: str, heading: str) -> str:
    """The text under the heading named `heading`, up to the next heading of its level or
    above."""
    match = re.search(rf"^(#+) {re.escape(heading)}\s*$", markdown, re.MULTILINE)
    assert match, f"README.md has no {heading!r} heading"
    level = len(match.group(1))
    rest = markdown[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def test_the_walk_through_runs_as_written(processes: Processes, tmp_path: Path) -> None:
    for tool in ("curl", "jq"):
        require_binary(tool, f"apt-get install {tool}")
    blocks = sh_blocks(section(README.read_text(), "Walk-through"))
    assert len(blocks) >= 5, blocks
    script = "\n".join(blocks)
    assert DOCUMENTED_ADDRESS in script

    # A new user's checkout: the example files, and `backprop serve` with its defaults
    # (data directory ./.backprop, a new key saved in it), here on a free port.
    home = tmp_path / "checkout"
    shutil.copytree(ROOT / "docs" / "examples", home / "docs" / "examples")
    port = free_port()
    serve = processes.start(
        "serve",
        backprop_command("serve", "--port", str(port)),
        env=clean_environment(),
        cwd=home,
    )
    key_file = home / ".backprop" / "api_key"
    wait_until(key_file.exists, 90, what="the API key file", watch=[serve])
    api = f"http://127.0.0.1:{port}"
    wait_until(lambda: _ready(api), 90, what="/readyz", watch=[serve])

    done = subprocess.run(
        [
            "bash",
            "-e",
            "-o",
            "pipefail",
            "-c",
            script.replace(DOCUMENTED_ADDRESS, f"127.0.0.1:{port}"),
        ],
        cwd=home,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=WALK_THROUGH_SECONDS,
    )
    transcript = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, transcript
    assert "setosa" in done.stdout, transcript  # the uploaded CSV's class names
    assert done.stdout.count('"status": "succeeded"') == 2, transcript
    assert '"val_accuracy"' in done.stdout, transcript

    params, _state, spec = import_model(home / "digits-cnn.safetensors")
    assert spec.name == "digits-cnn"
    assert params["conv2d_0"]["kernel"].shape == (3, 3, 1, 16)

    key = key_file.read_text().strip()
    jobs = httpx.get(f"{api}/v1/jobs", headers={"Authorization": f"Bearer {key}"}).json()
    accuracy = {job["name"]: job["summary"]["val_accuracy"] for job in jobs["data"]}
    assert accuracy["digits-cnn"] > 0.9, accuracy
    assert accuracy["iris-mlp"] > 0.8, accuracy


def _ready(api: str) -> bool:
    try:
        return httpx.get(f"{api}/readyz").status_code == 200
    except httpx.TransportError:
        return False


def test_the_configuration_table_lists_every_setting() -> None:
    table = section(README.read_text(), "Configuration")
    documented = set(re.findall(r"^\| `(BACKPROP_[A-Z0-9_]+)` \|", table, re.MULTILINE))
    expected = {f"BACKPROP_{name.upper()}" for name in Settings.model_fields}
    assert documented == expected


def test_the_example_spec_is_api_md_s_digits_cnn() -> None:
    example = json.loads((ROOT / "docs" / "examples" / "digits-cnn.json").read_text())
    assert example == DIGITS_CNN
