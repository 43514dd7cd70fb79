"""Scores of probabilistic predictions: accuracy, NLL, Brier, ECE, predictive entropy.

All take class probabilities ``probs`` (N, C) (rows sum to 1, e.g. a softmax or an MC
mean) and integer targets (N,). ECE comes from torchmetrics; torchmetrics has no
multiclass Brier score, NLL of probabilities or entropy, so they are here, as
functions and as torchmetrics ``Metric`` s (DDP-synchronized sums) for the callbacks.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError
from torchmetrics.functional.classification import multiclass_calibration_error

# Probabilities below this count as this in the NLL: a confident miss costs log(1e12) = 27.6
# nats instead of infinity, so one wrong 0 does not make the mean useless.
PROB_FLOOR = 1e-12
METRIC_NAMES = ("acc", "nll", "brier", "ece", "entropy")


def _check(probs: Tensor, target: Tensor) -> None:
    if probs.dim() != 2 or target.shape != probs.shape[:1]:
        raise ValueError(f"expected probs (N, C) and target (N,), got {tuple(probs.shape)} and {tuple(target.shape)}")


def nll_per_sample(probs: Tensor, target: Tensor) -> Tensor:
    """``-log p_y``, the cross-entropy of the probabilities: (N,)."""
    _check(probs, target)
    return -probs.gather(1, target[:, None]).squeeze(1).clamp_min(PROB_FLOOR).log()


def brier_per_sample(probs: Tensor, target: Tensor) -> Tensor:
    """Multiclass Brier score (Brier, 1950): ``sum_c (p_c - 1[c = y])^2`` in [0, 2]: (N,)."""
    _check(probs, target)
    onehot = torch.nn.functional.one_hot(target, probs.shape[1]).to(probs.dtype)
    return (probs - onehot).square().sum(dim=1)


def entropy_per_sample(probs: Tensor) -> Tensor:
    """Predictive entropy ``-sum_c p_c log p_c`` in nats (0 log 0 = 0): (N,)."""
    return -torch.special.xlogy(probs, probs).sum(dim=1)


def nll(probs: Tensor, target: Tensor) -> Tensor:
    return nll_per_sample(probs, target).mean()


def brier_score(probs: Tensor, target: Tensor) -> Tensor:
    return brier_per_sample(probs, target).mean()


def predictive_entropy(probs: Tensor) -> Tensor:
    return entropy_per_sample(probs).mean()


def expected_calibration_error(
    probs: Tensor, target: Tensor, n_bins: int = 15, norm: Literal["l1", "l2", "max"] = "l1"
) -> Tensor:
    """ECE (Guo et al., 2017): ``sum_b |B_b|/N * |acc(B_b) - conf(B_b)|`` over ``n_bins``
    equal-width bins of the top-class confidence (torchmetrics' ``multiclass_calibration_error``)."""
    _check(probs, target)
    return multiclass_calibration_error(probs, target, num_classes=probs.shape[1], n_bins=n_bins, norm=norm)


class _SampleMean(Metric):
    """Mean over all samples seen of a per-sample score of ``(probs, target)``."""

    full_state_update = False
    higher_is_better = False

    def __init__(self, **kwargs: object):
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def score(self, probs: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, probs: Tensor, target: Tensor) -> None:
        values = self.score(probs, target)
        self.total += values.sum(dtype=torch.float64)
        self.count += values.numel()

    def compute(self) -> Tensor:
        return (self.total / self.count.clamp_min(1)).float()


class NegativeLogLikelihood(_SampleMean):
    def score(self, probs: Tensor, target: Tensor) -> Tensor:
        return nll_per_sample(probs, target)


class BrierScore(_SampleMean):
    def score(self, probs: Tensor, target: Tensor) -> Tensor:
        return brier_per_sample(probs, target)


class PredictiveEntropy(_SampleMean):
    def score(self, probs: Tensor, target: Tensor) -> Tensor:
        return entropy_per_sample(probs)


def uncertainty_metrics(num_classes: int, n_bins: int = 15) -> MetricCollection:
    """``acc``, ``nll``, ``brier``, ``ece`` and ``entropy`` of probabilities, updated with ``(probs, target)``.

    Examples:
        >>> metrics = uncertainty_metrics(3)
        >>> metrics.update(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]), torch.tensor([0, 1]))
        >>> {k: round(float(v), 3) for k, v in metrics.compute().items()}["brier"]
        0.8
    """
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "nll": NegativeLogLikelihood(),
            "brier": BrierScore(),
            "ece": MulticlassCalibrationError(num_classes, n_bins=n_bins, norm="l1"),
            "entropy": PredictiveEntropy(),
        },
        compute_groups=False,
    )
