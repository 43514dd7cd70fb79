"""Fixtures of the reliability tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from reliability_helpers import make_images


@pytest.fixture(scope="session")
def tiny_images(tmp_path_factory) -> Path:
    """96 random 4x4 grey images in 3 classes (64 train, 32 validation with the tiny config)."""
    return make_images(tmp_path_factory.mktemp("tiny") / "images")
