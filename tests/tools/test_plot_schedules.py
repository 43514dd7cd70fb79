"""The schedule curves come from the real schedulers and have the chapter's shapes."""

import pytest

from deeptrain.cli import main as cli_main
from deeptrain.tools.plot_schedules import schedule_curves, trace_plateau

STEPS, LR0 = 200, 0.01


@pytest.fixture(scope="module")
def curves():
    return {label.split(":")[0].split(" (")[0]: lrs for label, lrs in schedule_curves(STEPS, LR0).items()}


def test_every_schedule_of_the_chapter_is_drawn_over_the_whole_run(curves):
    assert set(curves) == {"power", "exponential", "exponential, staircase", "cosine decay", "piecewise constant",
                           "performance", "1cycle"}
    assert all(len(lrs) == STEPS for lrs in curves.values())


def test_power_and_exponential_follow_their_formulas(curves):
    s = STEPS // 10
    assert curves["power"][s] == pytest.approx(LR0 / 2)  # lr0 / (1 + s/s)
    assert curves["power"][3 * s] == pytest.approx(LR0 / 4)
    assert curves["exponential"][STEPS // 2] == pytest.approx(LR0 * 0.1)


def test_staircase_steps_at_its_boundaries_and_cosine_warms_up_decays_and_holds(curves):
    q, s = STEPS // 4, STEPS // 10
    staircase = curves["exponential, staircase"]
    assert staircase[q - 1] == pytest.approx(LR0) and staircase[q] == pytest.approx(LR0 * 0.1)
    cosine = curves["cosine decay"]
    assert cosine[0] == pytest.approx(LR0 / 10) and cosine[s] == pytest.approx(LR0)  # linear warmup to lr0
    assert cosine[STEPS - 2 * s] == pytest.approx(0.01 * LR0) and cosine[-1] == pytest.approx(0.01 * LR0)  # holds


def test_piecewise_constant_has_three_levels(curves):
    assert sorted(set(curves["piecewise constant"]), reverse=True) == pytest.approx([LR0, LR0 / 2, LR0 / 10])


def test_performance_scheduling_halves_the_lr_when_the_loss_stalls():
    lrs = trace_plateau(1000, LR0, eval_every=20, patience=5)
    levels = sorted(set(lrs), reverse=True)
    assert len(levels) >= 3 and all(b == pytest.approx(a / 2) for a, b in zip(levels, levels[1:]))
    assert lrs == sorted(lrs, reverse=True)  # only ever lowered


def test_both_1cycles_rise_to_the_maximum_then_fall_far_below_the_start():
    full = schedule_curves(STEPS, LR0)
    for label in [k for k in full if k.startswith("1cycle")]:
        lrs = full[label]
        peak = lrs.index(max(lrs))
        assert max(lrs) == pytest.approx(LR0, rel=1e-3) and 0.2 * STEPS < peak < 0.5 * STEPS
        assert lrs[-1] < lrs[0] / 1000


def test_the_command_writes_the_png(tmp_path):
    out = tmp_path / "s.png"
    cli_main(["schedules", "--steps", "100", "--out", str(out)])
    assert out.read_bytes()[:4] == b"\x89PNG"
