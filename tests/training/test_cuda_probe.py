"""Adam-family steps do not probe NVML on every step where NVML cannot load."""

import ctypes
import importlib
import os

import pytest
import torch

from deeptrain.training.cuda_probe import keep_cuda_check_cheap, nvml_loadable

pytestmark = pytest.mark.skipif(nvml_loadable(), reason="NVML loads here: the probe is torch's to cache")


def test_an_nadam_step_does_not_try_to_load_nvml(monkeypatch):
    import lightning  # noqa: F401  (sets PYTORCH_NVML_BASED_CUDA_CHECK=1)

    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    loads = []
    real_cdll = ctypes.CDLL

    def counting_cdll(name, *args, **kwargs):
        loads.append(name)
        return real_cdll(name, *args, **kwargs)

    monkeypatch.setattr(ctypes, "CDLL", counting_cdll)
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.NAdam([weight])
    weight.grad = torch.ones(3)
    available = torch.cuda.is_available()
    optimizer.step()
    assert loads.count("libnvidia-ml.so.1") >= 1  # the probe as Lightning leaves it: one dlopen per step
    keep_cuda_check_cheap()
    loads.clear()
    optimizer.step()
    assert "libnvidia-ml.so.1" not in loads
    assert torch.cuda.is_available() == available


def test_importing_deeptrains_lightning_layer_keeps_the_probe_cheap(monkeypatch):
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    importlib.reload(importlib.import_module("deeptrain._lightning"))
    assert "PYTORCH_NVML_BASED_CUDA_CHECK" not in os.environ
