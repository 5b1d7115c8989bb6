"""The package installs with its command (pyproject.toml): `pip install -e .`, as `make`
does it, gives an `imgprep` that runs from any directory.

The install goes into a fresh virtual environment over a copy of the checkout (an editable
install writes imgprep.egg-info beside the package), offline: setuptools and the pinned
dependencies come from this interpreter's site-packages.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from helpers import REPO, SAMPLE, copy_checkout

PHOTO = SAMPLE / "train" / "n04485082" / "n04485082_5.JPEG"
RAVEL = ["ravel", "--pins", "32", "--lines", "40", str(PHOTO)]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("install")
    checkout = copy_checkout(base / "checkout")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check"]
    proc = subprocess.run(
        [*pip, "install", "--no-deps", "--no-build-isolation", "--no-index", "-e", str(checkout)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return venv


def test_the_command_runs_from_another_directory(installed, tmp_path):
    proc = subprocess.run(
        [installed / "bin" / "imgprep", *RAVEL], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    module = subprocess.run(
        [sys.executable, "-m", "imgprep", *RAVEL],
        cwd=REPO / "scripts",
        capture_output=True,
        text=True,
        check=True,
    )
    pins = proc.stdout.split()
    assert len(pins) == 41 and pins == module.stdout.split()


def test_the_command_imports_the_checkout_it_was_installed_from(installed, tmp_path):
    code = "import imgprep; print(imgprep.__file__)"
    proc = subprocess.run(
        [installed / "bin" / "python", "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).parent == installed.parent / "checkout/scripts/imgprep"


def test_the_command_names_itself(installed):
    help_text = subprocess.run(
        [installed / "bin" / "imgprep", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert help_text.startswith("usage: imgprep ")
