"""Data: sources that load uint8 image tensors, an in-memory batch loader, batch augmentation, the DataModule."""

from .augment import BatchAugment
from .datamodule import ImageDataModule
from .errors import DatasetNotFoundError, ImageDecodeError
from .loader import InMemoryLoader
from .sources import SOURCES, DatasetSplits, ImageArrays, default_data_dir, load_source, source_info

__all__ = [
    "BatchAugment",
    "DatasetNotFoundError",
    "DatasetSplits",
    "ImageArrays",
    "ImageDataModule",
    "ImageDecodeError",
    "InMemoryLoader",
    "SOURCES",
    "default_data_dir",
    "load_source",
    "source_info",
]
