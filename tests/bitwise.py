"""``assert_same``: two nested states (dicts, lists, tensors, plain values) are bitwise equal."""

from __future__ import annotations

import torch


def assert_same(a, b, where: str = "") -> None:
    """Fails with the path of the first entry that differs (``.state_dict.net.0.weight differs``)."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
