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


def _scaled_gray(jpeg: bytes, size: int) -> np.ndarray:
    """One image's gray in [-1, 1], float32 [size, size]."""
    return _gray_input(jpeg, size).astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def _batch(grays, count: int, size: int) -> np.ndarray:
    """Three equal channels of each scaled gray, in order: float32 [count, size, size, 3]."""
    batch = np.empty((count, size, size, 3), dtype=np.float32)
    for index, gray in enumerate(grays):
        batch[index] = gray[:, :, None]
    return batch


def koalarization_batch(jpegs: list[bytes], size: int) -> np.ndarray:
    """Koalarization's input: gray, three equal channels, [-1, 1]; float32 [n, size, size, 3]."""
    return _batch((_scaled_gray(jpeg, size) for jpeg in jpegs), len(jpegs), size)


def decoded_batches(chunks: list[list[bytes]], size: int, threads: int, ahead: int = 2):
    """Koalarization inputs of each chunk, in order, decoded by ``threads`` threads up to
    ``ahead`` batches before the network asks: on a GPU the forward pass of a batch takes
    less than one thread's decode of it, so one thread would leave the GPU idle. Each
    image is decoded on its own and lands in its own slot, so threads change no value."""
    if not chunks:
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: list = []
        for chunk in chunks:
            pending.append([pool.submit(_scaled_gray, jpeg, size) for jpeg in chunk])
            if len(pending) > ahead:
                yield _gathered(pending.pop(0), size)
        while pending:
            yield _gathered(pending.pop(0), size)


def _gathered(futures: list, size: int) -> np.ndarray:
    return _batch((future.result() for future in futures), len(futures), size)
