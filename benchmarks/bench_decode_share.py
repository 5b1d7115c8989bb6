"""Decode share: does decoding each image once for all datasets of a shard pay?

On bench_resize's ImageNet-like photos (same builder, same shape mix: mostly 500x375 and
500x333 JPEGs q90, a quarter 160..1600 px wide), pinned to one core, for four dataset
settings:

  a  resnet     256 center-crop bicubic rgb q90              (preset tpu)
  b  small64    64 stretch box rgb, fast_decode false        (preset downsampled)
  c  small32    32 stretch box rgb (DCT-scaled decode)
  d  tangler    256 center-crop gray rec709, upscale         (preset tangler)

it times per image, best of --repeats passes (passes rotate, as bench_resize's race):

  decode   what imgprep.kernels does before resampling at that setting: probe_jpeg,
           Geometry.plan, dct_reduction (when fast_decode allows), decode_jpeg, orient
  total    resize_image (decode + colour + resample + encode)
  render   the rest measured directly: resize's _render on pixels decoded beforehand at
           the setting's own scale (a check on total - decode), and on full-scale pixels
           (what a dataset costs when it renders from a decode shared with others)

and then, for a shard feeding a+b+d and a+b+c+d:

  today        sum of the totals (every dataset decodes on its own)
  decode-once  estimate: one shared decode at the largest scale any dataset needs (here
               full scale: b has fast_decode false) + each dataset's non-decode part
               (total - decode); a dataset whose own decode is DCT-scaled below the shared
               scale (c; a on the large photos) keeps its own decode and resize, since a
               scaled decode only serves the dataset it was scaled for (the table's "from
               full" column says what rendering from the shared pixels would cost instead)
  measured     that plan run for real: decode once, _render each sharing dataset, a full
               resize_image for the others; its JPEGs must equal today's byte for byte

    .venv/bin/python benchmarks/bench_decode_share.py [--images 240] [--repeats 5]

Prints two tables and writes benchmarks/out/decode_share.json.
"""

from __future__ import annotations

import os

# one BLAS thread: this measures one core (must be set before numpy is imported)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_resize import build_photos, race  # noqa: E402
from imgprep.atomic import atomic_write  # noqa: E402
from imgprep.config import section_config  # noqa: E402
from imgprep.kernels.decode import decode_jpeg, orient, probe_jpeg  # noqa: E402
from imgprep.kernels.geometry import Geometry, dct_reduction  # noqa: E402
from imgprep.kernels.resize import ResizeParams, _render, resize_image  # noqa: E402

OUT = REPO / "benchmarks" / "out" / "decode_share.json"

SETTINGS = {
    "a resnet 256 crop rgb": {"mode": "center-crop", "size": 256, "filter": "bicubic"},
    "b small64 stretch box": {
        "mode": "stretch",
        "size": 64,
        "filter": "box",
        "upscale": True,
        "fast_decode": False,
    },
    "c small32 stretch box": {"mode": "stretch", "size": 32, "filter": "box", "upscale": True},
    "d tangler 256 gray709": {
        "mode": "center-crop",
        "size": 256,
        "colorspace": "gray",
        "gray_matrix": "rec709",
        "upscale": True,
    },
}
COMBINATIONS = ("abd", "abcd")


class Plan:
    """What imgprep's resize does for one photo at one setting, up to the decode."""

    def __init__(self, data: bytes, params: ResizeParams):
        source = probe_jpeg(data)
        if source is None or source.icc is not None:
            raise SystemExit("the benchmark photos must be plain JPEGs without ICC profiles")
        self.source = source
        if source.orientation >= 5:
            self.geometry = Geometry.plan(source.height, source.width, params)
        else:
            self.geometry = Geometry.plan(source.width, source.height, params)
        self.reduce = 1
        if params.fast_decode and not self.geometry.identity:
            self.reduce = dct_reduction(self.geometry, source.width, source.height)
        luma_only = params.colorspace == "gray" and params.gray_matrix == "rec601"
        self.channels = 1 if source.mode == "L" or luma_only else 3


def decode(data: bytes, params: ResizeParams, reduce: int | None = None, channels=None):
    """Decode as resize_image does at ``params`` (or at a forced scale / channel count)."""
    plan = Plan(data, params)
    reduce = plan.reduce if reduce is None else reduce
    source = plan.source
    pixels = decode_jpeg(data, channels or plan.channels, reduce, source.width, source.height)
    if pixels is None:
        raise SystemExit("libjpeg-turbo refused a benchmark photo")
    return orient(pixels, source.orientation)


