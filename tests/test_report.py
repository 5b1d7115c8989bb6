"""`snakemake --report report.html` on the embedded sample with config.yaml's datasets:
every figure is made per dataset and split from what the workflow wrote (the contact
sheets from the records themselves), and a real headless browser (Debian's chromium,
tools/chromium/install.sh) renders the report with every image loaded.

The browser is driven over the Chrome DevTools Protocol on a pipe
(``--remote-debugging-pipe``: NUL-separated JSON on fds 3 and 4), so no websocket client
is needed; it runs in its own process group, killed by its id when the test ends.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import io
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import REPO, copy_checkout, jpeg_bytes
from imgprep.figures.gallery import decode_thumbnail
from imgprep.files.tables import read_tsv
from imgprep.formats import get_format
from PIL import Image

CHROMIUM_INSTALL = REPO / "tools" / "chromium" / "install.sh"
DATASETS = ("imagenet", "tangler", "dlbs")
SPLITS = ("train", "validation")
# imagenet's own report section: 3 of its 4 train shards, evenly spaced, 2 records each
IMAGENET_REPORT = {"shards": 3, "per_shard": 2}
IMAGENET_TRAIN_SAMPLE = ["00000", "00002", "00003"]
SPLIT_FIGURES = ("classes", "source_size", "source_aspect", "shards")
DATASET_FILES = (
    "rejects.png",
    "rejects.tsv",
    "ignored.tsv",
    "throughput.png",
    "throughput.tsv",
    "duplicates.png",
    "duplicates.tsv",
)


def snakemake(work: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    # the copy's library first: an editable install of another checkout would win
    env = {**os.environ, "PYTHONPATH": str(work / "scripts")}
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(work / "Snakefile"), "-d", str(work)]
        + ["--cores", "2", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The sample built with config.yaml's three datasets (fewer shards for tangler and
    dlbs, and shorter string art: time), then the report."""
    work = copy_checkout(tmp_path_factory.mktemp("report") / "w")
    config = yaml.safe_load((work / "config.yaml").read_text())
    assert set(config["datasets"]) == set(DATASETS)
    config["splits"] = {
        "train": {"dir": "train", "shards": 2},
        "validation": {"dir": "validation", "shards": 1},
    }
    config["threads"] = {"resize": 2, "ravel": 2, "records": 1, "verify": 1}
    config["datasets"]["tangler"]["ravel"] = {"lines": 300}
    config["datasets"]["imagenet"]["report"] = IMAGENET_REPORT
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(work)
    assert proc.returncode == 0, proc.stderr[-4000:]
    proc = snakemake(work, "--report", "report.html", timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return work


def png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG", path
        return np.asarray(image.convert("RGB"))


def assert_drawn(pixels: np.ndarray, what) -> None:
    """A real picture: not one colour, not a blank page."""
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100, what
    packed = pixels.astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], np.uint32)
    colours = np.unique(packed)
    assert len(colours) > 20 and pixels.std() > 5, f"{what}: blank ({len(colours)} colours)"


def test_every_figure_exists_per_dataset_and_split_and_decodes(built):
    for name in DATASETS:
        report = built / "results" / name / "report"
        for split in SPLITS:
            for figure in (*SPLIT_FIGURES, f"sheet_{name}"):
                assert_drawn(png(report / split / f"{figure}.png"), f"{name} {split} {figure}")
        for file in DATASET_FILES:
            assert (report / file).is_file(), f"{name}: {file}"
        assert_drawn(png(report / "rejects.png"), f"{name} rejects")
        assert_drawn(png(report / "throughput.png"), f"{name} throughput")
        assert_drawn(png(report / "duplicates.png"), f"{name} duplicates")


def first_records(schema: str, path: Path, count: int) -> list[dict]:
    """The first ``count`` records of a shard as the format's own reader reads them."""
    rows = []
    for batch in get_format(schema).reader(1).batches(path, ""):
        for i in range(len(batch["filename"])):
            row = {"filename": batch["filename"][i].decode()}
            if "label" in batch:
                row["label"] = int(batch["label"][i])
                row["text"] = batch["text"][i].decode()
            rows.append(row)
            if len(rows) == count:
                return rows
    return rows


