"""Contact sheets: a grid of records as their consumers decode them.

``contact_sheet`` draws imgprep.formats' ``Preview`` objects (RecordFormat.previews):
each record's image with its boxes, its extra panels beside it (Tangler's string art,
Koalarization's L and ab), and a "label · text" caption over its file name. Matplotlib
renders through Agg on a Figure of its own (no pyplot state), and the PNG carries no
software version, so the same previews give the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from imgprep.atomic import atomic_write
from imgprep.formats.base import Preview

__all__ = ["contact_sheet"]

DPI = 100
THUMB = 1.6  # inches: one image's square slot (160 px at DPI)
CAPTION = 0.44  # inches under each record: two lines of caption
HEADER = 0.5  # inches over the grid: the title
MARGIN = 0.15  # inches around the grid and between records
SLOTS_PER_ROW = 8  # image slots in a row; a record takes 1 + its panels
CHARS_PER_SLOT = 24  # caption characters a slot's width holds at the caption's size
BOX_COLOUR = "#ff3030"
_STYLE = {  # fixed, so that a user's matplotlibrc does not change the sheet
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.linewidth": 0.5,
}


def _shorten(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: max(chars - 1, 1)] + "…"


def _caption(preview: Preview) -> str:
    """ "label · text"; a record without label (-1) and text says so instead of "-1"."""
    if preview.text:
        return f"{preview.label} · {preview.text}"
    return "no label" if preview.label == -1 else str(preview.label)


def _show(axes, image: np.ndarray, name: str | None) -> None:
    """One image in a square slot, its aspect kept; gray images in gray."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        axes.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        axes.imshow(image)
    axes.set_xticks([])
    axes.set_yticks([])
    if name is not None:
        axes.set_title(name, fontsize=7, pad=2, parse_math=False)


def _draw_boxes(axes, boxes, height: int, width: int) -> None:
    from matplotlib.patches import Rectangle

    for xmin, ymin, xmax, ymax in boxes:
        # pixel centres sit at integers: the image spans -0.5 .. side - 0.5
        axes.add_patch(
            Rectangle(
                (xmin * width - 0.5, ymin * height - 0.5),
                (xmax - xmin) * width,
                (ymax - ymin) * height,
                fill=False,
                edgecolor=BOX_COLOUR,
                linewidth=1.2,
            )
        )


def contact_sheet(previews: Sequence[Preview], out_png, title: str) -> None:
    """A PNG grid of ``previews`` (records in the order given) under ``title``, written
    atomically; same previews, same bytes."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    previews = list(previews)
    panels = max((len(p.panels) for p in previews), default=0)
    slots = 1 + panels  # every record gets the widest record's slots: a regular grid
    per_row = max(1, round(SLOTS_PER_ROW / slots))
    rows = max(1, math.ceil(len(previews) / per_row))
    cell_w, cell_h = slots * THUMB, THUMB + CAPTION + (0.15 if panels else 0.0)
    width = 2 * MARGIN + per_row * cell_w + (per_row - 1) * MARGIN
    height = HEADER + rows * (cell_h + MARGIN) + MARGIN

    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(width, height), dpi=DPI)
        FigureCanvasAgg(figure)
        count = f"{len(previews)} record{'s' * (len(previews) != 1)}"
        figure.text(
            MARGIN / width,
            1 - 0.3 / height,
            f"{title} · {count}" if previews else f"{title} · no records",
            fontsize=11,
            va="center",
            parse_math=False,
        )
        for number, preview in enumerate(previews):
            row, column = divmod(number, per_row)
            left = MARGIN + column * (cell_w + MARGIN)
            top = HEADER + row * (cell_h + MARGIN) + (0.15 if panels else 0.0)
            views = [("image", preview.image), *preview.panels.items()]
            for slot, (name, image) in enumerate(views):
                axes = figure.add_axes(
                    (
                        (left + slot * THUMB + 0.03) / width,
                        1 - (top + THUMB) / height,
                        (THUMB - 0.06) / width,
                        THUMB / height,
                    )
                )
                _show(axes, image, name if panels else None)
                if slot == 0 and preview.boxes:
                    _draw_boxes(axes, preview.boxes, *np.asarray(image).shape[:2])
            chars = CHARS_PER_SLOT * slots
            caption = _caption(preview)
            x = (left + 0.03) / width
            figure.text(
                x,
                1 - (top + THUMB + 0.05) / height,
                _shorten(caption, chars),
                va="top",
                parse_math=False,
            )
            figure.text(
                x,
                1 - (top + THUMB + 0.24) / height,
                _shorten(preview.filename, chars + chars // 4),
                va="top",
                fontsize=6.5,
                color="#555555",
                parse_math=False,
            )
        with atomic_write(out_png) as handle:
            figure.savefig(handle, format="png", dpi=DPI, metadata={"Software": None})
