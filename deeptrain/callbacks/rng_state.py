"""The global random-number-generator states of a process, as checkpointable values.

Lightning's checkpoints hold the weights, optimizer, schedulers, loops and callback
states, but not the global RNGs (torch CPU and CUDA, numpy, Python ``random``). Dropout,
RReLU and augmentation draw from them, so without this a run resumed mid-epoch takes the
same data order but different dropout masks, and ends with different weights.
:class:`deeptrain.callbacks.resume.ExactResume` saves these states in every checkpoint.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states of this process: torch CPU (+ every CUDA device), numpy, Python."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    # plain types and tensors only: Lightning loads checkpoints with torch.load(weights_only=True)
    numpy_state = [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set the global RNGs to ``state`` (from :func:`capture_rng_state`)."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:  # a run resumed on another number of GPUs: seed what we can
            for i, s in enumerate(cuda[: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(s, i)
