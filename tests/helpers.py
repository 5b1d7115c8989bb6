"""Small builders shared by the tests."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "resources" / "sample"


def jpeg_bytes(width=64, height=48, seed=0, mode="RGB", quality=90) -> bytes:
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    pixels = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    image = Image.fromarray(pixels.squeeze(), mode)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def make_tree(root: Path, layout: dict[str, dict[str, int]], seed=0) -> list[Path]:
    """layout = {"train/n01": 5, ...}: that many small JPEGs in each folder."""
    paths = []
    for folder, count in layout.items():
        for i in range(count):
            path = root / folder / f"{Path(folder).name}_{i}.JPEG"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(jpeg_bytes(seed=seed + i + 1000 * len(paths)))
            paths.append(path)
    return paths


def base_config(root, results, **overrides) -> dict:
    config = {
        "results": str(results),
        "source": {"root": str(root)},
        "splits": {"train": {"shards": 4}, "validation": {"shards": 2}},
    }
    for key, value in overrides.items():
        config[key] = value
    return config


def tracked_files() -> list[str]:
    """The checkout's files as git tracks them (in a copy without .git: every file but the
    environments and outputs)."""
    proc = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True)
    if proc.returncode == 0 and (REPO / ".git").exists():
        return [name for name in proc.stdout.split("\0") if name and (REPO / name).exists()]
    skip = {".git", ".venv", ".plugins", ".snakemake", "results", "__pycache__"}
    return [
        path.relative_to(REPO).as_posix()
        for path in REPO.rglob("*")
        if path.is_file() and not skip & set(path.relative_to(REPO).parts)
    ]


def copy_checkout(dest: Path) -> Path:
    """The tracked files of the checkout under ``dest``: a workflow run there (snakemake
    --lint scans the sample) writes into the copy, never into the checkout."""
    for name in tracked_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target, follow_symlinks=False)
    return dest


@contextlib.contextmanager
def dataset_folders(work: Path, *names: str):
    """``results/<name>`` for each name, a link to ``results/`` itself, while the block
    runs: a run of a config without ``datasets:`` holds in ``results/records/`` what a
    dataset ``<name>`` holds in ``results/<name>/records/``, the paths the README's
    loading snippets use (config.yaml's imagenet dataset, the koalarization one)."""
    links = [work / "results" / name for name in names]
    for link in links:
        link.symlink_to(".")
    try:
        yield
    finally:
        for link in links:
            link.unlink()
