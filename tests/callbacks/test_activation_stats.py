"""ActivationStatistics: the numbers are right, and measuring leaves training exactly as it was."""

import lightning as L
import pytest
import torch
from torch import nn

from deeptrain.callbacks.activation_stats import (
    ActivationStatistics,
    activation_layers,
    preserved_state,
    probe_statistics,
    stats_to_metrics,
    summarize,
)
from deeptrain.nn.mlp import MLP, MLPConfig
from deeptrain.training.module import Classifier
from deeptrain.data.loader import InMemoryLoader
from tiny_data import TinyData


class ProbeData(TinyData):
    """48 images with random labels; validation serves them reversed, in batches of 10."""

    def __init__(self):
        super().__init__(n=48, batch_size=8, seed=1, labels="random")

    def val_dataloader(self):
        return InMemoryLoader(self.x.flip(0), self.y.flip(0), 10)


def test_summarize_counts_saturated_dead_and_large_preactivations():
    z = torch.tensor([[5.0, -5.0, 0.0, 1.0], [4.0, 0.5, -0.1, -3.5]])
    a = torch.sigmoid(z)  # within 0.02 of 0 or 1: |z| > 3.89
    s = summarize(z, a, "sigmoid", preact_threshold=3.0)
    assert s.saturated == pytest.approx(3 / 8)  # 5, -5, 4; sigmoid(-3.5) = 0.029 is not
    assert s.preact_beyond == pytest.approx(4 / 8)
    assert s.mean == pytest.approx(float(a.mean())) and s.std == pytest.approx(float(a.std()))
    assert s.dead is None
    r = summarize(z, torch.relu(z), "relu")
    assert r.dead == pytest.approx(1 / 4)  # only unit 2 is 0 on both examples
    assert r.saturated is None
    assert summarize(None, a, "swiglu").preact_std is None


def test_statistics_match_a_forward_pass_done_by_hand():
    net = MLP((1, 4, 4), 3, MLPConfig(depth=3, width=16, activation="tanh", kernel_init="random_normal",
                                      kernel_init_args={"stddev": 2.0}))
    x = torch.randn(32, 1, 4, 4)
    stats = probe_statistics(net, x)
    assert list(stats) == ["backbone.0.act", "backbone.1.act", "backbone.2.act"]
    h = x.flatten(1)
    torch.set_grad_enabled(False)
    for block, s in zip(net.backbone, stats.values()):
        z = block.linear(h)
        h = torch.tanh(z)
        assert s.std == pytest.approx(float(h.std()), rel=1e-5)
        assert s.preact_std == pytest.approx(float(z.std()), rel=1e-5)
        assert s.saturated == pytest.approx(float(((h + 1 < 0.02) | (1 - h < 0.02)).float().mean()))
    torch.set_grad_enabled(True)
    assert stats["backbone.2.act"].saturated > 0.5  # N(0, 2) weights drive tanh into its bounds


def test_a_relu_layer_pushed_below_zero_is_dead():
    net = MLP((1, 4, 4), 3, MLPConfig(depth=2, width=8, activation="relu"))
    with torch.no_grad():
        net.backbone[0].linear.bias.fill_(-100.0)
    stats = probe_statistics(net, torch.randn(16, 1, 4, 4))
    assert stats["backbone.0.act"].dead == 1.0 and stats["backbone.0.act"].std == 0.0


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_measuring_changes_no_mode_no_buffer_and_no_rng_state(mode):
    net = MLP((1, 4, 4), 3, MLPConfig(depth=3, width=8, activation="elu", norm="batch", dropout=0.2))
    net.train()
    net.backbone[1].eval()  # a mixed state must come back as it was, module by module
    flags = [m.training for m in net.modules()]
    buffers = [b.clone() for b in net.buffers()]
    x = torch.randn(16, 1, 4, 4) * 3 + 1
    rng = torch.get_rng_state()
    probe_statistics(net, x, mode=mode)
    assert [m.training for m in net.modules()] == flags
    assert all(torch.equal(a, b) for a, b in zip(net.buffers(), buffers))  # BN running stats untouched
    assert torch.equal(torch.get_rng_state(), rng)


def test_preserved_state_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="valid choices: train, eval"):
        with preserved_state(nn.Linear(2, 2), "predict"):
            pass


def fit(tmp_path, callbacks):
    torch.manual_seed(0)
    model = Classifier(MLPConfig(depth=3, width=16, activation="relu", norm="batch", dropout=0.3),
                       input_shape=(1, 4, 4), num_classes=3)
    trainer = L.Trainer(default_root_dir=tmp_path, max_epochs=2, logger=False, callbacks=callbacks,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    trainer.fit(model, datamodule=ProbeData())
    return model


def test_training_draws_the_same_random_numbers_with_and_without_the_callback(tmp_path):
    """Dropout masks come from the global RNG: any draw by the callback would change the weights."""
    callback = ActivationStatistics(probe_size=16, log_figure=False)
    with_stats, without = fit(tmp_path, [callback]), fit(tmp_path, [])
    for (name, a), b in zip(with_stats.state_dict().items(), without.state_dict().values()):
        assert torch.equal(a, b), name
    assert [h["epoch"] for h in callback.history] == [0, 0, 1]  # train start, then each epoch end
    assert torch.equal(callback.probe, ProbeData().x.flip(0)[:16])  # the first validation examples
    assert set(callback.history[0]["layers"]) == {"backbone.0.act", "backbone.1.act", "backbone.2.act"}


def test_metric_names_have_one_prefix_per_statistic():
    stats = probe_statistics(MLP((1, 4, 4), 3, MLPConfig(depth=2, width=8, activation="relu")), torch.randn(8, 1, 4, 4))
    metrics = stats_to_metrics(stats)
    assert {k.split("/")[0] for k in metrics} == {"act_mean", "act_std", "preact_std", "preact_beyond", "act_dead"}


def test_gated_layers_are_measured_too():
    net = MLP((1, 4, 4), 3, MLPConfig(depth=2, width=8, activation="swiglu"))
    assert [label for label, _ in activation_layers(net)] == ["backbone.0.gated", "backbone.1.gated"]
    assert probe_statistics(net, torch.randn(8, 1, 4, 4))["backbone.1.gated"].preact_std is None
