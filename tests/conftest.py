"""Session guards that hold for every test run, `.ci/run` and `make test` alike.

- A skip is a failure unless the test is marked ``optional_extra`` (a package outside
  requirements.txt, such as DALI or PyTorch): a test that silently stops running guards
  nothing. The session fails listing each undeclared skip and its reason.
- Tests write nothing into the checkout: files the checkout gained during the session (by
  ``git status --porcelain --ignored``) fail it, listed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CHECKOUT = Path(__file__).resolve().parents[1]
# what a test run may add to the checkout: the environments `make test` builds and caches
ALLOWED_IN_CHECKOUT = (".venv", ".plugins", ".pytest_cache", ".ruff_cache")


def checkout_state(root: Path) -> set[str] | None:
    """Every changed, untracked or ignored file of a git checkout, as `git status` names
    them; None where ``root`` is not one (a copy of the tests)."""
    if not (root / ".git").exists():
        return None
    proc = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--untracked-files=all", "-z"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return None
    entries = set()
    for entry in proc.stdout.split("\0"):
        parts = entry[3:].split("/")
        if parts[0] and parts[0] not in ALLOWED_IN_CHECKOUT and "__pycache__" not in parts:
            entries.add(entry)
    return entries


class SessionGuards:
    def __init__(self, checkout: Path):
        self.checkout = checkout
        self.at_start = checkout_state(checkout)
        self.undeclared_skips: list[str] = []
        self.gained: list[str] = []

    def _skipped(self, nodeid: str, report) -> None:
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        self.undeclared_skips.append(f"{nodeid}: {reason.removeprefix('Skipped: ')}")

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = yield
        declared = item.get_closest_marker("optional_extra") is not None
        if report.skipped and not hasattr(report, "wasxfail") and not declared:
            self._skipped(item.nodeid, report)
        return report

    def pytest_collectreport(self, report):
        """A module that skips itself at import (pytest.importorskip at its top)."""
        if report.skipped:
            self._skipped(report.nodeid, report)

    def pytest_sessionfinish(self, session, exitstatus):
        if self.at_start is not None:
            self.gained = sorted((checkout_state(self.checkout) or set()) - self.at_start)
        failed = self.undeclared_skips or self.gained
        # exit 5 (nothing collected) too: every module skipped itself at import
        if failed and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        write = terminalreporter.write_line
        if self.undeclared_skips:
            terminalreporter.write_sep("=", "skipped without a declared optional extra", red=True)
            write(
                "a skip fails the session unless the test is marked optional_extra "
                "(pyproject.toml): install what it needs, or make it run"
            )
            for line in self.undeclared_skips:
                write(f"  {line}")
        if self.gained:
            terminalreporter.write_sep("=", "tests wrote into the checkout", red=True)
            write(f"{self.checkout} gained during the session (git status):")
            for line in self.gained:
                write(f"  {line}")


def pytest_configure(config):
    config.pluginmanager.register(SessionGuards(CHECKOUT), "imgprep-session-guards")


@pytest.fixture
def decoded_shapes(monkeypatch):
    """Record the shape of every array simplejpeg decodes."""
    import simplejpeg

    shapes = []
    original = simplejpeg.decode_jpeg

    def spy(*args, **kwargs):
        pixels = original(*args, **kwargs)
        shapes.append(pixels.shape[:2])
        return pixels

    monkeypatch.setattr(simplejpeg, "decode_jpeg", spy)
    return shapes
