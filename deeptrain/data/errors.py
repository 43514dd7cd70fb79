"""Errors of the data package; each message names the path and the fix."""

from __future__ import annotations


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not where we looked, and downloading is off or failed."""


class ImageDecodeError(ValueError):
    """An image file could not be decoded, or its size does not fit the others."""


class ImageFolderError(ValueError):
    """An image folder's layout does not make a classification dataset (e.g. an empty class folder)."""