@pytest.mark.parametrize("name", DATASETS)
def test_the_contact_sheets_show_the_sampled_records_with_their_labels(built, name):
    results = built / "results" / name
    schema = name
    index = read_tsv(results / "index" / "train.tsv")
    text_of = dict(zip(index["filename"], index["text"], strict=True))
    sample = read_tsv(results / "report" / "train" / f"sheet_{schema}.tsv", ints=("label",))
    shards = list(dict.fromkeys(sample["shard"]))
    per_shard = 8
    if name == "imagenet":
        assert shards == IMAGENET_TRAIN_SAMPLE
        per_shard = IMAGENET_REPORT["per_shard"]
    else:
        assert shards == ["00000", "00001"]  # both of 2 (report.shards 4 is more)
    for shard in shards:
        shown = sample[sample["shard"] == shard]
        (record,) = set(shown["record"])
        assert record.startswith(f"results/{name}/records/{schema}/")
        path = built / record
        want = first_records(schema, path, per_shard)
        assert shown["filename"].tolist() == [r["filename"] for r in want]
        if "label" in want[0]:
            assert shown["label"].tolist() == [r["label"] for r in want]
            assert shown["text"].tolist() == [r["text"] for r in want]
            # the texts are the label map's, as the index has them for these files
            assert shown["text"].tolist() == [text_of[f] for f in shown["filename"]]


def test_the_rejects_gallery_lists_the_two_rejects_with_their_reasons(built):
    for name in DATASETS:
        report = built / "results" / name / "report"
        rejects = read_tsv(report / "rejects.tsv", ints=("thumbnail",))
        by_reason = dict(zip(rejects["reason"], rejects["thumbnail"], strict=True))
        assert len(rejects) == 2, rejects
        truncated = [r for r in by_reason if r.startswith("truncated JPEG")]
        assert set(by_reason) == {"empty file", *truncated} and len(truncated) == 1
        # the empty file has nothing to show; the truncated JPEG's top rows decode
        assert by_reason["empty file"] == 0 and by_reason[truncated[0]] == 1
        assert set(rejects["split"]) == {"validation"}
        ignored = read_tsv(report / "ignored.tsv")
        assert ignored["path"].tolist() == ["train/n04485082/notes.txt"]


def test_throughput_shows_the_summary_s_stage_totals(built):
    expected = {
        "imagenet": {"resize": 6, "records imagenet": 6, "verify imagenet": 1},
        "tangler": {"resize": 3, "ravel": 3, "records tangler": 3, "verify tangler": 1},
        "dlbs": {"resize": 3, "records dlbs": 3, "verify dlbs": 1},
    }
    for name, jobs in expected.items():
        results = built / "results" / name
        table = read_tsv(results / "report" / "throughput.tsv")
        assert (results / "report" / "throughput.tsv").read_bytes() == (
            results / "stages.tsv"
        ).read_bytes()
        assert dict(zip(table["stage"], table["jobs"].astype(int), strict=True)) == jobs
        assert (table["wall_s"].astype(float) > 0).all()


