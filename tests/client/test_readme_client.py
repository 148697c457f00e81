"""The README's client sections, run as written against `backprop serve`: the shell blocks
of "The command line" and the Python of "Train from Python", from a checkout with the
example files, finding the server through its data directory as after `make run`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.e2e.test_readme import README, ROOT, section, sh_blocks
from tests.integration.processes import clean_environment

SECONDS = 240  # two small trainings and a dozen commands on two busy cores


def checkout(tmp_path: Path, data_dir: Path) -> tuple[Path, dict[str, str]]:
    """A directory with docs/examples, and the environment of a user there with the
    virtual environment active and the server's data directory at hand."""
    home = tmp_path / "checkout"
    shutil.copytree(ROOT / "docs" / "examples", home / "docs" / "examples")
    env = clean_environment(BACKPROP_DATA_DIR=str(data_dir))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return home, env


def run_in_checkout(
    argv: list[str], data_dir: Path, tmp_path: Path
) -> tuple[Path, subprocess.CompletedProcess[str], str]:
    """Run a README block as a new user would, in a fresh checkout; it must succeed."""
    home, env = checkout(tmp_path, data_dir)
    done = subprocess.run(argv, cwd=home, env=env, capture_output=True, text=True, timeout=SECONDS)
    transcript = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, transcript
    return home, done, transcript


def test_the_command_line_section_runs_as_written(data_dir: Path, tmp_path: Path) -> None:
    blocks = sh_blocks(section(README.read_text(), "The command line"))
    assert len(blocks) >= 3, blocks
    home, done, transcript = run_in_checkout(
        ["bash", "-e", "-o", "pipefail", "-c", "\n".join(blocks)], data_dir, tmp_path
    )
    assert re.search(r"^job iris-mlp \(.{36}\) succeeded$", done.stdout, re.MULTILINE), transcript
    assert re.search(r"^  val_accuracy +0\.\d+", done.stdout, re.MULTILINE), transcript
    assert "• loss   × val_loss" in done.stdout, transcript  # the chart's legend
    assert "cancel requested" in done.stdout, transcript
    assert (home / "iris-mlp.safetensors").stat().st_size > 0


def test_the_python_section_runs_as_written(data_dir: Path, tmp_path: Path) -> None:
    blocks = re.findall(
        r"^```python\n(.*?)^```", section(README.read_text(), "Train from Python"), re.M | re.S
    )
    assert len(blocks) == 1, blocks
    home, done, transcript = run_in_checkout([sys.executable, "-c", blocks[0]], data_dir, tmp_path)
    assert re.search(r"^succeeded 0\.\d+$", done.stdout, re.MULTILINE), transcript
    assert re.search(r"^epoch \d+ eta ", done.stdout, re.MULTILINE), transcript
    assert done.stdout.rstrip().endswith("['setosa']"), transcript
    assert (home / "iris-python.safetensors").stat().st_size > 0


def test_the_sweep_section_runs_as_written(data_dir: Path, tmp_path: Path) -> None:
    blocks = sh_blocks(section(README.read_text(), "Search hyperparameters"))
    assert len(blocks) == 1, blocks
    home, done, transcript = run_in_checkout(
        ["bash", "-e", "-o", "pipefail", "-c", blocks[0]], data_dir, tmp_path
    )
    assert re.search(r"^sweep iris-sweep \(.{36}\) succeeded: 8/8 trials, best ", done.stdout, re.M)
    assert "optimizer.learning_rate" in done.stdout, transcript
    assert list(home.glob("iris-sweep-*.safetensors")), transcript
