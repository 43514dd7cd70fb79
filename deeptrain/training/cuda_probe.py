"""Keep torch's CUDA-availability probe cheap on machines without an NVIDIA driver.

Importing Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` (a fork-safe probe through NVML).
Until CUDA is initialized torch does not cache that probe, and every ``optimizer.step()`` of
Adam-family optimizers runs it (``_accelerator_graph_capture_health_check``): with a CUDA build of
torch and no ``libnvidia-ml.so.1``, each step then fails a ``dlopen`` (~0.3 ms, 5% of a batch-32
step of the CIFAR-10 MLP on one CPU thread) before falling back to ``cudaGetDeviceCount``. Without
NVML that fallback is what the probe does anyway, so dropping the variable changes no answer.
"""

from __future__ import annotations

import ctypes
import os
import sys

_VARIABLE = "PYTORCH_NVML_BASED_CUDA_CHECK"


def nvml_loadable() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


def keep_cuda_check_cheap() -> None:
    """Drop ``PYTORCH_NVML_BASED_CUDA_CHECK`` where NVML cannot load (Linux; the probe's library name)."""
    if sys.platform.startswith("linux") and os.environ.get(_VARIABLE) == "1" and not nvml_loadable():
        del os.environ[_VARIABLE]
