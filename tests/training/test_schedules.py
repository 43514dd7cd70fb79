import math

import pytest
import torch

from deeptrain.training.schedules import ExponentialDecayLR, PiecewiseConstantLR, PowerLR

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
    ],
)
def test_bad_schedule_arguments(cls, kwargs, match):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR0)
    with pytest.raises(ValueError, match=match):
        cls(opt, **kwargs)


def test_math_sanity_power_halves_after_s_steps():
    assert lrs(PowerLR, 11, decay_steps=10)[10] == pytest.approx(LR0 / 2)
    assert math.isclose(lrs(ExponentialDecayLR, 11, decay_steps=10)[10], LR0 * 0.1)
