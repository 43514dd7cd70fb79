import math

import pytest
import torch

from deeptrain.training.schedules import CosineDecayLR, ExponentialDecayLR, PiecewiseConstantLR, PowerLR

LR0 = 0.01


def lrs(scheduler_cls, steps, **kwargs):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR0)
    scheduler = scheduler_cls(opt, **kwargs)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return out


@pytest.mark.parametrize("s, c", [(10, 1.0), (3, 2.0)])
def test_power_schedule_formula(s, c):
    got = lrs(PowerLR, 30, decay_steps=s, power=c)
    for t in (0, 1, 5, 17, 29):
        assert got[t] == pytest.approx(LR0 / (1 + t / s) ** c, rel=1e-9)


@pytest.mark.parametrize("s, rate", [(20, 0.1), (5, 0.5)])
def test_exponential_schedule_formula(s, rate):
    got = lrs(ExponentialDecayLR, 40, decay_steps=s, decay_rate=rate)
    for t in (0, 1, 7, 20, 39):
        assert got[t] == pytest.approx(LR0 * rate ** (t / s), rel=1e-9)


def test_piecewise_constant_schedule():
    got = lrs(PiecewiseConstantLR, 12, boundaries=[3, 8], values=[0.1, 0.05, 0.001])
    assert got == [0.1] * 4 + [0.05] * 5 + [0.001] * 3


def test_schedules_survive_a_state_dict_round_trip():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR0)
    sched = PowerLR(opt, decay_steps=4)
    for _ in range(5):
        opt.step(), sched.step()
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR0)
    sched2 = PowerLR(opt2, decay_steps=4)
    sched2.load_state_dict(sched.state_dict())
    opt2.step(), sched2.step()
    opt.step(), sched.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    assert opt.param_groups[0]["lr"] == pytest.approx(LR0 / (1 + 6 / 4))


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (PiecewiseConstantLR, {"boundaries": [3, 8], "values": [0.1]}, "len\\(values\\)"),
        (PiecewiseConstantLR, {"boundaries": [8, 3], "values": [0.1, 0.2, 0.3]}, "increasing"),
        (PowerLR, {"decay_steps": 0}, "decay_steps"),
        (ExponentialDecayLR, {"decay_steps": 10, "decay_rate": 0}, "decay_rate"),
        (PowerLR, {"decay_steps": 10, "decay_rate": -1}, "decay_rate"),
        (CosineDecayLR, {"decay_steps": 0}, "decay_steps"),
        (CosineDecayLR, {"decay_steps": 10, "warmup_steps": -1}, "warmup_steps"),
    ],
)
def test_bad_schedule_arguments(cls, kwargs, match):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR0)
    with pytest.raises(ValueError, match=match):
        cls(opt, **kwargs)


def test_math_sanity_power_halves_after_s_steps():
    assert lrs(PowerLR, 11, decay_steps=10)[10] == pytest.approx(LR0 / 2)
    assert math.isclose(lrs(ExponentialDecayLR, 11, decay_steps=10)[10], LR0 * 0.1)


# ---- Keras's formulas (keras.optimizers.schedules), with staircase and warmup ------------------


def test_exponential_staircase_jumps_exactly_at_multiples_of_decay_steps():
    got = lrs(ExponentialDecayLR, 21, decay_steps=10, decay_rate=0.5, staircase=True)
    # Keras: lr0 * rate^floor(t / s); the step at t = s already has the decayed value
    assert got[0] == got[9] == LR0
    assert got[10] == got[19] == pytest.approx(LR0 * 0.5)
    assert got[20] == pytest.approx(LR0 * 0.25)
    assert lrs(ExponentialDecayLR, 10, decay_steps=10, decay_rate=0.5)[9] == pytest.approx(LR0 * 0.5 ** 0.9)


@pytest.mark.parametrize("s, r", [(10, 1.0), (4, 0.5)])
def test_power_with_decay_rate_is_keras_inverse_time_decay(s, r):
    # Keras InverseTimeDecay: lr0 / (1 + r * t / s), or lr0 / (1 + r * floor(t / s)) with staircase
    smooth = lrs(PowerLR, 25, decay_steps=s, decay_rate=r)
    stairs = lrs(PowerLR, 25, decay_steps=s, decay_rate=r, staircase=True)
    for t in range(25):
        assert smooth[t] == pytest.approx(LR0 / (1 + r * t / s), rel=1e-12)
        assert stairs[t] == pytest.approx(LR0 / (1 + r * math.floor(t / s)), rel=1e-12)
    assert stairs[s - 1] == LR0 and stairs[s] == pytest.approx(LR0 / (1 + r))  # the boundary itself
    # decay_rate r over s steps draws the same curve as decay_steps s / r
    assert smooth == pytest.approx(lrs(PowerLR, 25, decay_steps=s / r))


