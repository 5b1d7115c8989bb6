"""String art: the numba kernel against the plain reference, bit for bit, and the rules."""

from __future__ import annotations

import inspect
import io
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from helpers import SAMPLE
from imgprep.config import section_config
from imgprep.kernels import stringart
from imgprep.kernels.stringart import (
    DEFAULT_FRAME,
    DEFAULT_LINES,
    DEFAULT_PINS,
    DEFAULT_WEIGHT,
    adjacency_indices,
    kernel_tables,
    line_tables,
    pin_pixels,
    ravel,
    ravel_reference,
    render_png,
    render_svg,
    thread_weights,
)
from imgprep.stages.ravel import RavelParams
from PIL import Image

# (pins, lines, res, weight, frame)
PARAMS = [
    (16, 30, 32, 100e-6, 0.622),
    (37, 50, 48, 200e-6, 0.5),
    (64, 40, 64, 100e-6, 0.622),
    (256, 25, 96, 100e-6, 0.622),
]


def noise(res: int) -> np.ndarray:
    return np.random.default_rng(res).integers(0, 256, size=(res, res), dtype=np.uint8)


def gradient(res: int) -> np.ndarray:
    ramp = np.linspace(0, 255, res)
    return np.rint((ramp[None, :] + ramp[:, None]) / 2).astype(np.uint8)


def photo(res: int) -> np.ndarray:
    path = sorted(SAMPLE.glob("train/*/n02123045_1.JPEG"))[0]
    with Image.open(path) as image:
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        square = image.crop((left, top, left + side, top + side))
        return np.asarray(square.resize((res, res), Image.LANCZOS).convert("L"))


@pytest.mark.parametrize("make", [noise, gradient, photo])
@pytest.mark.parametrize("pins, lines, res, weight, frame", PARAMS)
def test_kernel_equals_reference(make, pins, lines, res, weight, frame):
    image = make(res)
    fast = ravel(image, pins, lines, weight, frame)
    slow = ravel_reference(image, pins, lines, weight, frame)
    assert fast.dtype.kind == "i"
    assert len(fast) == lines + 1
    assert fast.tolist() == slow


def test_oversample_and_longer_run_equal_reference():
    image = photo(40)
    fast = ravel(image, 24, 200, 150e-6, 0.4, oversample=2)
    assert fast.tolist() == ravel_reference(image, 24, 200, 150e-6, 0.4, oversample=2)


def test_pruned_kernel_equals_the_unpruned_one_on_a_long_run():
    """Thousands of steps, so the bounds go stale and near-ties occur: skipping the chords
    that cannot win must still pick exactly what summing every chord picks."""
    image = photo(96)
    args = (image, 96, 3000, 100e-6, 0.622, 1)
    pruned = stringart._ravel(*args, stringart._kernel)
    full = stringart._ravel(*args, stringart._kernel_unpruned, False)
    np.testing.assert_array_equal(pruned, full)


@pytest.mark.parametrize("weight", [0.0, -100e-6])
def test_no_pruning_without_a_positive_weight(weight):
    # vw <= 0: residuals stop falling, the bounds would not hold; the kernel sums all
    image = noise(32)
    assert ravel(image, 16, 60, weight).tolist() == ravel_reference(image, 16, 60, weight)


def test_output_length_and_start():
    for lines in (0, 1, 2, 7):
        path = ravel(noise(32), 16, lines)
        assert len(path) == lines + 1
        assert path[0] == 0


def test_pins_geometry_k4():
    cols, rows = pin_pixels(4, 33)
    # pin 0 bottom centre, then counter-clockwise on screen: right, top, left; pin 3's
    # row is 15, not 16: cos(3*pi/2) is -1.8e-16, and (int) truncates 15.999...
    assert list(zip(cols.tolist(), rows.tolist(), strict=True)) == [
        (16, 32),
        (32, 16),
        (16, 0),
        (0, 15),
    ]


