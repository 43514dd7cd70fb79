"""Dataset sources: each one turns a data directory into uint8 image tensors.

A source is looked up by name in ``SOURCES`` (``fashion_mnist``, ``cifar10``,
``image_folder``) and returns a :class:`DatasetSplits` of ``(N, C, H, W)`` uint8
images and ``(N,)`` int64 labels. Nothing here scales or augments: the model
normalizes and the DataModule augments on the device.

    splits = load_source("fashion_mnist", default_data_dir())
    splits.train.images.shape  # (60000, 1, 28, 28)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch
from torch import Tensor

from deeptrain.nn.registry import Registry

from . import image_folder as folder
from .arrays import ImageArrays
from .errors import DatasetNotFoundError
from .integrity import CorruptDataError, check_fashion_mnist, corrupt_cifar10_files

ImageSize = Union[int, tuple[int, int], None]

DATA_DIR_ENV = "DEEPTRAIN_DATA_DIR"


@dataclass
class DatasetSplits:
    train: ImageArrays
    test: ImageArrays | None
    class_names: list[str]


@dataclass(frozen=True)
class SourceInfo:
    """What the model must know before any image is loaded."""

    input_shape: tuple[int, int, int]  # (C, H, W)
    class_names: list[str]


def default_data_dir() -> Path:
    """``$DEEPTRAIN_DATA_DIR`` if set, else ``./data``."""
    return Path(os.environ.get(DATA_DIR_ENV) or "data")


def not_found_message(what: str, looked_in: Path, downloadable: bool) -> str:
    fixes = [f"point --data.data_dir (or the env var {DATA_DIR_ENV}) at the folder that holds it"]
    if downloadable:
        fixes.append("pass --data.download true to download it (needs internet access)")
    return f"{what} not found in {looked_in.resolve()}; " + ", or ".join(fixes)


def _resize_all(images: Tensor, image_size: ImageSize, chunk: int = 4096) -> Tensor:
    """Resize (N, C, H, W) uint8 to ``image_size`` (antialiased), chunked to bound memory."""
    size = folder.as_hw(image_size)
    if size is None or tuple(images.shape[-2:]) == size:
        return images
    from torchvision.transforms.v2 import functional as TF

    return torch.cat([TF.resize(part, list(size), antialias=True) for part in images.split(chunk)])


class TorchvisionSource:
    """A ``torchvision.datasets`` class that exposes ``.data`` and ``.targets``."""

    def __init__(self, name: str, folder_name: str, shape: tuple[int, int, int], class_names: list[str]):
        self.name, self.folder_name = name, folder_name
        self.shape, self.class_names = shape, class_names

    def dataset_class(self):
        raise NotImplementedError

    def info(self, data_dir: Path, image_size: ImageSize = None) -> SourceInfo:
        size = folder.as_hw(image_size) or self.shape[1:]
        return SourceInfo((self.shape[0], *size), list(self.class_names))

    def download(self, data_dir: Path) -> None:
        self._open(data_dir, train=True, download=True)
        self._open(data_dir, train=False, download=True)

    def _open(self, data_dir: Path, train: bool, download: bool):
        looked_in = Path(data_dir) / self.folder_name
        try:
            return self.dataset_class()(root=str(data_dir), train=train, download=download)
        except (RuntimeError, OSError) as err:  # torchvision: "Dataset not found"; URLError: no network
            if isinstance(err, DatasetNotFoundError):
                raise
            msg = not_found_message(self.name, looked_in, downloadable=not download)
            if download:
                msg = f"downloading {self.name} failed ({' '.join(str(err).split())}); {msg}"
            raise DatasetNotFoundError(msg) from err

    def to_arrays(self, ds) -> ImageArrays:
        images = torch.as_tensor(ds.data)
        images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)  # NHW / NHWC -> NCHW
        return ImageArrays(images.contiguous(), torch.as_tensor(ds.targets, dtype=torch.int64))

    def load(self, data_dir: Path, download: bool = False, image_size: ImageSize = None,
             cache_dir: Path | None = None) -> DatasetSplits:
        splits = [self.to_arrays(self._open(data_dir, train, download)) for train in (True, False)]
        for s in splits:
            s.images = _resize_all(s.images, image_size)
        return DatasetSplits(splits[0], splits[1], list(self.class_names))


class FashionMNISTSource(TorchvisionSource):
    def __init__(self):
        from torchvision.datasets import FashionMNIST

        super().__init__("fashion_mnist", "FashionMNIST/raw", (1, 28, 28), list(FashionMNIST.classes))

    def dataset_class(self):
        from torchvision.datasets import FashionMNIST

        return FashionMNIST

    def _open(self, data_dir: Path, train: bool, download: bool):
        # torchvision checks only that the IDX files exist; a damaged one must be named, not parsed
        check_fashion_mnist(Path(data_dir) / self.folder_name)
        return super()._open(data_dir, train, download)


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class CIFAR10Source(TorchvisionSource):
    """CIFAR-10 from torchvision's pickled batches, or else from a JPEG folder.

    Offline copies often keep CIFAR-10 as ``cifar10-jpeg/train/<class>/*.jpg``
    (no test split). When ``cifar-10-batches-py`` is absent and download is off,
    that folder, found inside ``data_dir`` or as ``data_dir`` itself, is read
    through the cached image-folder path with the class order checked.
    """

    def __init__(self):
        super().__init__("cifar10", "cifar-10-batches-py", (3, 32, 32), CIFAR10_CLASSES)

    def dataset_class(self):
        from torchvision.datasets import CIFAR10

        return CIFAR10

    def _open(self, data_dir: Path, train: bool, download: bool):
        try:
            return super()._open(data_dir, train, download)
        except DatasetNotFoundError as err:  # torchvision: "not found or corrupted" (it checks every MD5)
            bad = corrupt_cifar10_files(Path(data_dir))
            if bad:
                raise CorruptDataError(f"CIFAR-10 files fail their MD5 check (truncated or modified): "
                                       f"{', '.join(map(str, bad))}; delete them and download again "
                                       "(--data.download true)") from err
            raise

    def jpeg_folder(self, data_dir: Path) -> Path | None:
        if (Path(data_dir) / self.folder_name).exists():
            return None
        for candidate in (Path(data_dir) / "cifar10-jpeg", Path(data_dir)):
            if sorted(folder.find_classes(folder.train_root(candidate), strict=False)) == CIFAR10_CLASSES:
                return candidate
        return None

    def load(self, data_dir: Path, download: bool = False, image_size: ImageSize = None,
             cache_dir: Path | None = None) -> DatasetSplits:
        jpegs = None if download else self.jpeg_folder(data_dir)
        if jpegs is None:
            return super().load(data_dir, download, image_size, cache_dir)
        return IMAGE_FOLDER.load(jpegs, image_size=image_size, cache_dir=cache_dir)


class ImageFolderSource:
    """``root/{train,test}/<class>/<image>`` (torchvision ImageFolder layout), decoded once and cached.

    If ``root/train`` is missing but ``root`` itself holds class folders, ``root``
    is the training split. ``test/`` is optional (``DatasetSplits.test`` is then None).
    """

    name = "image_folder"

    def info(self, data_dir: Path, image_size: ImageSize = None) -> SourceInfo:
        root = self._train_root(data_dir)
        classes = folder.find_classes(root)
        folder.check_class_folders(root, classes)
        return SourceInfo(folder.peek_shape(root, classes, image_size), classes)

    def download(self, data_dir: Path) -> None:
        """Nothing to download: an image folder is provided by the user."""

    def _train_root(self, data_dir: Path) -> Path:
        if not Path(data_dir).is_dir():
            raise DatasetNotFoundError(not_found_message("image folder", Path(data_dir), downloadable=False))
        return folder.train_root(Path(data_dir))

    def load(self, data_dir: Path, download: bool = False, image_size: ImageSize = None,
             cache_dir: Path | None = None) -> DatasetSplits:
        train_dir = self._train_root(data_dir)
        classes = folder.find_classes(train_dir)
        folder.check_class_folders(train_dir, classes)
        train = folder.load_split(train_dir, classes, image_size, cache_dir)
        test = None
        test_dir = Path(data_dir) / "test"
        if train_dir != Path(data_dir) and test_dir.is_dir():
            test = folder.load_split(test_dir, classes, image_size, cache_dir, shape=tuple(train.images.shape[1:]))
        return DatasetSplits(train, test, classes)


IMAGE_FOLDER = ImageFolderSource()

SOURCES: Registry = Registry("dataset")
SOURCES.add("fashion_mnist", FashionMNISTSource())
SOURCES.add("cifar10", CIFAR10Source())
SOURCES.add("image_folder", IMAGE_FOLDER)


def source_info(name: str, data_dir: str | Path | None = None, image_size: ImageSize = None) -> SourceInfo:
    """Input shape and class names of a dataset, without loading its images."""
    return SOURCES.get(name).info(Path(data_dir or default_data_dir()), image_size)


def load_source(name: str, data_dir: str | Path | None = None, download: bool = False,
                image_size: ImageSize = None, cache_dir: str | Path | None = None) -> DatasetSplits:
    """Load dataset ``name`` from ``data_dir`` (default: :func:`default_data_dir`).

    Raises:
        ValueError: unknown name (the message lists the datasets).
        DatasetNotFoundError: the data is missing and could not be downloaded.
    """
    source = SOURCES.get(name)
    cache = Path(cache_dir) if cache_dir is not None else None
    return source.load(Path(data_dir or default_data_dir()), download=download, image_size=image_size, cache_dir=cache)
