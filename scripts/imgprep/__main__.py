"""Command line: ``imgprep ravel [--pins K] [--lines N] ... FILE|-`` (or ``python -m imgprep``)."""

from __future__ import annotations

import argparse
import io
import math
import sys

import numpy as np

# what --help shows (the docstring's reST markup would show as is)
DESCRIPTION = (
    "imgprep tools. ravel: the string-art pin path of an image (Tangler's raveler). "
    "progress: where a running build stands, from its jobs' logs."
)


def _square_gray(data: bytes, res: int | None) -> np.ndarray:
    """An image file as Tangler prepared it: centre square, ``res`` side, Rec.709 luma."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if res and res != side:
        image = image.resize((res, res), Image.Resampling.BICUBIC)
    return np.asarray(image.convert("L", matrix=(0.2126, 0.7152, 0.0722, 0)))


def _raw_square(data: bytes) -> np.ndarray:
    """Raw 8-bit gray bytes of a square image, as Tangler's raveler read them."""
    side = math.isqrt(len(data))
    if side == 0 or side * side != len(data):
        raise SystemExit(f"stdin holds {len(data)} bytes: not a square 8-bit gray image")
    return np.frombuffer(data, np.uint8).reshape(side, side)


def ravel_command(args) -> int:
    from imgprep.kernels.stringart import ravel, render_png, render_svg

    if args.file == "-":
        image = _raw_square(sys.stdin.buffer.read())
    else:
        with open(args.file, "rb") as handle:
            image = _square_gray(handle.read(), args.res)
    path = ravel(
        image,
        pins=args.pins,
        lines=args.lines,
        weight=args.weight,
        frame=args.frame,
        oversample=args.oversample,
    )
    pins_out = args.pins_out
    if pins_out is None and not (args.svg or args.png):
        pins_out = "-"  # nothing else asked for: the pins are the answer
    if pins_out == "-":
        sys.stdout.write("".join(f"{pin}\n" for pin in path))
    elif pins_out is not None:
        with open(pins_out, "w") as handle:
            handle.write("".join(f"{pin}\n" for pin in path))
    if args.svg:
        with open(args.svg, "w") as handle:
            handle.write(render_svg(path, args.pins))
    if args.png:
        png = render_png(path, args.pins, image.shape[0], args.weight, args.frame, args.oversample)
        with open(args.png, "wb") as handle:
            handle.write(png)
    return 0


def main(argv=None) -> int:
    from imgprep.config import section_config

    defaults = section_config("ravel")  # the schema's, as a workflow's ravel: gets them
    parser = argparse.ArgumentParser(prog="imgprep", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    rav = commands.add_parser(
        "ravel",
        help="an image's string-art pin path, one pin a line",
        description="Print an image's string-art pin path, one pin a line (with --svg or "
        "--png: only the files, unless --pins-out says where the pins go).",
    )
    rav.add_argument("file", help="an image file, or - for raw square 8-bit gray bytes on stdin")
    rav.add_argument("--pins", type=int, default=defaults["pins"], help="pins on the circle (k)")
    rav.add_argument("--lines", type=int, default=defaults["lines"], help="thread segments (N)")
    rav.add_argument(
        "--weight", type=float, default=defaults["weight"], help="thread width, metres"
    )
    rav.add_argument(
        "--frame", type=float, default=defaults["frame"], help="frame diameter, metres"
    )
    rav.add_argument(
        "--oversample",
        type=int,
        default=defaults["oversample"],
        help="thread weight divisor (ravel.oversample)",
    )
    rav.add_argument("--res", type=int, default=256, help="side an image file is resized to")
    rav.add_argument("--svg", help="also write the string art as SVG here")
    rav.add_argument("--png", help="also write the string art as PNG here")
    rav.add_argument(
        "--pins-out",
        metavar="PATH",
        help="write the pins here, - for stdout (default: stdout unless --svg or --png)",
    )
    prog = commands.add_parser(
        "progress",
        help="where a build stands: each unfinished job's latest progress line",
        description="Each unfinished job's latest `progress` line (n/N images, img/s, ETA) "
        "and the finished jobs per rule, read from the jobs' logs (results/logs).",
    )
    prog.add_argument("logs", nargs="?", default="results/logs", help="the run's logs folder")
    prog.add_argument(
        "--stalled-after",
        type=float,
        default=300.0,
        metavar="S",
        help="an unfinished job whose log has not changed for S seconds is shown as stalled",
    )
    args = parser.parse_args(argv)
    if args.command == "progress":
        return progress_command(args)
    return ravel_command(args)


def progress_command(args) -> int:
    from pathlib import Path

    from imgprep.progress import describe_states, job_states

    if not Path(args.logs).is_dir():
        print(f"imgprep progress: no logs folder {args.logs} (nothing has run there yet)")
        return 1
    print(describe_states(job_states(args.logs), args.stalled_after))
    return 0


if __name__ == "__main__":
    sys.exit(main())
