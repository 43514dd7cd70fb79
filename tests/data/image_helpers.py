"""Generated image folders for the data tests (imported by basename: unique in the repo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, value: int, size: tuple[int, int] = (8, 8), channels: int = 3) -> Path:
    """A PNG whose every pixel is ``value`` (lossless: the value identifies the image)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (*size, channels) if channels == 3 else size
    Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(path)
    return path


def make_image_folder(root: Path, per_class: dict[str, int], start: int = 0, **kw) -> list[Path]:
    """``root/<class>/<i>.png`` with pixel values ``start, start + 1, ...`` across classes."""
    paths, value = [], start
    for name, count in per_class.items():
        for i in range(count):
            paths.append(write_image(root / name / f"{i:03d}.png", value, **kw))
            value += 1
    return paths
