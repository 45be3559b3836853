"""Many recordings' window images in one Arrow column, packed and unpacked without copies.

Score's stage 1 hands the inference actors one row per recording, its windows' images
as one ``large_binary`` value (``n_windows × S×S×3`` uint8 bytes; null when there are none).
Packing writes every image once into one buffer; unpacking views that buffer as a
``(windows, S, S, 3)`` array, instead of a Python bytes object per row and a copy each
way (about 70 kB per window).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def pack(stacks: list[np.ndarray | None]) -> pa.LargeBinaryArray:
    """One value per recording: its ``(n, S, S, 3)`` uint8 images, or None (null)."""
    sizes = np.array([0 if s is None else s.nbytes for s in stacks], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    data = np.empty(int(offsets[-1]), dtype=np.uint8)
    for s, start, size in zip(stacks, offsets, sizes):
        if s is not None and size:
            data[start:start + size] = s.reshape(-1)
    valid = pa.array([s is not None for s in stacks], pa.bool_())
    validity = valid.buffers()[1] if not all(s is not None for s in stacks) else None
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(stacks),
                                            [validity, pa.py_buffer(offsets), pa.py_buffer(data)])


def unpack(column, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(images (windows, S, S, 3) uint8, windows per row)`` of a packed column (a view of
    its buffer where Arrow holds it in one piece)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    column = column.cast(pa.large_binary())
    per_image = image_size * image_size * 3
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int64)[column.offset:column.offset + len(column) + 1]
    counts = np.diff(offsets) // per_image
    data = column.buffers()[2]
    flat = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    images = flat[offsets[0]:offsets[-1]].reshape(-1, image_size, image_size, 3)
    return images, counts
