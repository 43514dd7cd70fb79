import os
import shutil
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from image_helpers import make_image_folder, write_image
from PIL import Image

from deeptrain.data import SOURCES, DatasetNotFoundError, ImageDecodeError, default_data_dir, load_source
from deeptrain.data import image_folder as folder_mod


def load_folder(root, tmp_path, **kw):
    return load_source("image_folder", root, cache_dir=tmp_path / "cache", **kw)


def cache_files(tmp_path) -> list[Path]:
    return sorted((tmp_path / "cache" / "image_folder").glob("*.pt"))


@pytest.mark.parametrize("name", SOURCES.names())
def test_missing_dataset_names_the_path_and_the_fix(name, tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_source(name, tmp_path / "empty", cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert str((tmp_path / "empty").resolve()) in msg and "--data.data_dir" in msg
    if name != "image_folder":
        assert "DEEPTRAIN_DATA_DIR" in msg and "--data.download true" in msg


def test_failed_download_is_a_dataset_not_found_error(tmp_path, monkeypatch):
    from torchvision.datasets import FashionMNIST

    def offline(self):
        raise URLError("no network")

    monkeypatch.setattr(FashionMNIST, "download", offline)
    with pytest.raises(DatasetNotFoundError, match="downloading fashion_mnist failed.*no network"):
        load_source("fashion_mnist", tmp_path, download=True)


def test_the_datamodule_downloads_a_missing_dataset_by_default(tmp_path, monkeypatch):
    """A user with internet runs the quickstart with no data: torchvision's (checksummed) download
    fetches it into data_dir; offline the error is one line naming where it looked."""
    from torchvision.datasets import FashionMNIST

    from deeptrain.data.datamodule import ImageDataModule

    calls = []

    def offline(self):
        calls.append(self.root)
        raise URLError("Name or service not known\n(multi-line details)")

    monkeypatch.setattr(FashionMNIST, "download", offline)
    with pytest.raises(DatasetNotFoundError) as err:
        ImageDataModule("fashion_mnist", data_dir=str(tmp_path)).prepare_data()
    assert calls and calls[0] == str(tmp_path)
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(ValueError, match="cifar10, fashion_mnist, image_folder"):
        load_source("mnist", ".")


def test_default_data_dir(monkeypatch):
    monkeypatch.delenv("DEEPTRAIN_DATA_DIR", raising=False)
    assert default_data_dir() == Path("data")
    monkeypatch.setenv("DEEPTRAIN_DATA_DIR", "/somewhere")
    assert default_data_dir() == Path("/somewhere")


def test_fashion_mnist_arrays(fashion_dir):
    splits = load_source("fashion_mnist", fashion_dir)
    assert splits.train.images.shape == (60000, 1, 28, 28) and splits.test.images.shape == (10000, 1, 28, 28)
    assert splits.train.images.dtype == torch.uint8 and splits.train.labels.dtype == torch.int64
    assert splits.class_names[0] == "T-shirt/top" and splits.train.labels.unique().tolist() == list(range(10))


def test_image_folder_loads_in_class_order(image_folder, tmp_path):
    splits = load_folder(image_folder, tmp_path)
    assert splits.class_names == ["a", "b"]
    assert splits.train.images.shape == (10, 3, 8, 8) and splits.train.images.dtype == torch.uint8
    assert splits.train.labels.tolist() == [0] * 6 + [1] * 4
    assert splits.train.images[:, 0, 0, 0].tolist() == list(range(10))  # sorted files within a class
    assert splits.test.labels.tolist() == [0, 0, 1, 1] and splits.test.images[0, 0, 0, 0] == 100


def test_cache_is_written_then_reused(image_folder, tmp_path, monkeypatch):
    first = load_folder(image_folder, tmp_path)
    assert len(cache_files(tmp_path)) == 2  # train and test
    monkeypatch.setattr(folder_mod, "_decode_one", lambda *a: pytest.fail("decoded again despite the cache"))
    second = load_folder(image_folder, tmp_path)
    assert torch.equal(first.train.images, second.train.images) and torch.equal(first.test.labels, second.test.labels)


def test_cache_is_rebuilt_when_a_file_changes_or_is_added(image_folder, tmp_path):
    load_folder(image_folder, tmp_path)
    changed = write_image(image_folder / "train" / "a" / "000.png", 77)
    os.utime(changed, ns=(1, 1))  # a new mtime, even on coarse-clock filesystems
    assert load_folder(image_folder, tmp_path).train.images[0, 0, 0, 0] == 77
    write_image(image_folder / "train" / "b" / "999.png", 55)
    splits = load_folder(image_folder, tmp_path)
    assert len(splits.train) == 11 and splits.train.images[-1, 0, 0, 0] == 55
    assert len(cache_files(tmp_path)) == 2  # stale caches are removed


def test_cache_dir_from_the_environment(image_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPTRAIN_CACHE_DIR", str(tmp_path / "env-cache"))
    load_source("image_folder", image_folder)
    assert len(list((tmp_path / "env-cache" / "image_folder").glob("*.pt"))) == 2


def test_class_folders_at_the_top_are_the_train_split(tmp_path):
    make_image_folder(tmp_path / "flat", {"x": 2, "y": 3})
    splits = load_folder(tmp_path / "flat", tmp_path)
    assert splits.class_names == ["x", "y"] and len(splits.train) == 5 and splits.test is None


def test_no_class_folders_is_a_clear_error(tmp_path):
    write_image(tmp_path / "loose" / "train" / "0.png", 1)
    with pytest.raises(DatasetNotFoundError, match=r"no class folders in .*loose/train"):
        load_folder(tmp_path / "loose", tmp_path)


def test_test_class_missing_from_train_is_an_error(image_folder, tmp_path):
    write_image(image_folder / "test" / "zebra" / "0.png", 1)
    with pytest.raises(ValueError, match="zebra"):
        load_folder(image_folder, tmp_path)


def test_corrupt_image_names_the_file(image_folder, tmp_path):
    bad = image_folder / "train" / "b" / "002.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(ImageDecodeError, match=str(bad)):
        load_folder(image_folder, tmp_path)


def test_size_mismatch_names_the_file_unless_resizing(image_folder, tmp_path):
    odd = write_image(image_folder / "train" / "b" / "001.png", 9, size=(10, 12))
    with pytest.raises(ImageDecodeError, match=rf"{odd}.*10x12.*8x8.*image_size"):
        load_folder(image_folder, tmp_path)
    splits = load_folder(image_folder, tmp_path, image_size=6)
    assert splits.train.images.shape == (10, 3, 6, 6) and splits.test.images.shape == (4, 3, 6, 6)
    assert splits.train.images[7].float().mean() == pytest.approx(9, abs=1)


def test_grayscale_folder_has_one_channel(tmp_path):
    make_image_folder(tmp_path / "gray" / "train", {"a": 2, "b": 2}, channels=1)
    assert load_folder(tmp_path / "gray", tmp_path).train.images.shape == (4, 1, 8, 8)


def copy_cifar(src: Path, dst: Path, classes, per_class: int) -> None:
    for name in classes:
        (dst / name).mkdir(parents=True)
        for f in sorted((src / name).iterdir())[:per_class]:
            shutil.copy(f, dst / name / f.name)


def test_real_cifar_jpegs_decode_like_pil(cifar_jpeg_dir, tmp_path):
    copy_cifar(cifar_jpeg_dir, tmp_path / "cifar" / "train", ["cat", "dog"], 25)
    splits = load_folder(tmp_path / "cifar", tmp_path)
    assert splits.train.images.shape == (50, 3, 32, 32) and splits.train.labels.bincount().tolist() == [25, 25]
    first = sorted((tmp_path / "cifar" / "train" / "cat").iterdir())[0]
    pil = torch.from_numpy(np.array(Image.open(first).convert("RGB"))).permute(2, 0, 1)
    assert (splits.train.images[0].int() - pil.int()).abs().max() <= 2  # JPEG decoders may round differently


def test_cifar10_falls_back_to_a_jpeg_folder(cifar_jpeg_dir, tmp_path):
    from deeptrain.data.sources import CIFAR10_CLASSES

    copy_cifar(cifar_jpeg_dir, tmp_path / "data" / "cifar10-jpeg" / "train", CIFAR10_CLASSES, 2)
    splits = load_source("cifar10", tmp_path / "data", cache_dir=tmp_path / "cache")
    assert splits.class_names == CIFAR10_CLASSES and splits.train.images.shape == (20, 3, 32, 32)
    assert splits.train.labels.tolist() == [i // 2 for i in range(20)] and splits.test is None
