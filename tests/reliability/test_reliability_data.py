"""Data integrity: damaged dataset files are named, a damaged decoded cache is rebuilt."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from reliability_helpers import make_images

from deeptrain.data.integrity import FASHION_MNIST_FILES, CorruptDataError, check_fashion_mnist
from deeptrain.data.sources import load_source

SHARED = Path(os.environ.get("DEEPTRAIN_DATA_DIR") or Path(__file__).resolve().parents[3] / "shared" / "data")
RAW = SHARED / "FashionMNIST" / "raw"


def idx_file(path: Path, magic: int, shape: tuple[int, ...], data: bytes | None = None) -> Path:
    body = data if data is not None else bytes(int(np.prod(shape)))
    path.write_bytes(np.array([magic, *shape], dtype=">u4").tobytes() + body)
    return path


@pytest.fixture
def fashion_copy(tmp_path) -> Path:
    """``tmp/FashionMNIST/raw`` with the real files linked (tests replace one by a damaged file)."""
    if not (RAW / "train-images-idx3-ubyte").is_file():
        pytest.skip(f"no Fashion-MNIST at {RAW}")
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FASHION_MNIST_FILES:
        (raw / name).symlink_to(RAW / name)
    return tmp_path


def test_the_real_fashion_mnist_files_pass():
    if not RAW.is_dir():
        pytest.skip(f"no Fashion-MNIST at {RAW}")
    check_fashion_mnist(RAW)


def test_a_truncated_idx_file_is_named_before_torchvision_reads_it(fashion_copy):
    target = fashion_copy / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    target.unlink()
    with open(RAW / "train-images-idx3-ubyte", "rb") as f:
        target.write_bytes(f.read(1_000_016))
    with pytest.raises(CorruptDataError, match=r"train-images-idx3-ubyte is truncated: 1000016 bytes, expected 47040016"):
        load_source("fashion_mnist", fashion_copy)


@pytest.mark.parametrize("damage, message", [
    (lambda p: idx_file(p, 0x803, (10000,)), r"magic number 0x803, expected 0x801"),
    (lambda p: idx_file(p, 0x801, (9999,)), r"shape \(9999,\), expected \(10000,\)"),
    (lambda p: idx_file(p, 0x801, (10000,), bytes(10001)), "longer than its header says"),
    (lambda p: idx_file(p, 0x801, (10000,), bytes([3] * 9999 + [12])), r"label 12, outside 0..9"),
    (lambda p: p.write_bytes(b"\x00\x00"), "magic number nothing"),
])
def test_damaged_label_files_are_named(fashion_copy, damage, message):
    target = fashion_copy / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte"
    target.unlink()
    damage(target)
    with pytest.raises(CorruptDataError, match=message) as err:
        load_source("fashion_mnist", fashion_copy)
    assert str(target) in str(err.value)


def test_cifar10_batches_failing_their_md5_are_named(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        (folder / name).write_bytes(b"not a pickle")
    with pytest.raises(CorruptDataError, match="fail their MD5 check") as err:
        load_source("cifar10", tmp_path)
    assert str(folder / "data_batch_1") in str(err.value) and str(folder / "test_batch") in str(err.value)


def test_a_damaged_decoded_cache_is_rebuilt_not_used(tmp_path):
    images, cache = make_images(tmp_path / "images", n=12), tmp_path / "cache"
    first = load_source("image_folder", images, cache_dir=cache)
    (cached,) = (cache / "image_folder").glob("*.pt")
    cached.write_bytes(cached.read_bytes()[:100])  # truncated by something else
    again = load_source("image_folder", images, cache_dir=cache)
    assert torch.equal(first.train.images, again.train.images)
    assert torch.load(cached, weights_only=True)["images"].shape == first.train.images.shape  # rewritten whole

