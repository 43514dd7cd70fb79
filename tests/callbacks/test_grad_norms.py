"""GradientNormLogger: what it logs, when, before/after clipping, and that quiet steps do not sync."""

from functools import partial
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger

from deeptrain.callbacks.activation_stats import ActivationStatistics
from deeptrain.callbacks.grad_norms import GradientNormLogger, layer_labels, weight_layers
from deeptrain.nn.mlp import MLPConfig
from deeptrain.training.module import Classifier
from tiny_data import TinyData


class MemoryLogger(Logger):
    """Keeps every ``log_metrics`` call as (step, metrics)."""

    def __init__(self):
        super().__init__()
        self.rows = []

    name, version = "memory", 0

    def log_metrics(self, metrics, step=None):
        self.rows.append((step, dict(metrics)))

    def log_hyperparams(self, *args, **kwargs):
        pass

    def series(self, tag):
        return {step: m[tag] for step, m in self.rows if tag in m}


def classifier(**kwargs):
    torch.manual_seed(0)
    return Classifier(MLPConfig(depth=3, width=8, activation="elu"), input_shape=(1, 4, 4), num_classes=3, **kwargs)


def fit(tmp_path, model, callbacks, logger, **kwargs):
    trainer = L.Trainer(default_root_dir=tmp_path, max_epochs=1, logger=logger, callbacks=callbacks,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, **kwargs)
    trainer.fit(model, datamodule=TinyData(n=64, batch_size=8, labels="random"))
    return trainer


def test_layer_labels_sort_by_depth_and_name_layers_inside_the_network():
    assert layer_labels(["backbone.2.linear", "backbone.10.linear", "head"]) == [
        "backbone.02.linear", "backbone.10.linear", "head"]
    labels = [label for label, _ in weight_layers(classifier())]
    assert labels == ["backbone.0.linear", "backbone.1.linear", "backbone.2.linear", "head"]


def test_logs_every_n_steps_and_the_update_ratio_of_plain_sgd(tmp_path):
    """With SGD (no momentum), ||dW|| = lr * ||g||: the logged ratio must be lr * grad_norm / ||W_before||."""

    class WeightNorms(L.Callback):  # runs before the logger's hook: the weights the step starts from
        def __init__(self):
            self.norms = {}

        def on_before_optimizer_step(self, trainer, module, optimizer):
            self.norms[trainer.global_step] = {label: float(p.detach().norm()) for label, p in weight_layers(module)}

    logger, norms = MemoryLogger(), WeightNorms()
    fit(tmp_path, classifier(optimizer=partial(torch.optim.SGD, lr=0.1)), [norms, GradientNormLogger(every_n_steps=3)], logger)
    grad = logger.series("grad_norm/backbone.0.linear")
    assert sorted(grad) == [0, 3, 6]  # 8 steps, logged at 0, 3, 6
    for step in grad:
        for label in ("backbone.0.linear", "backbone.2.linear", "head"):
            g = logger.series(f"grad_norm/{label}")[step]
            ratio = logger.series(f"update_ratio/{label}")[step]
            assert ratio == pytest.approx(0.1 * g / norms.norms[step][label], rel=1e-4)
        layers = [logger.series(f"grad_norm/{label}")[step] for label, _ in weight_layers(classifier())]
        assert logger.series("grad_norm/total")[step] >= max(layers)  # the total also holds biases
    assert not any(k.startswith("clip/") for _, m in logger.rows for k in m)  # no clipping configured


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_clipping_is_counted_and_the_norm_after_it_measured(tmp_path, algorithm):
    logger = MemoryLogger()
    fit(tmp_path, classifier(), [GradientNormLogger(every_n_steps=4)], logger,
                  gradient_clip_val=1e-4, gradient_clip_algorithm=algorithm)
    total, after = logger.series("grad_norm/total"), logger.series("clip/grad_norm_after")
    assert logger.series("clip/active_fraction") == {0: 1.0, 4: 1.0}  # a tiny threshold clips every step
    for step in total:
        assert total[step] > 1e-3  # logged before clipping
        if algorithm == "norm":
            assert after[step] == pytest.approx(1e-4, rel=1e-3)
        else:  # every component in [-1e-4, 1e-4]
            assert after[step] < total[step] and after[step] <= 1e-4 * sum(p.numel() for p in classifier().parameters()) ** 0.5


def test_a_threshold_that_is_never_reached_is_never_counted(tmp_path):
    logger = MemoryLogger()
    fit(tmp_path, classifier(), [GradientNormLogger(every_n_steps=4)], logger, gradient_clip_val=1e6)
    assert logger.series("clip/active_fraction") == {0: 0.0, 4: 0.0}
    for step, value in logger.series("clip/grad_norm_after").items():
        assert value == pytest.approx(logger.series("grad_norm/total")[step], rel=1e-5)


def test_steps_that_do_not_log_never_wait_for_the_device(monkeypatch):
    model = classifier()
    model(torch.zeros(4, 1, 4, 4, dtype=torch.uint8)).sum().backward()
    logger = MemoryLogger()
    trainer = SimpleNamespace(global_step=0, gradient_clip_val=0.5, gradient_clip_algorithm="norm",
                              loggers=[logger], is_global_zero=True)
    callback = GradientNormLogger(every_n_steps=50)
    callback.on_fit_start(trainer, model)

    def no_sync(*args, **kwargs):
        raise AssertionError("host sync on a step that does not log")

    with monkeypatch.context() as m:
        for name in ("item", "tolist", "__float__", "__bool__", "cpu", "numpy"):
            m.setattr(torch.Tensor, name, no_sync)
        for step in range(1, 50):
            trainer.global_step = step
            callback.on_before_optimizer_step(trainer, model, None)
            callback.on_train_batch_end(trainer, model)
    trainer.global_step = 50
    callback.on_before_optimizer_step(trainer, model, None)
    trainer.global_step = 51  # the optimizer stepped: the clipping statistics are logged now
    callback.on_train_batch_end(trainer, model)
    assert logger.series("clip/active_fraction") == {50: 1.0}  # all 49 quiet steps + this one were counted
    assert callback._clip_steps == 0


def test_tensorboard_gets_one_chart_per_quantity_and_histograms(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2

    logger = TensorBoardLogger(tmp_path, name="tb", default_hp_metric=False)
    fit(tmp_path, classifier(), [GradientNormLogger(every_n_steps=2), ActivationStatistics(probe_size=16)],
        logger, gradient_clip_val=1.0)
    events = EventAccumulator(logger.log_dir, size_guidance={"histograms": 0, "tensors": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    assert {f"grad_hist/{label}" for label, _ in weight_layers(classifier())} <= set(tags["histograms"])
    assert "weight_hist/head" in tags["histograms"]
    assert tags["images"] == ["activations/profile"] and len(events.Images("activations/profile")) == 2
    assert {"grad_norm/backbone.0.linear", "grad_norm/total", "update_ratio/head", "clip/active_fraction",
            "act_std/backbone.2.act"} <= set(tags["scalars"])
    layout = layout_pb2.Layout()
    layout.ParseFromString(events.Tensors("custom_scalars__config__")[-1].tensor_proto.string_val[0])
    charts = {c.title: list(c.chart) for c in layout.category}
    assert set(charts) == {"gradients", "activations"}  # the last layout written holds both callbacks'
    regexes = [tag for chart in charts["gradients"] for tag in chart.multiline.tag]
    assert regexes == [r"^grad_norm/", r"^update_ratio/", r"^clip/"]


def test_rejects_a_bad_interval():
    with pytest.raises(ValueError, match="every_n_steps"):
        GradientNormLogger(every_n_steps=0)