def test_line_tables():
    index, start, length = line_tables(4, 33)
    assert length[0, 0] == 0
    assert length[0, 2] == length[2, 0] == 32  # the vertical diameter, sqrt(32**2)
    chord = index[start[0, 2] : start[0, 2] + length[0, 2]].astype(int)
    # sampled from pin 0 (row 32) upwards, column 16, never reaching row 0 (R-1 = 31 steps)
    assert (chord % 33 == 16).all()
    assert (chord // 33).tolist()[:3] == [32, 30, 29]  # 32 + s*(-32)/31 truncates to 30
    assert line_tables(4, 33) is line_tables(4, 33)  # built once
    assert kernel_tables(4, 33) is kernel_tables(4, 33)
    order = stringart.tiled_order(33)
    assert sorted(order.tolist()) == list(range(33 * 33 + 1))  # a permutation
    assert order[33 * 33] == 33 * 33
    with pytest.raises(ValueError):
        index[0] = 1  # read-only


def test_thread_weights():
    tw, vw = thread_weights(256)
    assert tw.dtype == np.float32
    assert tw == np.float32(100e-6) * np.float32(256) / np.float32(0.622)
    assert vw == 0.7 * float(tw)


def test_all_ties_pick_the_lowest_allowed_pin():
    # res 1: every pin is the one pixel, every chord is empty, every score is 0
    path = ravel(np.zeros((1, 1), np.uint8), 5, 9)
    # step 1 excludes nothing (pin 0 itself wins), step 2 excludes the current pin,
    # from step 3 on the previous pin too
    assert path.tolist() == [0, 0, 1, 2, 0, 1, 2, 0, 1, 2]
    assert path.tolist() == ravel_reference(np.zeros((1, 1), np.uint8), 5, 9)


def test_exclusion_rules():
    # white: every chord scores -vw*vw*len, so step 1 stays on pin 0 (empty chord, 0)
    white = np.full((48, 48), 255, np.uint8)
    path = ravel(white, 32, 20)
    assert path[1] == 0
    _, _, length = line_tables(32, 48)
    # step 2 may not stay: the shortest chord from pin 0, lowest pin on a tie
    assert path[2] == int(np.argmin(np.where(np.arange(32) == 0, 10**9, length[0])))
    path = ravel(noise(48), 32, 300)
    assert all(path[s] != path[s - 1] for s in range(2, len(path)))
    assert all(path[s] != path[s - 2] for s in range(3, len(path)))


def test_bad_input():
    with pytest.raises(ValueError):
        ravel(np.zeros((4, 5), np.uint8), 8, 2)
    with pytest.raises(ValueError):
        ravel(np.zeros((4, 4), np.float32), 8, 2)
    with pytest.raises(ValueError):
        ravel(np.zeros((4, 4), np.uint8), 2, 2)


def adjacency(path, pins):
    matrix = np.zeros((pins, pins), np.int64)
    for a, b in zip(path[:-1], path[1:], strict=True):
        matrix[a, b] = matrix[b, a] = 1
    return matrix


@pytest.mark.parametrize(
    "path, pins",
    [
        ([0, 5, 2, 5, 7, 1, 0, 3], 8),
        ([0, 0, 1, 2, 0, 1, 2], 3),  # a self-loop
        ([0], 4),
        (None, 256),
    ],
)
def test_adjacency_indices_match_tf_from_dense(path, pins):
    import tensorflow as tf

    if path is None:
        path = ravel(photo(64), pins, 500).tolist()
    ours = adjacency_indices(path, pins)
    assert ours.dtype == np.uint8 and ours.ndim == 2 and ours.shape[1] == 2
    dense = np.tril(adjacency(path, pins))
    theirs = tf.sparse.from_dense(dense).indices.numpy()
    np.testing.assert_array_equal(ours.astype(np.int64), theirs)


def test_render_png_and_svg():
    path = ravel(photo(64), 64, 300)
    png = render_png(path, 64, 64)
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        assert image.size == (64, 64)
        assert image.mode == "L"
        pixels = np.asarray(image)
    assert pixels.min() < 255 and pixels.max() == 255  # drawn, corners untouched
    svg = ET.fromstring(render_svg(path, 64, size=300))
    assert svg.get("width") == "300" and svg.get("height") == "300"
    line = svg.find("{http://www.w3.org/2000/svg}polyline")
    assert len(line.get("points").split()) == len(path)


# -- parameters -------------------------------------------------------------------------


def test_the_kernels_defaults_are_the_schemas():
    """The kernel's keyword defaults (Tangler's raveler) are the config schema's, so a
    plain ravel() call and a workflow without a ravel: mapping give the same pins."""
    defaults = section_config("ravel")
    assert (defaults["pins"], defaults["lines"]) == (DEFAULT_PINS, DEFAULT_LINES)
    assert (defaults["weight"], defaults["frame"]) == (DEFAULT_WEIGHT, DEFAULT_FRAME)
    assert inspect.signature(ravel).parameters["oversample"].default == defaults["oversample"]


def test_ravel_params_come_from_the_validated_mapping():
    params = RavelParams.from_config(section_config("ravel", {"pins": 32}))
    assert (params.pins, params.lines, params.oversample) == (32, 6000, 1)
    partial = section_config("ravel")
    del partial["frame"]
    with pytest.raises(ValueError, match=r"ravel\.frame: missing"):
        RavelParams.from_config(partial)
    with pytest.raises(ValueError, match=r"ravel\.thread: unknown"):
        RavelParams.from_config({**section_config("ravel"), "thread": 1})
