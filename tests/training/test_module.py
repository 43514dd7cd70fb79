from functools import partial

import lightning as L
import pytest
import torch
from torch.optim.lr_scheduler import OneCycleLR

from deeptrain.nn.mlp import MLPConfig
from deeptrain.training.module import Classifier, needs_total_steps
from deeptrain.training.schedules import PowerLR
from tiny_data import TinyData


def trainer(tmp_path, **kwargs):
    defaults = dict(
        default_root_dir=tmp_path, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    return L.Trainer(**{**defaults, **kwargs})


def model(**kwargs):
    return Classifier(MLPConfig(depth=2, width=8), input_shape=(1, 4, 4), num_classes=3, **kwargs)


def test_forward_takes_raw_uint8_images():
    assert model()(torch.randint(0, 256, (5, 1, 4, 4), dtype=torch.uint8)).shape == (5, 3)


def test_normalization_statistics_come_from_the_data_and_travel_with_the_checkpoint(tmp_path):
    data, m = TinyData(batch_size=16), model()
    t = trainer(tmp_path)
    t.fit(m, datamodule=data)
    mean, std = data.input_stats()
    torch.testing.assert_close(m.normalizer.mean, mean)
    path = tmp_path / "m.ckpt"
    t.save_checkpoint(path)
    loaded = Classifier.load_from_checkpoint(path)  # hparams alone rebuild the model
    torch.testing.assert_close(loaded.normalizer.std, std)
    assert bool(loaded.normalizer.fitted)
    x = data.x[:7]
    torch.testing.assert_close(loaded.eval()(x), m.eval()(x))


@pytest.mark.parametrize("penalty", [{"l2": 0.1}, {"l1": 0.01}])
def test_penalty_is_added_to_the_loss_and_logged(tmp_path, penalty):
    data, m = TinyData(batch_size=16), model(optimizer=partial(torch.optim.SGD, lr=0.0), **penalty)
    m.normalizer.set_stats(*data.input_stats())
    weights = [m.net.hidden_linears()[0].weight, m.net.hidden_linears()[1].weight, m.net.head.weight]
    expected_penalty = (penalty.get("l1", 0.0) * sum(w.abs().sum() for w in weights)
                        + penalty.get("l2", 0.0) * sum(w.square().sum() for w in weights)).item()
    x, y = data.x[:16], data.y[:16]  # the first batch (no shuffling)
    cross_entropy = torch.nn.functional.cross_entropy(m(x), y).item()
    t = trainer(tmp_path, max_steps=1, log_every_n_steps=1)
    t.fit(m, datamodule=data)
    assert t.callback_metrics["train_penalty"].item() == pytest.approx(expected_penalty, rel=1e-5)
    assert t.callback_metrics["train_loss_step"].item() == pytest.approx(cross_entropy + expected_penalty, rel=1e-5)


def test_lr_override_sets_every_param_group(tmp_path):
    m = model(lr=0.123, optimizer=partial(torch.optim.SGD, lr=1.0))
    t = trainer(tmp_path, max_steps=1)
    t.fit(m, datamodule=TinyData(batch_size=16))
    assert t.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.123)


def test_onecycle_steps_per_batch_with_total_steps_from_the_trainer(tmp_path):
    data = TinyData(batch_size=16)  # 6 batches per epoch
    m = model(
        optimizer=partial(torch.optim.SGD, lr=0.01),
        lr_scheduler=partial(OneCycleLR, max_lr=0.1, total_steps=None),
        scheduler_interval="epoch",  # ignored for 1cycle on purpose
    )
    t = trainer(tmp_path, max_epochs=2)
    t.fit(m, datamodule=data)
    scheduler = t.lr_scheduler_configs[0]
    assert scheduler.interval == "step"
    assert scheduler.scheduler.total_steps == 12
    assert scheduler.scheduler.last_epoch == 12  # stepped once per batch


def test_onecycle_without_a_bounded_fit_is_a_clean_error(tmp_path):
    m = model(lr_scheduler=partial(OneCycleLR, max_lr=0.1, total_steps=None))
    with pytest.raises(ValueError, match=r"trainer.max_epochs = -1 and trainer.max_steps = -1 .* set trainer.max_epochs"):
        trainer(tmp_path, max_epochs=-1).fit(m, datamodule=TinyData(batch_size=16))