def keras_cosine(t, lr0, decay_steps, alpha=0.0, warmup_target=None, warmup_steps=0):
    """keras.optimizers.schedules.CosineDecay.__call__, transcribed."""
    def decay(step, start):
        return start * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * step / decay_steps)) + alpha)
    if warmup_target is None:
        return decay(min(t, decay_steps), lr0)
    t = min(t, decay_steps + warmup_steps)
    if t < warmup_steps:
        return (warmup_target - lr0) * t / warmup_steps + lr0
    return decay(t - warmup_steps, warmup_target)


def test_cosine_decay_holds_at_alpha_after_decay_steps():
    got = lrs(CosineDecayLR, 40, decay_steps=20, alpha=0.1)
    for t in range(40):
        assert got[t] == pytest.approx(keras_cosine(t, LR0, 20, alpha=0.1), rel=1e-12)
    assert got[10] == pytest.approx(LR0 * (0.1 + 0.9 * 0.5))  # half way: cos = 0
    assert got[20:] == pytest.approx([0.1 * LR0] * 20)  # held, where CosineAnnealingLR climbs back
    annealing = lrs(torch.optim.lr_scheduler.CosineAnnealingLR, 40, T_max=20, eta_min=0.1 * LR0)
    assert annealing[39] > 0.9 * LR0


def test_cosine_decay_with_linear_warmup():
    got = lrs(CosineDecayLR, 30, decay_steps=15, alpha=0.2, warmup_target=0.1, warmup_steps=5)
    for t in range(30):
        assert got[t] == pytest.approx(keras_cosine(t, LR0, 15, 0.2, warmup_target=0.1, warmup_steps=5), rel=1e-12)
    assert got[0] == LR0 and got[1] == pytest.approx(LR0 + (0.1 - LR0) / 5)  # linear from lr0 ...
    assert got[5] == pytest.approx(0.1)  # ... to the target, where the decay starts
    assert got[20:] == pytest.approx([0.2 * 0.1] * 10)  # alpha is a fraction of the target


def test_cosine_warmup_steps_without_target_is_no_warmup():
    assert lrs(CosineDecayLR, 12, decay_steps=10, warmup_steps=5) == pytest.approx(lrs(CosineDecayLR, 12, decay_steps=10))


# ---- the book's Keras recipes, with the arguments docs/keras.md gives -----------------------------


def test_book_callbacks_per_epoch_map_to_the_schedules():
    def piecewise_constant_fn(epoch):
        return 0.01 if epoch < 5 else 0.005 if epoch < 15 else 0.001

    assert lrs(PiecewiseConstantLR, 30, boundaries=[4, 14], values=[0.01, 0.005, 0.001]) == [
        piecewise_constant_fn(e) for e in range(30)]
    assert lrs(ExponentialDecayLR, 30, decay_steps=20, decay_rate=0.1) == pytest.approx(
        [0.01 * 0.1 ** (e / 20) for e in range(30)])  # exponential_decay_fn(epoch), LR0 = 0.01


def test_keras2_optimizer_decay_is_power_lr_per_step():
    # SGD(lr=0.01, decay=1e-4): lr_t = lr0 / (1 + decay * t), t counting optimizer steps
    got = lrs(PowerLR, 3, decay_steps=1 / 1e-4)
    assert got == pytest.approx([LR0 / (1 + 1e-4 * t) for t in range(3)])


def keras_reduce_lr_on_plateau(losses, lr, factor, patience, min_delta=1e-4):
    """keras.callbacks.ReduceLROnPlateau.on_epoch_end (mode min, no cooldown), transcribed."""
    best, wait, out = math.inf, 0, []
    for loss in losses:
        if loss < best - min_delta:
            best, wait = loss, 0
        else:
            wait += 1
            if wait >= patience:
                lr, wait = lr * factor, 0
        out.append(lr)
    return out


def test_keras_reduce_lr_on_plateau_is_torch_with_patience_minus_one_and_absolute_threshold():
    # 0.49993 improves on 0.5 by 7e-5: enough for a relative 1e-4 threshold, not for Keras's absolute min_delta
    losses = [1.0, 0.9, 0.89995, 0.9, 0.95, 0.91, 0.92, 0.5, 0.49993, 0.6, 0.6, 0.6, 0.6, 0.6]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR0)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2, threshold=1e-4, threshold_mode="abs")
    got = []
    for loss in losses:
        plateau.step(loss)
        got.append(opt.param_groups[0]["lr"])
    expected = keras_reduce_lr_on_plateau(losses, LR0, factor=0.5, patience=3)
    assert got == pytest.approx(expected)
    assert expected[-1] < LR0 / 2  # cut at least twice: the comparison covers the counting
