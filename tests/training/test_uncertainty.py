from math import log

import pytest
import torch

from deeptrain.training.uncertainty import (
    brier_score,
    expected_calibration_error,
    nll,
    predictive_entropy,
    uncertainty_metrics,
)

# Four hand-made predictions over 3 classes; confidences 0.9, 0.65, 0.7, 0.5, none on a bin edge.
PROBS = torch.tensor([
    [0.90, 0.05, 0.05],  # y = 0: right, confidence 0.9
    [0.65, 0.25, 0.10],  # y = 1: wrong, confidence 0.65
    [0.20, 0.70, 0.10],  # y = 1: right, confidence 0.7
    [0.25, 0.25, 0.50],  # y = 2: right, confidence 0.5
])
TARGET = torch.tensor([0, 1, 1, 2])


def test_brier_score_by_hand():
    per_sample = [
        0.1**2 + 0.05**2 + 0.05**2,
        0.65**2 + 0.75**2 + 0.1**2,
        0.2**2 + 0.3**2 + 0.1**2,
        0.25**2 + 0.25**2 + 0.5**2,
    ]  # 0.015, 0.995, 0.14, 0.375
    assert brier_score(PROBS, TARGET).item() == pytest.approx(sum(per_sample) / 4, abs=1e-6)
    assert brier_score(PROBS, TARGET).item() == pytest.approx(0.38125, abs=1e-6)


def test_ece_by_hand_with_five_bins():
    # bins of width 0.2: [0.8, 1] holds 0.9 (right); [0.6, 0.8) holds 0.65 (wrong) and 0.7 (right);
    # [0.4, 0.6) holds 0.5 (right). ECE = sum over bins of (share) * |accuracy - mean confidence|.
    expected = 1 / 4 * abs(1 - 0.9) + 2 / 4 * abs(0.5 - (0.65 + 0.7) / 2) + 1 / 4 * abs(1 - 0.5)
    assert expected == pytest.approx(0.2375)
    assert expected_calibration_error(PROBS, TARGET, n_bins=5).item() == pytest.approx(expected, abs=1e-6)
    # one bin: |overall accuracy - mean confidence|
    one_bin = abs(3 / 4 - (0.9 + 0.65 + 0.7 + 0.5) / 4)
    assert expected_calibration_error(PROBS, TARGET, n_bins=1).item() == pytest.approx(one_bin, abs=1e-6)


def test_nll_and_entropy_by_hand():
    assert nll(PROBS, TARGET).item() == pytest.approx(-(log(0.9) + log(0.25) + log(0.7) + log(0.5)) / 4, abs=1e-6)
    entropies = [-sum(p * log(p) for p in row) for row in PROBS.tolist()]
    assert predictive_entropy(PROBS).item() == pytest.approx(sum(entropies) / 4, abs=1e-6)
    onehot = torch.eye(3)
    assert predictive_entropy(onehot).item() == 0.0  # 0 log 0 = 0, not nan
    assert nll(onehot, torch.tensor([1, 1, 1])).item() == pytest.approx(-2 / 3 * log(1e-12), rel=1e-6)  # floored


def test_metric_collection_accumulates_batches_like_the_functions():
    metrics = uncertainty_metrics(3, n_bins=5)
    metrics.update(PROBS[:1], TARGET[:1])
    metrics.update(PROBS[1:], TARGET[1:])
    scores = {k: v.item() for k, v in metrics.compute().items()}
    assert scores["acc"] == pytest.approx(0.75)
    assert scores["brier"] == pytest.approx(0.38125, abs=1e-6)
    assert scores["ece"] == pytest.approx(0.2375, abs=1e-6)
    assert scores["nll"] == pytest.approx(nll(PROBS, TARGET).item(), abs=1e-6)
    assert scores["entropy"] == pytest.approx(predictive_entropy(PROBS).item(), abs=1e-6)


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(4, 3\) and \(3,\)"):
        brier_score(PROBS, TARGET[:3])
