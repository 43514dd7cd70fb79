"""Helpers of the reliability tests: a tiny generated image folder, a fast config, the schedules."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from torch.optim import lr_scheduler

from deeptrain.training import schedules

# Every schedule of chapter 11, as CLI arguments (resume must be exact with each).
SCHEDULES = {
    "1cycle": ["--model.lr_scheduler.class_path", "torch.optim.lr_scheduler.OneCycleLR",
               "--model.lr_scheduler.init_args.max_lr", "0.1"],
    "power": ["--model.lr_scheduler.class_path", "deeptrain.training.schedules.PowerLR",
              "--model.lr_scheduler.init_args.decay_steps", "5", "--model.scheduler_interval", "step"],
    "exponential": ["--model.lr_scheduler.class_path", "deeptrain.training.schedules.ExponentialDecayLR",
                    "--model.lr_scheduler.init_args.decay_steps", "2"],
    "piecewise": ["--model.lr_scheduler.class_path", "deeptrain.training.schedules.PiecewiseConstantLR",
                  "--model.lr_scheduler.init_args.boundaries", "[5, 12]",
                  "--model.lr_scheduler.init_args.values", "[0.05, 0.02, 0.01]", "--model.scheduler_interval", "step"],
    # threshold 1 (relative): no epoch counts as an improvement, so the lr halves after every epoch
    "plateau": ["--model.lr_scheduler.class_path", "torch.optim.lr_scheduler.ReduceLROnPlateau",
                "--model.lr_scheduler.init_args.patience", "0", "--model.lr_scheduler.init_args.threshold", "1.0",
                "--model.lr_scheduler.init_args.factor", "0.5"],
}


# The same schedules as Python factories, with their scheduler_interval.
SCHEDULE_FACTORIES = {
    "1cycle": (partial(lr_scheduler.OneCycleLR, max_lr=0.1), "epoch"),  # the Classifier steps 1cycle per batch
    "power": (partial(schedules.PowerLR, decay_steps=5), "step"),
    "exponential": (partial(schedules.ExponentialDecayLR, decay_steps=2), "epoch"),
    "piecewise": (partial(schedules.PiecewiseConstantLR, boundaries=[5, 12], values=[0.05, 0.02, 0.01]), "step"),
    "plateau": (partial(lr_scheduler.ReduceLROnPlateau, patience=0, threshold=1.0, factor=0.5), "epoch"),
}
SGD = partial(torch.optim.SGD, lr=0.05, momentum=0.9)


def make_images(root: Path, n: int = 96, classes: int = 3, seed: int = 0) -> Path:
    """``root/train/c<k>/<i>.png``: random 4x4 grey images whose class is a function of one pixel."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        image = rng.integers(0, 256, (4, 4), dtype=np.uint8)
        path = root / "train" / f"c{int(image[0, 0]) * classes // 256}" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
    return root


def tiny_config(tmp: Path, images: Path, max_epochs: int = 3, every_n_train_steps: int = 3) -> Path:
    """A config that trains in about a second: 64 training images, batch 8, a 16-16 RReLU net with dropout."""
    config = {
        "seed_everything": 7,
        "trainer": {
            "max_epochs": max_epochs, "deterministic": True, "enable_progress_bar": False,
            "enable_model_summary": False, "num_sanity_val_steps": 0, "default_root_dir": str(tmp),
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": str(tmp / "logs"), "name": "tiny", "default_hp_metric": False}},
        },
        "model": {
            "net": {"widths": [16, 16], "activation": "rrelu", "dropout": 0.2},
            "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.05, "momentum": 0.9}},
        },
        "data": {"dataset": "image_folder", "data_dir": str(images), "val_size": 32, "batch_size": 8,
                 "eval_batch_size": 16, "cache_dir": str(tmp / "cache")},
        "last_checkpoint": {"every_n_train_steps": every_n_train_steps},
    }
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
