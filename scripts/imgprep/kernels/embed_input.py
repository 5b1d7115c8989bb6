"""Deep Koalarization's network input, decoded from a shard's JPEGs ahead of the network."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image


def _gray_input(jpeg: bytes, size: int) -> np.ndarray:
    with Image.open(io.BytesIO(jpeg)) as image:
        gray = image.convert("L")
        if gray.size != (size, size):
            gray = gray.resize((size, size), Image.Resampling.BICUBIC)
        return np.asarray(gray, dtype=np.uint8)


def koalarization_batch(jpegs: list[bytes], size: int) -> np.ndarray:
    """Koalarization's input: gray, three equal channels, [-1, 1]; float32 [n, size, size, 3]."""
    batch = np.empty((len(jpegs), size, size, 3), dtype=np.float32)
    for index, jpeg in enumerate(jpegs):
        gray = _gray_input(jpeg, size).astype(np.float32) / np.float32(127.5) - np.float32(1.0)
        batch[index] = gray[:, :, None]
    return batch


def decoded_batches(chunks: list[list[bytes]], size: int, threads: int, ahead: int = 2):
    """Koalarization inputs of each chunk, in order, decoded by ``threads`` threads up to
    ``ahead`` batches before the network asks: on a GPU the forward pass of a batch takes
    less than one thread's decode of it, so one thread would leave the GPU idle."""
    if not chunks:
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: list = []
        for chunk in chunks:
            if threads == 1:
                pending.append(pool.submit(koalarization_batch, chunk, size))
            else:  # the images of a batch side by side; each lands in its own slot
                pending.append([pool.submit(_gray_input, jpeg, size) for jpeg in chunk])
            if len(pending) > ahead:
                yield _gathered(pending.pop(0), size)
        while pending:
            yield _gathered(pending.pop(0), size)


def _gathered(pending, size: int) -> np.ndarray:
    if not isinstance(pending, list):
        return pending.result()
    batch = np.empty((len(pending), size, size, 3), dtype=np.float32)
    for index, future in enumerate(pending):
        gray = future.result().astype(np.float32) / np.float32(127.5) - np.float32(1.0)
        batch[index] = gray[:, :, None]
    return batch
