"""The house style is checked like behaviour: ruff, snakefmt and snakemake --lint.

Ruff checks the tracked Python files (what a commit holds), not whatever .gitignore happens
to leave in view; snakemake --lint runs in a copy of the checkout, since it scans the
sample and writes results/index/ where it runs.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, copy_checkout, tracked_files

BIN = Path(sys.executable).parent


def run(*cmd, cwd=REPO):
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def python_files() -> list[str]:
    return [name for name in tracked_files() if name.endswith(".py")]


def test_the_linted_files_are_the_tracked_ones():
    names = python_files()
    assert "scripts/imgprep/config.py" in names and "tests/test_style.py" in names
    assert not [name for name in names if name.startswith((".plugins/", ".venv/", "results/"))]


@pytest.mark.parametrize(
    "cmd",
    [
        ("ruff", "check", "--force-exclude"),
        ("ruff", "format", "--check", "--force-exclude"),
    ],
)
def test_ruff_is_clean(cmd):
    proc = run(str(BIN / cmd[0]), *cmd[1:], *python_files())
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snakefmt_is_clean():
    proc = run(str(BIN / "snakefmt"), "--check", "Snakefile", "rules")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snakemake_lint_is_clean(tmp_path):
    work = copy_checkout(tmp_path / "checkout")
    proc = run(sys.executable, "-m", "snakemake", "--lint", "--cores", "1", cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert (work / "results" / "index" / "labels.tsv").exists()  # it ran in the copy
