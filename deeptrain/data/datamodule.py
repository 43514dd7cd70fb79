"""The LightningDataModule: in-memory uint8 splits, batch loaders, on-device augmentation.

Division of labour: the DataModule serves raw uint8 batches and computes the
input statistics; the model owns them as buffers and does ``(x.float() - mean) / std``,
so a checkpoint carries its own normalization. Augmentation runs on the batch
after it reaches the device (``on_after_batch_transfer``), training only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from deeptrain.nn.registry import normalize_name

from .augment import BatchAugment
from .loader import InMemoryLoader
from .pretext import PRETEXTS
from .sources import SOURCES, ImageArrays, default_data_dir, load_source, source_info
from .subsets import check_classes, class_mask, remap_labels, sample_subset

NORMALIZE_CHOICES = ("standardize", "scale", "none")
# Floor on a pixel's std, in grey levels (0..255). A pixel that barely varies in the
# training set would otherwise turn a small change at test time into a huge input.
MIN_STD = 1.0


def _require(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"invalid {key}={value!r}: expected {expected}")


def pixel_stats(images: Tensor, chunk_elements: int = 2**22) -> tuple[Tensor, Tensor]:
    """Per-feature mean and population std of uint8 ``images`` (N, C, H, W), shape (C, H, W).

    Sums of uint8 values and squares are exact in float64; chunks of about 4M values
    (32 MB) bound the memory and keep the number of (threaded) ops small.
    """
    total = torch.zeros(images.shape[1:], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for part in images.split(max(1, chunk_elements // total.numel())):
        part = part.to("cpu", torch.float64)
        total += part.sum(0)
        squares += part.square().sum(0)
    mean = total / len(images)
    std = (squares / len(images) - mean.square()).clamp_min(0).sqrt()
    return mean.float(), std.clamp_min(MIN_STD).float()


class ImageDataModule(L.LightningDataModule):
    """An image-classification dataset held in memory as uint8 tensors.

    Splits: the source's training set is split by a permutation seeded with
    ``split_seed`` into ``val_size`` validation examples and the rest for training;
    test (and predict) is the source's test split, or, when it has none, the
    validation split (with a warning).

    Args:
        dataset: source name: ``fashion_mnist``, ``cifar10`` or ``image_folder``.
        data_dir: where the source looks, and where a missing torchvision dataset is downloaded to
            (default: ``$DEEPTRAIN_DATA_DIR``, else ``./data``); for ``image_folder``, a folder with
            ``train/<class>/*`` and optionally ``test/<class>/*``.
        download: download a missing torchvision dataset (torchvision's checksummed download; needs
            internet). Offline, a missing dataset is an error that says where it was looked for.
        val_size: examples held out from the training set for validation.
        split_seed: seed of the train/validation split.
        batch_size: training batch size.
        eval_batch_size: validation/test/predict batch size.
        normalize: statistics handed to the model by ``input_stats()``: ``standardize``
            (per-pixel mean and std of the training split), ``scale`` (divide by 255) or ``none``.
        hflip: random horizontal flips (per image) during training.
        crop_padding: random crops after zero-padding by this many pixels (0: off).
        image_size: resize every image to this size (side, or a square); required for
            image folders whose images differ in size.
        cache_dir: where decoded image folders are cached (default: ``$DEEPTRAIN_CACHE_DIR``
            or ``~/.cache/deeptrain``).
        shuffle_seed: seed of the per-epoch training order (default: the seed given to
            ``seed_everything``, else 0).
        classes: keep only these source class ids, in train, val and test alike, relabelled
            0..k-1 in the order listed: ``[5, 6]`` makes sandal 0 and shirt 1 (list the
            positive class of a binary task last). The val split is drawn before filtering,
            so a class subset keeps exactly the validation images of the full split.
        train_size: keep a seeded random ``train_size`` examples of the training split (after
            ``classes``), not stratified: class counts vary as in a random labelling effort.
        train_size_per_class: keep exactly this many training examples of every class
            (stratified); not together with ``train_size``.
        subset_seed: seed of the ``train_size`` draw (default: ``split_seed``).
        pretext: replace labels with a self-supervised task's (``rotation``: each image rotated
            by k * 90 degrees, label k), in every split; see :mod:`deeptrain.data.pretext`.

    Examples:
        >>> dm = ImageDataModule("fashion_mnist", data_dir="../shared/data", batch_size=64)
        >>> dm.input_shape, dm.num_classes
        ((1, 28, 28), 10)
    """

    def __init__(self, dataset: str = "fashion_mnist", data_dir: str | None = None, download: bool = True,
                 val_size: int = 5000, split_seed: int = 42, batch_size: int = 32, eval_batch_size: int = 1000,
                 normalize: str = "standardize", hflip: bool = False, crop_padding: int = 0,
                 image_size: int | None = None, cache_dir: str | None = None, shuffle_seed: int | None = None,
                 classes: list[int] | None = None, train_size: int | None = None,
                 train_size_per_class: int | None = None, subset_seed: int | None = None,
                 pretext: str | None = None):
        super().__init__()
        _require(dataset in SOURCES, "dataset", dataset, f"one of {SOURCES.names()}")
        _require(normalize in NORMALIZE_CHOICES, "normalize", normalize, f"one of {list(NORMALIZE_CHOICES)}")
        for key, value, low in (("val_size", val_size, 0), ("batch_size", batch_size, 1),
                                ("eval_batch_size", eval_batch_size, 1), ("crop_padding", crop_padding, 0)):
            _require(isinstance(value, int) and value >= low, key, value, f"an int >= {low}")
        _require(image_size is None or (isinstance(image_size, int) and image_size >= 1),
                 "image_size", image_size, "None or an int >= 1")
        _require(isinstance(split_seed, int), "split_seed", split_seed, "an int")
        _require(shuffle_seed is None or isinstance(shuffle_seed, int), "shuffle_seed", shuffle_seed, "None or an int")
        self.save_hyperparameters()
        self.dataset = normalize_name(dataset)
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.download, self.val_size, self.split_seed = download, val_size, split_seed
        self.batch_size, self.eval_batch_size, self.normalize = batch_size, eval_batch_size, normalize
        self.image_size, self.cache_dir, self.shuffle_seed = image_size, cache_dir, shuffle_seed
        self.augment = BatchAugment(hflip=hflip, crop_padding=crop_padding)
        self._info = source_info(self.dataset, self.data_dir, image_size)
        self._init_task(classes, train_size, train_size_per_class, subset_seed, pretext)
        self._source = None  # loaded by prepare_data, consumed by setup
        self._splits: dict[str, ImageArrays] | None = None
        self.split_indices: dict[str, Tensor] = {}
        self._has_test, self._warned_no_test = True, False
        self._stats: tuple[Tensor, Tensor] | None = None
        self._on_device: dict[tuple[int, torch.device], ImageArrays] = {}
        self._train_loader: InMemoryLoader | None = None
        self._loader_state: dict | None = None  # from a checkpoint, for the next train loader

    def _init_task(self, classes, train_size, train_size_per_class, subset_seed, pretext) -> None:
        """Validate and keep the task options: which classes, how many training examples, which pretext."""
        n_source = len(self._info.class_names)
        self.classes = check_classes(classes, n_source) if classes is not None else None
        for key, value in (("train_size", train_size), ("train_size_per_class", train_size_per_class)):
            _require(value is None or (isinstance(value, int) and value >= 1), key, value, "None or an int >= 1")
        _require(train_size is None or train_size_per_class is None, "train_size_per_class", train_size_per_class,
                 f"None when train_size={train_size} is given")
        _require(subset_seed is None or isinstance(subset_seed, int), "subset_seed", subset_seed, "None or an int")
        _require(pretext is None or pretext in PRETEXTS, "pretext", pretext, f"None or one of {PRETEXTS.names()}")
        self.train_size, self.train_size_per_class = train_size, train_size_per_class
        self.subset_seed = subset_seed if subset_seed is not None else self.split_seed
        self.pretext = PRETEXTS.get(pretext)() if pretext is not None else None
        if self.pretext is not None:
            self.pretext.check_shape(self.input_shape)
        elif self.num_classes < 2:  # else torchmetrics fails later, naming no folder
            raise ValueError(f"{self.dataset} in {self.data_dir} has {self.num_classes} class folder "
                             f"{self.class_names}; a classifier needs at least 2: put each class's images in its "
                             "own folder, <data_dir>/train/<class>/<image> (a pretext task needs only one)")

    # -- what the model needs before setup ---------------------------------------------
    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self._info.input_shape)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def class_names(self) -> list[str]:
        """Names of the labels the model predicts: the pretext's, else the kept classes in label order."""
        if self.pretext is not None:
            return list(self.pretext.class_names)
        names = self._info.class_names
        return [names[c] for c in self.classes] if self.classes is not None else list(names)

    # -- data -------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Download if asked, and load the source once, on one process per node.

        For an image folder this decodes and caches it before the other ranks' ``setup``
        reads the cache. The loaded arrays are kept for this process's ``setup``; other
        processes load their own there.
        """
        if self.download:
            SOURCES.get(self.dataset).download(self.data_dir)
        if self._splits is None and self._source is None:
            self._source = self._load()

    def _load(self):
        return load_source(self.dataset, self.data_dir, self.download, self.image_size, self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        """Load the source (once) and split its training set into train/val."""
        if self._splits is not None:
            return
        src = self._source if self._source is not None else self._load()
        self._source = None
        n = len(src.train)
        _require(self.val_size < n, "val_size", self.val_size, f"fewer than the {n} training examples")
        shape = tuple(src.train.images.shape[1:])
        if shape != self.input_shape:
            raise RuntimeError(f"{self.dataset} images are {shape}, but input_shape was {self.input_shape}")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        val_idx, train_idx = perm[: self.val_size].sort().values, perm[self.val_size :].sort().values
        train_idx, val_idx = self._keep_classes(src.train, train_idx), self._keep_classes(src.train, val_idx)
        train_idx = train_idx[sample_subset(src.train.labels[train_idx], self.train_size,
                                            self.train_size_per_class, self.subset_seed)]
        self.split_indices = {"train": train_idx, "val": val_idx}  # into the source's training set
        train, val = self._select(src.train, train_idx), self._select(src.train, val_idx)
        self._has_test = src.test is not None
        test = val
        if self._has_test:
            test = src.test if self.classes is None else self._select(src.test, self._keep_classes(src.test))
        self._splits = {"train": train, "val": val, "test": test}
        rank_zero_info(f"{self.dataset}: {len(train)} train, {len(val)} val, "
                       f"{len(self._splits['test'])} test{'' if self._has_test else ' (= val)'} examples")

    def _keep_classes(self, arrays: ImageArrays, idx: Tensor | None = None) -> Tensor:
        """The indices ``idx`` (default: all) whose label is one of ``classes``."""
        idx = torch.arange(len(arrays)) if idx is None else idx
        return idx if self.classes is None else idx[class_mask(arrays.labels[idx], self.classes)]

    def _select(self, arrays: ImageArrays, idx: Tensor) -> ImageArrays:
        labels = arrays.labels[idx]
        files = [arrays.files[i] for i in idx.tolist()] if arrays.files is not None else None
        return ImageArrays(arrays.images[idx], labels if self.classes is None else remap_labels(labels, self.classes),
                           files)

    @property
    def has_test_split(self) -> bool:
        """False when the source has no test split and ``test`` is the validation split (after ``setup``)."""
        return self._has_test

    def split(self, name: str) -> ImageArrays:
        """The ``train``, ``val``, ``test`` or ``predict`` (= test) split, on the CPU."""
        self.setup()
        name = "test" if name == "predict" else name
        if name == "test" and not self._has_test:
            self._warn_no_test()
        return self._splits[name]

    def _warn_no_test(self) -> None:
        if not self._warned_no_test:
            self._warned_no_test = True
            rank_zero_warn(f"dataset {self.dataset!r} in {self.data_dir} has no test split: the validation split "
                           f"({self.val_size} examples) is used as the test set", category=UserWarning)

    def input_stats(self) -> tuple[Tensor, Tensor]:
        """(mean, std), float32, shape ``input_shape``, in pixel units: the model computes
        ``(x.float() - mean) / std``. ``standardize``: per-pixel statistics of the training
        split only (std floored at ``MIN_STD`` grey levels); ``scale``: 0 and 255; ``none``: 0 and 1."""
        if self._stats is None:
            if self.normalize == "standardize":
                self._stats = pixel_stats(self.split("train").images)
            else:
                std = 255.0 if self.normalize == "scale" else 1.0
                self._stats = (torch.zeros(self.input_shape), torch.full(self.input_shape, std))
        return self._stats[0].clone(), self._stats[1].clone()

    # -- loaders ----------------------------------------------------------------------
    def _device_split(self, name: str) -> ImageArrays:
        """The split on the trainer's root device when that is a GPU (moved once), else on the CPU."""
        arrays = self.split(name)
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if device.type != "cuda":
            return arrays
        key = (id(arrays), device)  # test may be the val split: one copy
        if key not in self._on_device:
            self._on_device[key] = ImageArrays(arrays.images.to(device), arrays.labels.to(device), arrays.files)
        return self._on_device[key]

    def _shard(self) -> dict[str, int]:
        if self.trainer is None:
            return {"rank": 0, "world_size": 1}
        return {"rank": self.trainer.global_rank, "world_size": self.trainer.world_size}

    def _eval_loader(self, name: str) -> InMemoryLoader:
        arrays = self._device_split(name)
        return InMemoryLoader(arrays.images, arrays.labels, self.eval_batch_size, **self._shard())

    def train_dataloader(self) -> InMemoryLoader:
        arrays = self._device_split("train")
        seed = self.shuffle_seed if self.shuffle_seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        loader = InMemoryLoader(arrays.images, arrays.labels, self.batch_size, shuffle=True, seed=seed,
                                **self._shard())
        if self.trainer is not None:  # a reloaded loader continues at the trainer's epoch
            loader.set_epoch(self.trainer.current_epoch)
        if self._loader_state is not None:
            loader.load_state_dict(self._loader_state)
            self._loader_state = None
        self._train_loader = loader
        return loader

    def val_dataloader(self) -> InMemoryLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> InMemoryLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> InMemoryLoader:
        return self._eval_loader("predict")

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        training = self.trainer is not None and self.trainer.training
        if self.augment.enabled and training:
            x, y = batch
            batch = (self.augment(x), y)
        if self.pretext is not None:  # every split: validation measures the pretext task too
            batch = self.pretext(*batch, train=training)
        return batch

    # -- checkpoints --------------------------------------------------------------------
    # Lightning also saves the train loader's state itself, but restores it only if the
    # loader did not exist yet (it does when `trainer.estimated_stepping_batches` was read
    # in `configure_optimizers`: Lightning issue #20550). The DataModule is restored before
    # that, so keeping the state here too makes mid-epoch resume work in both cases.
    def state_dict(self) -> dict[str, Any]:
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loader_state = state_dict.get("train_loader")
        if self._train_loader is not None and self._loader_state is not None:
            self._train_loader.load_state_dict(self._loader_state)
            self._loader_state = None
