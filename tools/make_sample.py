#!/usr/bin/env python3
"""Regenerate the embedded sample dataset under ``resources/sample/``.

The output of this script is committed to the repository; nothing in the
workflow or the tests runs it.  It is only needed to *regenerate* the sample,
and it needs scikit-image (the source photos are the public-domain / CC0
pictures bundled in ``skimage.data``).  scikit-image is deliberately not a
dependency of the project, so use a throwaway virtual environment:

    python3 -m venv /tmp/skvenv
    /tmp/skvenv/bin/pip install scikit-image==0.26.0 pillow==12.0.0 numpy
    /tmp/skvenv/bin/python tools/make_sample.py

The script is deterministic: every crop is drawn from a fixed-seed generator,
so the same package versions give byte-identical files.  It rewrites
``train/``, ``validation/``, ``synsets.txt`` and ``quirks.tsv`` below
``resources/sample``; ``README.md`` there is maintained by hand.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "resources" / "sample"
SEED = 20240611

# Size limits of the generated crops (pixels, before any quirk processing).
MIN_SIDE = 120
MAX_SIDE = 500


@dataclass(frozen=True)
class Source:
    """A region of a skimage photo that shows the object of one class."""

    name: str  # skimage.data function name
    window: tuple[int, int, int, int]  # left, top, right, bottom crops stay inside
    key: tuple[int, int]  # (x, y) point every crop must contain


@dataclass(frozen=True)
class ClassSpec:
    wnid: str
    text: str  # LOC_synset_mapping.txt text
    sources: tuple[Source, ...]
    n_train: int
    n_val: int


CLASSES = (
    ClassSpec(
        "n02123045",
        "tabby, tabby cat",
        (Source("chelsea", (0, 0, 451, 300), (230, 170)),),
        n_train=9,
        n_val=3,
    ),
    ClassSpec(
        "n04266014",
        "space shuttle",
        (
            Source("rocket", (90, 40, 560, 427), (322, 260)),
            Source("astronaut", (336, 0, 512, 300), (405, 160)),
        ),
        n_train=9,
        n_val=3,
    ),
    ClassSpec(
        "n04485082",
        "tripod",
        (Source("camera", (140, 110, 512, 512), (295, 380)),),
        n_train=8,
        n_val=3,
    ),
    ClassSpec(
        "n07920052",
        "espresso",
        (Source("coffee", (40, 0, 560, 400), (290, 180)),),
        n_train=9,
        n_val=3,
    ),
)


def load_photo(name: str) -> Image.Image:
    arr = getattr(skimage.data, name)()
    img = Image.fromarray(arr)
    return img.convert("RGB")


def random_crop(rng: np.random.Generator, photo: Image.Image, src: Source) -> Image.Image:
    """A random box inside ``src.window`` containing ``src.key``, resized down."""
    wl, wt, wr, wb = src.window
    ww, wh = wr - wl, wb - wt
    kx, ky = src.key
    for _ in range(1000):
        area = rng.uniform(0.30, 1.0) * ww * wh
        aspect = float(np.exp(rng.uniform(np.log(0.6), np.log(1.7))))  # w / h
        cw = int(round(np.sqrt(area * aspect)))
        ch = int(round(np.sqrt(area / aspect)))
        if cw > ww or ch > wh or min(cw, ch) < MIN_SIDE:
            continue
        # Left edge range that keeps the key point inside and the box in the window.
        lo_x, hi_x = max(wl, kx - cw + 1), min(kx, wr - cw)
        lo_y, hi_y = max(wt, ky - ch + 1), min(ky, wb - ch)
        if lo_x > hi_x or lo_y > hi_y:
            continue
        x = int(rng.integers(lo_x, hi_x + 1))
        y = int(rng.integers(lo_y, hi_y + 1))
        crop = photo.crop((x, y, x + cw, y + ch))
        # Target longest side: never upscale, spread over [MIN_SIDE, MAX_SIDE].
        longest = max(cw, ch)
        target = int(rng.integers(MIN_SIDE + 40, MAX_SIDE + 1))
        target = min(target, longest, MAX_SIDE)
        scale = target / longest
        size = (max(MIN_SIDE, round(cw * scale)), max(MIN_SIDE, round(ch * scale)))
        if size != crop.size:
            crop = crop.resize(size, Image.Resampling.LANCZOS)
        return crop
    raise RuntimeError(f"could not place a crop in {src}")


def jpeg_bytes(img: Image.Image, rng: np.random.Generator, **kw) -> bytes:
    buf = io.BytesIO()
    quality = int(rng.integers(85, 93))
    img.save(buf, format="JPEG", quality=quality, **kw)
    return buf.getvalue()


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def main() -> None:
    rng = np.random.default_rng(SEED)
    for sub in ("train", "validation"):
        shutil.rmtree(OUT / sub, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)

    photos = {s.name: load_photo(s.name) for c in CLASSES for s in c.sources}

    # Distinct global validation numbers, as in ILSVRC2012_val_00000001..00050000.
    n_val_total = sum(c.n_val for c in CLASSES) + 4
    val_numbers = iter(sorted(rng.choice(np.arange(1, 50001), n_val_total, replace=False).tolist()))

    quirks: list[tuple[str, str, str, str]] = []

    def rel(p: Path) -> str:
        return p.relative_to(OUT).as_posix()

    def crop_for(spec: ClassSpec) -> Image.Image:
        src = spec.sources[int(rng.integers(len(spec.sources)))]
        return random_crop(rng, photos[src.name], src)

    def train_path(spec: ClassSpec, n: int, ext: str = ".JPEG") -> Path:
        return OUT / "train" / spec.wnid / f"{spec.wnid}_{n}{ext}"

    def val_path(spec: ClassSpec, ext: str = ".JPEG") -> Path:
        return OUT / "validation" / spec.wnid / f"ILSVRC2012_val_{next(val_numbers):08d}{ext}"

    # --- regular files: RGB baseline JPEGs -------------------------------------
    for spec in CLASSES:
        for i in range(1, spec.n_train + 1):
            write(train_path(spec, i), jpeg_bytes(crop_for(spec), rng))
        for _ in range(spec.n_val):
            write(val_path(spec), jpeg_bytes(crop_for(spec), rng))

    cat, shuttle, tripod, espresso = CLASSES
    nxt = {c.wnid: c.n_train + 1 for c in CLASSES}

    def next_train(spec: ClassSpec, ext: str = ".JPEG") -> Path:
        p = train_path(spec, nxt[spec.wnid], ext)
        nxt[spec.wnid] += 1
        return p

    def add(path: Path, quirk: str, expect: str, note: str = "") -> None:
        quirks.append((rel(path), quirk, expect, note))

    # CMYK JPEG (Pillow writes an Adobe APP14 marker and inverted CMYK).
    p = next_train(cat)
    write(p, jpeg_bytes(crop_for(cat).convert("CMYK"), rng))
    add(p, "cmyk", "record")

    # Lowercase extension.
    p = next_train(cat, ".jpg")
    write(p, jpeg_bytes(crop_for(cat), rng))
    add(p, "lowercase-ext", "record")

    # PNG content under a .JPEG name.
    p = next_train(espresso)
    small = crop_for(espresso)
    small.thumbnail((200, 200), Image.Resampling.LANCZOS)
    write(p, png_bytes(small))
    add(p, "png-as-jpeg", "record")

    # Progressive JPEG.
    p = next_train(espresso)
    write(p, jpeg_bytes(crop_for(espresso), rng, progressive=True))
    add(p, "progressive", "record")

    # EXIF-rotated JPEG: pixels stored rotated 90 degrees counter-clockwise with
    # Orientation=6 ("rotate 90 CW to display"), so applying it gives the upright
    # portrait crop back.  The crop is forced non-square.
    upright = crop_for(shuttle)
    w, h = upright.size
    if abs(w - h) < 40:
        upright = upright.crop((0, 0, min(w, h) * 2 // 3, min(w, h)))
    elif w > h:  # make it a portrait crop so the rocket stays vertical
        upright = upright.crop((0, 0, h * 2 // 3, h))
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    p = next_train(shuttle)
    write(p, jpeg_bytes(stored, rng, exif=exif.tobytes()))
    add(p, "exif-rotated", "record", f"oriented={upright.width}x{upright.height}")

    # Palette PNG.
    p = next_train(shuttle, ".png")
    small = crop_for(shuttle)
    small.thumbnail((220, 220), Image.Resampling.LANCZOS)
    write(
        p,
        png_bytes(
            small.quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        ),
    )
    add(p, "palette", "record")

    # Grayscale (mode L) JPEG.
    p = next_train(tripod)
    write(p, jpeg_bytes(crop_for(tripod).convert("L"), rng))
    add(p, "gray", "record")

    # 16-bit grayscale PNG (mode I;16).
    p = next_train(tripod, ".png")
    small = crop_for(tripod).convert("L")
    small.thumbnail((180, 180), Image.Resampling.LANCZOS)
    arr16 = np.asarray(small, dtype=np.uint16) * 257
    write(p, png_bytes(Image.fromarray(arr16)))
    add(p, "gray16", "record")

    # Non-image file in a class folder: not an image extension, so ignored.
    p = OUT / "train" / tripod.wnid / "notes.txt"
    write(p, b"Not an image: the indexer must skip files without an image extension.\n")
    add(p, "not-image", "ignore")

    # --- validation quirks ------------------------------------------------------
    # Truncated JPEG: a valid file cut at 60% of its bytes.
    p = val_path(cat)
    data = jpeg_bytes(crop_for(cat), rng)
    write(p, data[: int(len(data) * 0.6)])
    add(p, "truncated", "reject")

    # RGBA PNG with transparency (opaque ellipse, transparent corners).
    p = val_path(espresso, ".png")
    small = crop_for(espresso)
    small.thumbnail((220, 220), Image.Resampling.LANCZOS)
    yy, xx = np.mgrid[0 : small.height, 0 : small.width]
    cy, cx = (small.height - 1) / 2, (small.width - 1) / 2
    inside = ((xx - cx) / (small.width / 2)) ** 2 + ((yy - cy) / (small.height / 2)) ** 2 <= 1.0
    alpha = np.where(inside, 255, 0).astype(np.uint8)
    rgba = small.convert("RGBA")
    rgba.putalpha(Image.fromarray(alpha))
    write(p, png_bytes(rgba))
    add(p, "rgba", "record")

    # Empty zero-byte file with an image extension.
    p = val_path(shuttle)
    write(p, b"")
    add(p, "empty", "reject")

    # --- metadata ---------------------------------------------------------------
    lines = [f"{c.wnid} {c.text}\n" for c in sorted(CLASSES, key=lambda c: c.wnid)]
    (OUT / "synsets.txt").write_text("".join(lines), encoding="utf-8")

    rows = ["path\tquirk\texpect\tnote\n"]
    rows += ["\t".join(q) + "\n" for q in sorted(quirks)]
    (OUT / "quirks.tsv").write_text("".join(rows), encoding="utf-8")

    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"wrote {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()
