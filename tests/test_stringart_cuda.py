"""The GPU string-art kernel gives the CPU kernel's pins bit for bit: checked on numba's
CUDA simulator, which must be switched on before numba is imported, so in a child process.
The simulator runs each CUDA thread as a Python thread: sizes stay small (32 px, 16 pins).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO, base_config, jpeg_bytes

SIMULATED = r"""
import io
import json
import numpy as np
from imgprep.kernels.stringart import line_tables, ravel, thread_weights
from imgprep.kernels.stringart_cuda import gpu_available, ravel_batch, ravel_batches

res, pins, lines = 32, 16, 25
rows, cols = np.mgrid[:res, :res]
images = {
    "noise": np.random.default_rng(7).integers(0, 256, (res, res), dtype=np.uint8),
    "gradient": (cols * 255 // (res - 1)).astype(np.uint8),
    "gray": np.full((res, res), 128, np.uint8),  # every chord's score is its length's
    "white": np.full((res, res), 255, np.uint8),  # nothing to cover: shortest chords win
}
batch = ravel_batch(list(images.values()), pins=pins, lines=lines)
one_by_one = np.concatenate(
    list(ravel_batches(list(images.values()), pins=pins, lines=lines, max_images=3))
)

# the steps of the CPU's path at which two or more chords share the best score
index, start, length = line_tables(pins, res)
_, vw = thread_weights(res)


def tied_steps(image, path):
    residual = (1.0 - image.astype(np.float64) / 255.0).ravel().tolist()
    tied = 0
    for step in range(1, len(path)):
        cur = path[step - 1]
        scores = []
        for d in range(pins):
            if (step >= 2 and d == cur) or (step >= 3 and d == path[step - 2]):
                continue
            chord = index[start[cur, d] : start[cur, d] + length[cur, d]].tolist()
            total = 0.0
            for pixel in chord:
                total += residual[pixel]
            scores.append(vw * (2.0 * total - vw * float(len(chord))))
        tied += scores.count(max(scores)) >= 2
        first, n = start[cur, path[step]], length[cur, path[step]]
        for pixel in index[first : first + n].tolist():
            residual[pixel] -= vw
    return tied


cpu = [ravel(image, pins=pins, lines=lines).tolist() for image in images.values()]
# the ravel stage on the simulated GPU writes the CPU path's bytes
import sys
import tarfile
from pathlib import Path
from imgprep.files.tables import member_name
from imgprep.stages.ravel import RavelParams, ravel_shard

work = Path(sys.argv[1])
with tarfile.open(work / "shard.tar", "w") as tar:
    for position, data in enumerate(JPEGS):
        member = tarfile.TarInfo(member_name(position))
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
params = RavelParams(pins=12, lines=10, weight=1e-4, frame=0.622, oversample=1)
stage = {}
for device in ("cpu", "gpu"):
    ravel_shard(work / "shard.tar", work / f"{device}.npy", params, device=device)
    stage[device] = (work / f"{device}.npy").read_bytes().hex()

try:
    ravel_batch([np.zeros((8, 8), np.uint8), np.zeros((9, 9), np.uint8)], pins=8, lines=2)
    refused = ""
except ValueError as error:
    refused = str(error)
print(json.dumps({
    "names": list(images),
    "gpu": batch.tolist(),
    "chunked": one_by_one.tolist(),
    "cpu": cpu,
    "tied_steps": {n: tied_steps(i, p) for (n, i), p in zip(images.items(), cpu)},
    "gpu_available": gpu_available(),
    "two_sizes": refused,
    "stage": stage,
}))
"""


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    env = {
        **os.environ,
        "NUMBA_ENABLE_CUDASIM": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO / "scripts"), os.environ.get("PYTHONPATH", "")]),
    }
    jpegs = [jpeg_bytes(24, 24, seed=seed, mode="L") for seed in (1, 2, 3)]
    code = SIMULATED.replace("JPEGS", repr(jpegs))
    work = tmp_path_factory.mktemp("stringart_cuda")
    proc = subprocess.run(
        [sys.executable, "-c", code, str(work)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_the_simulated_gpu_kernel_gives_the_cpu_pins_bit_for_bit(simulated):
    for name, gpu, cpu in zip(simulated["names"], simulated["gpu"], simulated["cpu"], strict=True):
        assert gpu == cpu, name
        assert len(gpu) == 26 and gpu[0] == 0
    # the images differ, and so do their paths: each block ravels its own image
    assert len({tuple(path) for path in simulated["gpu"]}) == 4
    # launches of at most 3 images give the same rows, in order
    assert simulated["chunked"] == simulated["gpu"]


def test_the_uniform_image_really_has_ties_and_they_go_to_the_lowest_pin(simulated):
    tied = simulated["tied_steps"]
    assert tied["white"] >= 2 and tied["gray"] >= 1, tied
    white = simulated["gpu"][simulated["names"].index("white")]
    # step 1 takes the empty chord 0 -> 0; then the shortest chords, lower pin first
    assert white[:3] == [0, 0, 1]


def test_the_simulator_is_not_taken_for_a_gpu(simulated):
    assert simulated["gpu_available"] is False


def test_a_batch_of_two_sizes_is_refused(simulated):
    assert "one size" in simulated["two_sizes"]


def test_the_chord_table_holds_each_chord_in_sample_order():
    from imgprep.kernels.stringart import line_tables
    from imgprep.kernels.stringart_cuda import chord_table

    index, start, length = line_tables(12, 20)
    table, table_length = chord_table(12, 20)
    assert np.array_equal(table_length, length)
    for c in range(12):
        for d in range(12):
            n = length[c, d]
            assert np.array_equal(table[c, :n, d], index[start[c, d] : start[c, d] + n])


def test_the_ravel_stage_on_the_simulated_gpu_writes_the_cpu_bytes(simulated):
    cpu, gpu = (bytes.fromhex(simulated["stage"][device]) for device in ("cpu", "gpu"))
    assert gpu == cpu
    targets = np.load(io.BytesIO(cpu))
    assert targets.shape == (3, 11) and targets.dtype == np.int16


def test_device_gpu_without_one_fails_naming_the_key(monkeypatch):
    from imgprep.kernels import stringart_cuda
    from imgprep.stages.ravel import on_gpu

    monkeypatch.setattr(stringart_cuda, "gpu_available", lambda: False)
    with pytest.raises(RuntimeError, match="'device.ravel' is gpu, but numba finds no CUDA GPU"):
        on_gpu("gpu")
    assert on_gpu("auto") is False and on_gpu("cpu") is False
    with pytest.raises(ValueError, match="device.ravel"):
        on_gpu("tpu")


def test_a_wrong_device_fails_validation_naming_the_key(tmp_path):
    from imgprep.config import ConfigError, validate_config

    config = base_config(tmp_path, tmp_path / "results", device={"ravel": "tpu"})
    with pytest.raises(ConfigError, match="config key 'device.ravel'"):
        validate_config(config)
    assert validate_config(base_config(tmp_path, tmp_path / "r"))["device"] == {"ravel": "auto"}