def test_custom_schedule_steps_per_epoch(tmp_path):
    m = model(optimizer=partial(torch.optim.SGD, lr=0.1), lr_scheduler=partial(PowerLR, decay_steps=1.0))
    t = trainer(tmp_path, max_epochs=3)
    t.fit(m, datamodule=TinyData(batch_size=16))
    assert t.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 / (1 + 3))


def test_needs_total_steps():
    assert needs_total_steps(partial(OneCycleLR, max_lr=1.0, total_steps=None))
    assert not needs_total_steps(partial(OneCycleLR, max_lr=1.0, total_steps=10))
    assert needs_total_steps(OneCycleLR)
    assert not needs_total_steps(partial(PowerLR, decay_steps=3))


def test_max_norm_applies_during_training(tmp_path):
    m = Classifier(MLPConfig(depth=2, width=8, max_norm=0.3), input_shape=(1, 4, 4), num_classes=3,
                   optimizer=partial(torch.optim.SGD, lr=1.0))
    trainer(tmp_path, max_steps=3).fit(m, datamodule=TinyData(batch_size=16))
    for linear in m.net.hidden_linears():
        assert linear.weight.norm(dim=1).max() <= 0.3 + 1e-5


def test_mismatched_data_fails_before_training(tmp_path):
    m = Classifier(MLPConfig(depth=1, width=4), input_shape=(1, 4, 4), num_classes=5)
    with pytest.raises(ValueError, match="num_classes"):
        trainer(tmp_path).fit(m, datamodule=TinyData(batch_size=16))


@pytest.mark.parametrize("kwargs, match", [({"l1": -1.0}, "l1"), ({"label_smoothing": 1.0}, "label_smoothing"),
                                           ({"scheduler_interval": "batch"}, "epoch, step")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        model(**kwargs)


def test_selu_warns_without_standardized_inputs(tmp_path):
    data = TinyData(batch_size=16)
    data.normalize = "scale"
    m = Classifier(MLPConfig(depth=1, width=4, activation="selu", kernel_init="lecun_normal"), input_shape=(1, 4, 4), num_classes=3)
    with pytest.warns(UserWarning, match="standardized"):
        trainer(tmp_path, max_steps=1).fit(m, datamodule=data)


def test_the_epoch_train_loss_is_the_example_weighted_mean_of_the_step_losses(tmp_path):
    losses = []

    class StepLosses(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append((float(outputs["loss"]), len(batch[1])))

    t = trainer(tmp_path, max_epochs=2, callbacks=[StepLosses()])
    t.fit(model(), datamodule=TinyData(batch_size=40))  # batches of 40, 40 and 16
    last_epoch = losses[3:]
    assert [count for _, count in last_epoch] == [40, 40, 16]
    mean = sum(loss * count for loss, count in last_epoch) / 96
    assert t.callback_metrics["train_loss"].item() == pytest.approx(mean, rel=1e-6)
    assert t.callback_metrics["train_loss_epoch"].item() == pytest.approx(mean, rel=1e-6)


def test_the_epoch_train_acc_counts_the_correct_predictions_of_every_step(tmp_path):
    steps = []

    class StepPredictions(L.Callback):  # no dropout or BN: the step's forward pass, redone before its update
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            with torch.no_grad():
                steps.append((int((pl_module(batch[0]).argmax(1) == batch[1]).sum()), len(batch[1])))

    L.seed_everything(0)
    t = trainer(tmp_path, max_epochs=2, callbacks=[StepPredictions()])
    t.fit(model(lr=0.05), datamodule=TinyData(batch_size=40))  # batches of 40, 40 and 16
    last_epoch = steps[3:]
    assert [count for _, count in last_epoch] == [40, 40, 16]
    correct = sum(c for c, _ in last_epoch)
    assert correct != sum(c for c, _ in steps[:3])  # the epochs differ: a sum over both would show
    assert t.callback_metrics["train_acc"].item() == pytest.approx(correct / 96, abs=1e-7)
