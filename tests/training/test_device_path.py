"""The device-resident training path, checked on the CPU (the same code runs with accelerator=gpu).

On a GPU the split tensors are moved to the device once; every training step must then run
without a host<->device copy and without a host sync (``.item()``, ``bool(tensor)``, ...),
or the GPU waits on Python every step. Here the step runs on the CPU under a counter of every
Python-level host-sync call, and the batch must reach ``transfer_batch_to_device`` already on
the target device.
"""

from __future__ import annotations

import sys
from collections import Counter

import lightning as L
from lightning.pytorch.loggers import CSVLogger
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode

from deeptrain.data.datamodule import ImageDataModule
from deeptrain.nn.mlp import MLPConfig
from deeptrain.training.lean_loop import use_lean_loop
from deeptrain.training.module import Classifier

aten = torch.ops.aten
# ATen ops that make the host wait for the device: reading a value (.item(), bool(t)) or an
# output whose size depends on the data (unique, nonzero, boolean masks).
SYNC_OPS = {aten._local_scalar_dense.default, aten.is_nonzero.default, aten.equal.default,
            aten.nonzero.default, aten._unique2.default, aten.unique_dim.default,
            aten.unique_consecutive.default, aten.masked_select.default}
# torch.optim keeps its step counters on the host unless ``capturable=True`` and reads them
# with .item(): host scalars even on a GPU, so no sync.
HOST_STATE_FILES = ("torch/optim/",)


def _device_of(value):
    return value.device if isinstance(value, torch.Tensor) else None


def _called_from_host_state() -> bool:
    frame = sys._getframe(1)
    while frame is not None:
        if any(part in frame.f_code.co_filename.replace("\\", "/") for part in HOST_STATE_FILES):
            return True
        frame = frame.f_back
    return False


def noise_folder(root, per_class=20, size=8):
    g = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        (root / "train" / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(g.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / "train" / name / f"{i}.png")
    return root


class HostSyncCounter(TorchDispatchMode):
    """Counts, by ATen op, every host sync and every copy between devices that runs under it.

    It sees the ops themselves, below Python: ``torch.unique`` inside a metric counts even
    though no ``.item()`` is called.
    """

    def __init__(self):
        super().__init__()
        self.calls, self.ops = Counter(), set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops.add(func._overloadpacket.__name__)
        if func in SYNC_OPS and not _called_from_host_state():
            self.calls[func.__name__] += 1
        elif func in (aten._to_copy.default, aten.copy_.default):
            src, dst = _device_of(args[1] if func is aten.copy_.default else args[0]), kwargs.get("device")
            dst = _device_of(args[0]) if func is aten.copy_.default else dst
            if dst is not None and src is not None and torch.device(dst).type != src.type:
                self.calls[f"copy {src.type}->{torch.device(dst).type}"] += 1
        return func(*args, **kwargs)


class StepSyncCounter(L.Callback):
    """Counts host syncs in each training step's window: from one batch start to the next, so the
    window holds the step (forward, backward, optimizer, max-norm, metric update), Lightning's
    per-batch bookkeeping and logging, and fetching, moving and augmenting the next batch. The last
    window of an epoch, which also holds validation and the epoch's end, is left out."""

    def __init__(self):
        self.windows, self._mode, self._step = [], None, None  # windows: (global step, syncs, op names)

    def _close(self, record: bool) -> None:
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            if record:
                self.windows.append((self._step, dict(self._mode.calls), self._mode.ops))
            self._mode = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._close(record=True)
        self._step = trainer.global_step
        self._mode = HostSyncCounter()
        self._mode.__enter__()

    def on_train_epoch_end(self, trainer, module):
        self._close(record=False)


@pytest.mark.parametrize("net", [
    MLPConfig(depth=2, width=16, activation="elu"),
    MLPConfig(depth=2, width=16, norm="batch", input_norm=True, dropout=0.2, max_norm=1.0),
], ids=["plain", "bn+dropout+max_norm"])
@pytest.mark.parametrize("lean", [False, True], ids=["lightning_loop", "lean_loop"])
def test_training_steps_need_no_host_sync_and_no_batch_copy(tmp_path, monkeypatch, net, lean):
    """fit on the CPU through the GPU's code path: augmentation after the transfer, normalization in the model."""
    data = ImageDataModule("image_folder", data_dir=str(noise_folder(tmp_path / "img")), val_size=12, batch_size=8,
                           hflip=True, crop_padding=2, cache_dir=str(tmp_path / "cache"))
    model = Classifier(net, input_shape=data.input_shape, num_classes=data.num_classes, l2=1e-4)
    arrivals = []
    transfer = model.transfer_batch_to_device

    def recording_transfer(batch, device, dataloader_idx):
        arrivals.append((batch[0].device, batch[1].device, device))
        return transfer(batch, device, dataloader_idx)

    monkeypatch.setattr(model, "transfer_batch_to_device", recording_transfer)
    counter = StepSyncCounter()
    every = 4
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=CSVLogger(tmp_path), log_every_n_steps=every,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[counter])
    if lean:  # the CLI's loop
        use_lean_loop(trainer)
    trainer.fit(model, datamodule=data)

    assert len(counter.windows) == 2 * (6 - 1)  # 48 training images / 8 per batch, two epochs
    logging = {step: calls for step, calls, _ in counter.windows if (step + 1) % every == 0}
    quiet = {step: calls for step, calls, _ in counter.windows if (step + 1) % every != 0}
    assert all(calls == {} for calls in quiet.values()), quiet
    assert any(calls for calls in logging.values()), "the logger's syncs on logging steps should be seen"
    # each window saw the next batch's gather (index), forward (addmm), backward (mm) and NAdam's multi-tensor update
    assert all({"index", "addmm", "mm", "_foreach_addcdiv_"} <= ops for _, _, ops in counter.windows)
    assert arrivals and all(x == y == device for x, y, device in arrivals)
    assert 0.0 < trainer.callback_metrics["train_loss"] < 10.0  # it trained, and the epoch metric is sane


def test_the_counter_sees_syncs_below_python():
    x = torch.tensor([1, 2, 2, 3])
    with HostSyncCounter() as counter:
        x.sum().item()
        bool(x[0] > 0)
        torch.unique(x)  # data-dependent output size: a sync without any .item()
        x.to("meta")
    assert counter.calls == {"_local_scalar_dense.default": 2, "_unique2.default": 1, "copy cpu->meta": 1}
