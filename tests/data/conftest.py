"""Fixtures of the data tests: the real datasets (skipped when absent) and tiny generated image folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from image_helpers import make_image_folder

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def real_data_dir() -> Path:
    return Path(os.environ.get("DEEPTRAIN_DATA_DIR") or SHARED_DATA)


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    root = real_data_dir()
    if not (root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.skip(f"Fashion-MNIST not found in {root}/FashionMNIST/raw (set DEEPTRAIN_DATA_DIR)")
    return root


@pytest.fixture(scope="session")
def cifar_jpeg_dir() -> Path:
    root = real_data_dir() / "cifar10-jpeg" / "train"
    if not (root / "cat").is_dir():
        pytest.skip(f"CIFAR-10 JPEG folder not found at {root} (set DEEPTRAIN_DATA_DIR)")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """``tmp_path/images/train/{a,b}`` (6 + 4 images, 8x8 RGB) and ``test/{a,b}`` (2 + 2)."""
    root = tmp_path / "images"
    make_image_folder(root / "train", {"a": 6, "b": 4})
    make_image_folder(root / "test", {"a": 2, "b": 2}, start=100)
    return root