def render(pixels, reduce: int, geometry: Geometry, params: ResizeParams) -> bytes:
    return _render(pixels, (1.0 / reduce, 1.0 / reduce), geometry, params)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    photos, origin = build_photos(max(args.images, 1))
    n = len(photos)
    mean_kb = sum(map(len, photos)) / n / 1000
    print(f"{n} JPEGs from {origin}, mean {mean_kb:.0f} KB, one core")
    params = {
        key: ResizeParams.from_config(section_config("resize", values))
        for key, values in SETTINGS.items()
    }
    letters = {key[0]: key for key in SETTINGS}
    plans = {key: [Plan(data, p) for data in photos] for key, p in params.items()}
    any_params = next(iter(params.values()))
    # the shared decode: full scale, RGB (b never DCT-scales; d's rec709 needs 3 channels)
    full = [decode(data, any_params, reduce=1, channels=3) for data in photos]
    own = {key: [decode(data, p) for data in photos] for key, p in params.items()}
    today = {key: [resize_image(data, p).data for data in photos] for key, p in params.items()}
    for key, p in params.items():  # the decode/render split must be resize_image itself
        for i in range(n):
            plan = plans[key][i]
            if render(own[key][i], plan.reduce, plan.geometry, p) != today[key][i]:
                raise SystemExit(f"{key}: decode + _render differs from resize_image")
    indices = list(range(n))

    functions = {"shared full decode": lambda i: decode(photos[i], any_params, 1, 3)}
    for key, p in params.items():
        functions[f"{key}|decode"] = lambda i, p=p: decode(photos[i], p)
        functions[f"{key}|total"] = lambda i, p=p: resize_image(photos[i], p)
        functions[f"{key}|render"] = lambda i, k=key, p=p: render(
            own[k][i], plans[k][i].reduce, plans[k][i].geometry, p
        )
        functions[f"{key}|render full"] = lambda i, k=key, p=p: render(
            full[i], 1, plans[k][i].geometry, p
        )

    def decode_once(i: int, keys) -> list[bytes]:
        """One decode for the datasets at full scale, their own resize for the others."""
        pixels = decode(photos[i], any_params, 1, 3)
        out = []
        for key in keys:
            plan = plans[key][i]
            if plan.reduce == 1:
                out.append(render(pixels, 1, plan.geometry, params[key]))
            else:
                out.append(resize_image(photos[i], params[key]).data)
        return out

    for combo in COMBINATIONS:
        keys = [letters[c] for c in combo]
        for i in indices:
            if decode_once(i, keys) != [today[key][i] for key in keys]:
                raise SystemExit(f"decode-once {combo}: JPEGs differ from today's")
        functions[f"decode-once {combo}"] = lambda i, keys=keys: decode_once(i, keys)

    rates = race(functions, indices, args.repeats)
    ms = {name: 1000 / rate for name, rate in rates.items()}

    rows = []
    print(
        f"\n{'setting':<24}{'img/s':>7}{'decode ms':>11}{'total ms':>10}{'share':>7}"
        f"{'render ms':>11}{'from full':>11}{'DCT-scaled':>12}"
    )
    for key in SETTINGS:
        scaled = sum(plan.reduce > 1 for plan in plans[key])
        row = {
            "setting": key,
            "config": SETTINGS[key],
            "img_per_s": rates[f"{key}|total"],
            "decode_ms": ms[f"{key}|decode"],
            "total_ms": ms[f"{key}|total"],
            "render_ms": ms[f"{key}|render"],
            "render_from_full_ms": ms[f"{key}|render full"],
            "dct_scaled_images": scaled,
        }
        row["decode_share"] = row["decode_ms"] / row["total_ms"]
        rows.append(row)
        print(
            f"{key:<24}{row['img_per_s']:>7.0f}{row['decode_ms']:>11.2f}{row['total_ms']:>10.2f}"
            f"{row['decode_share']:>7.0%}{row['render_ms']:>11.2f}"
            f"{row['render_from_full_ms']:>11.2f}{f'{scaled}/{n}':>12}"
        )
    shared_ms = ms["shared full decode"]
    print(f"shared decode (full scale, RGB): {shared_ms:.2f} ms")
    by_key = {row["setting"]: row for row in rows}

    estimates = []
    print(f"\n{'datasets':<10}{'today ms':>10}{'estimate ms':>13}{'ratio':>7}"
          f"{'measured ms':>13}{'ratio':>7}  (per image, one core)")  # fmt: skip
    for combo in COMBINATIONS:
        keys = [letters[c] for c in combo]
        today_ms = sum(by_key[k]["total_ms"] for k in keys)
        estimate = shared_ms
        for key in keys:
            row = by_key[key]
            rest = row["total_ms"] - row["decode_ms"]
            # the photos it DCT-scales keep their own decode (and bytes); the others share
            share = row["dct_scaled_images"] / n
            estimate += (1 - share) * rest + share * row["total_ms"]
        measured = ms[f"decode-once {combo}"]
        estimates.append(
            {
                "datasets": combo,
                "today_ms": today_ms,
                "estimate_ms": estimate,
                "estimate_ratio": estimate / today_ms,
                "measured_ms": measured,
                "measured_ratio": measured / today_ms,
            }
        )
        print(
            f"{'+'.join(combo):<10}{today_ms:>10.2f}{estimate:>13.2f}{estimate / today_ms:>7.2f}"
            f"{measured:>13.2f}{measured / today_ms:>7.2f}"
        )
    print("(decode-once output verified byte-identical to today's for every image)")
    report = {
        "images": n,
        "origin": origin,
        "mean_kb": round(mean_kb, 1),
        "repeats": args.repeats,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "shared_decode_ms": shared_ms,
        "settings": rows,
        "decode_once": estimates,
    }
    with atomic_write(OUT, "w") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
