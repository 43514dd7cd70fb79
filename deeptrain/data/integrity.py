"""Checks of known dataset files, so that a damaged file is named instead of read as garbage.

- Fashion-MNIST (IDX files): torchvision checks only that the files exist. Their headers and
  sizes are fixed by the format (``0x00000803`` + dims for images, ``0x00000801`` + count for
  labels), so we check the magic number, the dimensions, that the size is exactly header +
  data, and that labels are in 0..9: a few bytes and one 60 kB read, on every load. (Checksums
  would pin one particular copy: the files differ in bytes between mirrors and re-encodings,
  e.g. the ``SHA256SUMS`` of a local copy are not upstream's.)
- CIFAR-10 (python batches): torchvision already verifies every batch's MD5 when it opens the
  dataset; when that fails, :func:`corrupt_cifar10_files` names the files that differ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class CorruptDataError(ValueError):
    """A dataset file exists but is truncated or not what its name says."""


# file -> (magic number, shape, number of classes for label files or None)
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte": (0x00000803, (60000, 28, 28), None),
    "train-labels-idx1-ubyte": (0x00000801, (60000,), 10),
    "t10k-images-idx3-ubyte": (0x00000803, (10000, 28, 28), None),
    "t10k-labels-idx1-ubyte": (0x00000801, (10000,), 10),
}


def check_idx_file(path: Path, magic: int, shape: tuple[int, ...], num_classes: int | None = None) -> None:
    """Raise :class:`CorruptDataError` naming ``path`` unless it is an IDX uint8 file of ``shape``."""
    header_size = 4 * (1 + len(shape))
    expected_size = header_size + int(np.prod(shape))
    size = path.stat().st_size
    fix = "delete it and download it again (--data.download true), or restore it from a good copy"
    with open(path, "rb") as f:
        raw = f.read(header_size)
        header = np.frombuffer(raw[: len(raw) // 4 * 4], dtype=">u4")
        if len(header) < 1 + len(shape) or int(header[0]) != magic:
            found = hex(int(header[0])) if len(header) else "nothing"
            raise CorruptDataError(f"{path} is not an IDX file of its kind: magic number {found}, expected "
                                   f"{hex(magic)}; {fix}")
        if tuple(int(d) for d in header[1:]) != shape:
            raise CorruptDataError(f"{path} holds an array of shape {tuple(int(d) for d in header[1:])}, expected "
                                   f"{shape}; {fix}")
        if size != expected_size:
            state = "truncated" if size < expected_size else "longer than its header says"
            raise CorruptDataError(f"{path} is {state}: {size} bytes, expected {expected_size}; {fix}")
        if num_classes is not None:
            labels = np.frombuffer(f.read(), dtype=np.uint8)
            if labels.max(initial=0) >= num_classes:
                raise CorruptDataError(f"{path} has label {int(labels.max())}, outside 0..{num_classes - 1}; {fix}")


def check_fashion_mnist(raw_dir: Path) -> None:
    """Check the Fashion-MNIST IDX files present in ``raw_dir`` (missing ones are torchvision's business)."""
    for name, (magic, shape, classes) in FASHION_MNIST_FILES.items():
        path = Path(raw_dir) / name
        if path.is_file():
            check_idx_file(path, magic, shape, classes)


def corrupt_cifar10_files(root: Path) -> list[Path]:
    """The CIFAR-10 python batches under ``root`` that are present but fail torchvision's MD5."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity

    folder = Path(root) / CIFAR10.base_folder
    files = [(folder / name, md5) for name, md5 in CIFAR10.train_list + CIFAR10.test_list]
    return [path for path, md5 in files if path.is_file() and not check_integrity(str(path), md5)]