def test_a_truncated_jpeg_gives_a_thumbnail_and_garbage_none():
    whole = jpeg_bytes(width=320, height=240, seed=3)
    thumb = decode_thumbnail(whole[: len(whole) // 2])
    assert thumb is not None and thumb.dtype == np.uint8 and thumb.shape == (120, 160, 3)
    assert decode_thumbnail(b"") is None
    assert decode_thumbnail(b"\xff\xd8 not really a jpeg") is None


# -- the browser -------------------------------------------------------------------------


def _above_9(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class Browser:
    """Headless chromium with the DevTools protocol on a pipe; one page."""

    def __init__(self, executable: str, profile: Path, timeout: float = 60.0):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # above 9, so that neither is fd 3 or 4 before bash moves them there
        to_chrome_r, from_chrome_w = _above_9(to_chrome_r), _above_9(from_chrome_w)
        args = [
            "--headless",
            "--no-sandbox",  # root in a container
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            "--window-size=1400,1000",
            "about:blank",
        ]
        # the protocol's fds 3 (commands in) and 4 (replies out); bash: dash takes no fd > 9
        self.process = subprocess.Popen(
            [
                "/bin/bash",
                "-c",
                f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w}'
                f" {to_chrome_r}<&- {from_chrome_w}>&-",
                executable,
            ]
            + args,
            pass_fds=(to_chrome_r, from_chrome_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: killed together
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.timeout = timeout
        self._buffer = b""
        self._next_id = 0
        self.session = None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]

    def call(self, method: str, **params):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"chromium did not answer {method} in {self.timeout} s")
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium exited (code {self.process.poll()})")
                self._buffer += chunk

    def evaluate(self, expression: str):
        result = self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        for fd in (self._to_chrome, self._from_chrome):
            os.close(fd)
        with contextlib.suppress(ProcessLookupError):  # its group: chromium's children too
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def chromium() -> str:
    proc = subprocess.run(
        [str(CHROMIUM_INSTALL)], capture_output=True, text=True, timeout=900, check=False
    )
    assert proc.returncode == 0, f"tools/chromium/install.sh failed:\n{proc.stderr}"
    return proc.stdout.strip().splitlines()[-1]


# Every result of every category and subcategory, through the report's own table: each
# row's view button is clicked (the tables' files are downloads: not clicked), and the
# image shown is waited for and decoded. Returns what was shown and what is broken.
VISIT_EVERY_RESULT = """
(async () => {
  const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
  const uris = new Map(Object.entries(results).map(([path, r]) => [r.data_uri, path]));
  const shown = {};
  const problems = [];
  const image = () => Array.from(document.querySelectorAll("img")).find((i) => uris.has(i.src));
  for (const category of Object.keys(categories)) {
    for (const subcategory of Object.keys(categories[category])) {
      const want = categories[category][subcategory].length;
      // through the menu, as a reader goes: a results table is made once, when shown
      app.setView({ navbarMode: "menu" });
      for (let t = 0; t < 400 && document.querySelector("tbody tr"); t++) await sleep(10);
      app.setView({ navbarMode: "subcategory", category: category, subcategory: subcategory });
      let rows = [];
      for (let t = 0; t < 1000 && rows.length !== want; t++) {
        await sleep(10);
        rows = Array.from(document.querySelectorAll("tbody tr"));
      }
      if (rows.length !== want) {
        problems.push(`${category}/${subcategory}: ${rows.length} rows, want ${want}`);
        continue;
      }
      for (let i = 0; i < want; i++) {
        const button = document.querySelectorAll("tbody tr")[i].querySelector("[role=group] a");
        if (button.hasAttribute("download")) continue;
        const before = image() ? image().src : null;
        button.click();
        let img = null;
        for (let t = 0; t < 1000; t++) {
          await sleep(10);
          img = image();
          if (img && img.src !== before && img.complete) break;
        }
        if (!img || img.src === before) {
          problems.push(`${category}/${subcategory} row ${i}: no image shown`);
          continue;
        }
        try {
          await img.decode();
        } catch (error) {
          problems.push(`${uris.get(img.src)}: does not decode (${error})`);
        }
        shown[uris.get(img.src)] = [img.naturalWidth, img.naturalHeight];
      }
    }
  }
  const broken = Array.from(document.images)
    .filter((i) => !i.complete || i.naturalWidth === 0)
    .map((i) => i.src.slice(0, 80));
  const images = Object.keys(results).filter((p) => results[p].mime_type.startsWith("image/"));
  return { shown, problems, broken, images };
})()
"""


def test_chromium_renders_every_image_of_the_report(built, tmp_path):
    browser = Browser(chromium(), tmp_path / "profile")
    try:
        browser.call("Page.enable")
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            width=1400,
            height=1000,
            deviceScaleFactor=1,
            mobile=False,
        )
        browser.call("Page.navigate", url=(built / "report.html").as_uri())
        for _ in range(600):  # the report is a React app: ready once `app` is mounted
            ready = "document.readyState === 'complete' && typeof app !== 'undefined' && !!app"
            if browser.evaluate(ready):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the report's app never started")
        seen = browser.evaluate(VISIT_EVERY_RESULT)
        # what the view shows last, captured as the browser rendered it
        sheet = next(p for p in seen["images"] if p.endswith("train/sheet_imagenet.png"))
        browser.evaluate(
            f"const p = {json.dumps(sheet)};"
            " app.setView({content: 'img', contentPath: results[p].data_uri, resultPath: p})"
        )
        time.sleep(0.5)
        shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
    finally:
        browser.close()
    screenshot = tmp_path / "report.png"
    screenshot.write_bytes(shot)
    assert seen["problems"] == [] and seen["broken"] == []
    # every figure of every dataset and split was shown, at its own size
    expected = {
        f"results/{name}/report/{split}/{figure}.png"
        for name in DATASETS
        for split in SPLITS
        for figure in (*SPLIT_FIGURES, f"sheet_{name}")
    } | {
        f"results/{name}/report/{f}"
        for name in DATASETS
        for f in ("rejects.png", "throughput.png", "duplicates.png")
    }
    assert set(seen["images"]) == expected
    assert set(seen["shown"]) == expected
    for path, (width, height) in seen["shown"].items():
        assert (width, height) == Image.open(built / path).size, path
    with Image.open(io.BytesIO(shot)) as image:
        assert image.size == (1400, 1000)
    assert_drawn(png(screenshot), "the screenshot")
