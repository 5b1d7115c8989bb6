"""tests/conftest.py's session guards, run by a pytest in a subprocess over tiny projects:
an undeclared skip fails the session, a declared optional extra does not, and a test that
writes into the checkout fails it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from helpers import REPO

PYPROJECT = """\
[tool.pytest.ini_options]
testpaths = ["tests"]
markers = ["optional_extra: needs a package outside requirements.txt"]
"""


def project(root: Path, tests: str, git: bool = False) -> Path:
    (root / "tests").mkdir(parents=True)
    shutil.copy(REPO / "tests" / "conftest.py", root / "tests" / "conftest.py")
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "tests" / "test_it.py").write_text(textwrap.dedent(tests))
    if git:
        git_env = ["-c", "user.name=t", "-c", "user.email=t@t"]
        (root / ".gitignore").write_text("/ignored/\n")
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
        subprocess.run(["git", "add", "."], cwd=root, check=True)
        subprocess.run(["git", *git_env, "commit", "-qm", "t"], cwd=root, check=True)
    return root


def pytest(root: Path) -> subprocess.CompletedProcess:
    # the outer run's PYTEST_ADDOPTS (a --basetemp) would make this pytest clear its folder
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_undeclared_skip_fails_the_session_naming_it(tmp_path):
    proc = pytest(
        project(
            tmp_path,
            """
            import pytest

            @pytest.fixture
            def cluster():
                pytest.skip("no cluster here")

            def test_runs():
                pass

            def test_skips():
                pytest.skip("needs a thing")

            def test_skips_in_a_fixture(cluster):
                pass

            @pytest.mark.skipif(True, reason="a condition")
            def test_skipif():
                pass

            @pytest.mark.optional_extra
            def test_declared():
                pytest.skip("optional extra: not installed")
            """,
        )
    )
    out = proc.stdout
    assert proc.returncode == 1, out
    assert "1 passed, 4 skipped" in out
    section = out[out.index("skipped without a declared optional extra") :]
    assert "tests/test_it.py::test_skips: needs a thing" in section
    assert "tests/test_it.py::test_skips_in_a_fixture: no cluster here" in section
    assert "tests/test_it.py::test_skipif: a condition" in section
    assert "test_declared" not in section


def test_a_declared_optional_extra_may_skip(tmp_path):
    proc = pytest(
        project(
            tmp_path,
            """
            import pytest

            @pytest.mark.optional_extra
            def test_declared():
                pytest.skip("optional extra: not installed")

            def test_runs():
                pass
            """,
        )
    )
    assert proc.returncode == 0, proc.stdout
    assert "without a declared optional extra" not in proc.stdout


def test_a_module_that_skips_at_import_fails_the_session(tmp_path):
    tests = (
        'import pytest\n\npytest.importorskip("no_such_module_here")\n\ndef test_x():\n    pass\n'
    )
    proc = pytest(project(tmp_path, tests))
    assert proc.returncode == 1, proc.stdout
    assert "tests/test_it.py: could not import 'no_such_module_here'" in proc.stdout


def test_a_test_that_writes_into_the_checkout_fails_the_session(tmp_path):
    root = tmp_path / "checkout"
    root.mkdir()
    (root / "ignored").mkdir()
    (root / "ignored" / "before.txt").write_text("there before the session")
    project(
        root,
        f"""
        from pathlib import Path

        ROOT = Path({str(root)!r})

        def test_writes_tmp(tmp_path):
            (tmp_path / "fine.txt").write_text("x")

        def test_writes_checkout():
            (ROOT / "stray.txt").write_text("x")
            (ROOT / "ignored" / "new.txt").write_text("x")
            (ROOT / "pyproject.toml").write_text("# changed")
        """,
        git=True,
    )
    proc = pytest(root)
    out = proc.stdout
    assert proc.returncode == 1, out
    assert "2 passed" in out
    section = out[out.index("tests wrote into the checkout") :].splitlines()
    assert sorted(line.strip() for line in section if line.startswith("  ")) == [
        "!! ignored/new.txt",
        "?? stray.txt",
        "M pyproject.toml",
    ]


def test_a_clean_session_in_a_checkout_passes(tmp_path):
    root = project(tmp_path, "def test_x(tmp_path):\n    (tmp_path / 'a').write_text('x')\n", True)
    (root / "untracked_before.txt").write_text("x")
    proc = pytest(root)
    assert proc.returncode == 0, proc.stdout
