"""Keras parity (docs/keras.md): each Keras-mode piece against Keras 3's published update rules
and defaults, transcribed here, without TensorFlow."""

import copy
import math
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from deeptrain.nn.fusion import fuse_batchnorm
from deeptrain.nn.mlp import MLP, MLPConfig
from deeptrain.nn.normalization import KerasBatchNorm1d
from deeptrain.training.keras_optimizers import KERAS_OPTIMIZERS, keras_optimizer
from deeptrain.training.module import Classifier, clip_per_variable_norm_
from tiny_data import TinyData

ROOT = Path(__file__).resolve().parents[1]
KERAS_PRESET = ROOT / "configs" / "presets" / "keras.yaml"


# ---- BatchNormalization: momentum 0.99, epsilon 1e-3, biased moving variance ----------------------


@pytest.mark.parametrize("shape", [(32, 5), (16, 5, 3)], ids=["NC", "NCL"])
def test_keras_batchnorm_moving_statistics_after_k_steps(shape):
    torch.manual_seed(0)
    bn, torch_bn = KerasBatchNorm1d(5), nn.BatchNorm1d(5, momentum=0.01, eps=1e-3)
    dims = [0, 2] if len(shape) == 3 else [0]
    mean, var = torch.zeros(5), torch.ones(5)  # Keras's initial moving statistics
    for _ in range(20):
        x = (torch.randn(shape) * 3 + 2).requires_grad_()
        y, y_torch = bn(x), torch_bn(x)
        torch.testing.assert_close(y, y_torch)  # training outputs: both use the batch's biased variance
        grad, grad_torch = torch.autograd.grad(y.square().sum(), x)[0], torch.autograd.grad(y_torch.square().sum(), x)[0]
        torch.testing.assert_close(grad, grad_torch)  # and so do the gradients
        x = x.detach()
        mean = 0.99 * mean + 0.01 * x.mean(dims)  # Keras: moving = moving * momentum + batch * (1 - momentum)
        var = 0.99 * var + 0.01 * x.var(dims, correction=0)
    torch.testing.assert_close(bn.running_mean, mean)
    torch.testing.assert_close(bn.running_var, var)
    assert (torch_bn.running_var / var).min() > 1.005  # torch's unbiased update: the 2% the issue measured
    bn.eval()
    x = torch.randn(shape)
    expand = (1, 5, 1) if len(shape) == 3 else (1, 5)
    torch.testing.assert_close(bn(x), (x - mean.view(expand)) / (var.view(expand) + 1e-3).sqrt())


def test_keras_batchnorm_cumulative_average_uses_biased_variances():
    torch.manual_seed(0)
    bn, xs = KerasBatchNorm1d(3, momentum=None), [torch.randn(8, 3) * 2 for _ in range(4)]
    for x in xs:
        bn(x)
    torch.testing.assert_close(bn.running_var, torch.stack([x.var(0, correction=0) for x in xs]).mean(0))


def test_keras_batchnorm_ignores_eval_batches_and_folds_like_torch_bn():
    torch.manual_seed(0)
    net = MLP((6,), 3, MLPConfig(depth=2, width=4, norm="batch", input_norm=True, bn_semantics="keras"))
    for _ in range(3):
        net(torch.randn(8, 6))
    net.eval()
    before = net.input_norm.running_var.clone()
    x = torch.randn(5, 6)
    y = net(x)
    assert torch.equal(net.input_norm.running_var, before)
    fused = fuse_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in fused.modules())
    torch.testing.assert_close(fused(x), y)


def test_bn_semantics_pick_layer_momentum_and_eps():
    def norms(**kw):
        net = MLP((6,), 3, MLPConfig(depth=1, width=4, norm="batch", input_norm=True, **kw))
        return [net.input_norm, net.backbone[0].norm]

    for bn in norms():
        assert type(bn) is nn.BatchNorm1d and (bn.momentum, bn.eps) == (0.1, 1e-5)  # torch stays the default
    for bn in norms(bn_semantics="keras"):
        assert type(bn) is KerasBatchNorm1d and (bn.momentum, bn.eps) == (0.01, 1e-3)
    for bn in norms(bn_semantics="keras", bn_momentum=0.2, bn_eps=1e-4):
        assert type(bn) is KerasBatchNorm1d and (bn.momentum, bn.eps) == (0.2, 1e-4)
    with pytest.raises(ValueError, match=r"net.bn_semantics = 'tf' is not valid; valid choices: torch, keras"):
        MLPConfig(bn_semantics="tf")


# ---- clipnorm: each variable by its own norm --------------------------------------------------------


def test_clipnorm_clips_each_variable_by_its_own_norm():
    a, b = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.tensor([3.0, 4.0, 0.0]), torch.tensor([0.3, 0.4])  # norms 5 and 0.5
    clip_per_variable_norm_([a, b], 1.0)
    # Keras clip_by_norm: g * c / max(||g||, c): a shrinks to norm 1, b (below the clip) is untouched
    torch.testing.assert_close(a.grad, torch.tensor([0.6, 0.8, 0.0]))
    torch.testing.assert_close(b.grad, torch.tensor([0.3, 0.4]))
    # global clipping (Keras global_clipnorm, Lightning's norm) would have shrunk b too
    a.grad, b.grad = torch.tensor([3.0, 4.0, 0.0]), torch.tensor([0.3, 0.4])
    torch.nn.utils.clip_grad_norm_([a, b], 1.0)
    assert b.grad.norm() < 0.1


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_clipnorm_works_in_64_bit_and_half_precision(dtype):
    a = nn.Parameter(torch.zeros(2, dtype=dtype))
    a.grad = torch.tensor([3.0, 4.0], dtype=dtype)
    clip_per_variable_norm_([a], 1.0)
    assert a.grad.dtype == dtype
    torch.testing.assert_close(a.grad, torch.tensor([0.6, 0.8], dtype=dtype))


def first_step(tmp_path, clipnorm=None, **trainer_kwargs):
    """One SGD step (lr 1) on TinyData's first batch: (weight change, that batch's raw gradients)."""
    data = TinyData()
    torch.manual_seed(0)  # the same initial weights at every call
    model = Classifier(MLPConfig(depth=2, width=8), input_shape=(1, 4, 4), num_classes=3,
                       optimizer=partial(torch.optim.SGD, lr=1.0), clipnorm=clipnorm)
    model.normalizer.set_stats(*data.input_stats())
    probe = copy.deepcopy(model)
    F.cross_entropy(probe(data.x[:32]), data.y[:32]).backward()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    L.Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, default_root_dir=tmp_path, **trainer_kwargs).fit(model, datamodule=data)
    delta = {n: before[n] - p.detach() for n, p in model.named_parameters()}
    return delta, {n: p.grad for n, p in probe.named_parameters()}


def median_grad_norm(tmp_path):
    _, grads = first_step(tmp_path)
    norms = sorted(g.norm().item() for g in grads.values())
    return norms[len(norms) // 2]  # half the variables above this clip, half below


def test_classifier_clipnorm_acts_in_the_training_step(tmp_path):
    clip = median_grad_norm(tmp_path)
    delta, grads = first_step(tmp_path, clipnorm=clip)
    clipped = 0
    for name, g in grads.items():
        clipped += g.norm().item() > clip
        torch.testing.assert_close(delta[name], g * clip / max(g.norm().item(), clip), rtol=1e-4, atol=1e-6)
    assert 0 < clipped < len(grads)


def test_clipnorm_then_the_trainers_value_clipping(tmp_path):
    # overriding the hook keeps Lightning's clipping: Keras's clipnorm first, then clipvalue
    clip, value = median_grad_norm(tmp_path), 0.05
    delta, grads = first_step(tmp_path, clip, gradient_clip_val=value, gradient_clip_algorithm="value")
    for name, g in grads.items():
        expected = (g * clip / max(g.norm().item(), clip)).clamp(-value, value)
        torch.testing.assert_close(delta[name], expected, rtol=1e-4, atol=1e-6)
    assert any((g.abs() > value).any() for g in grads.values())


class HostReads(TorchDispatchMode):
    """Counts the ATen ops that read a tensor's value on the host (a GPU would wait for them)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default)
        return func(*args, **(kwargs or {}))


def test_keras_batchnorm_and_clipnorm_never_read_values_on_the_host():
    bn, x = KerasBatchNorm1d(4), torch.randn(8, 4, requires_grad=True)
    with HostReads() as reads:
        bn(x).square().sum().backward()
        clip_per_variable_norm_([x, bn.weight, bn.bias], 0.5)
    assert reads.count == 0
    assert x.grad.norm() <= 0.5 + 1e-6


def test_bad_clipnorm_is_rejected():
    with pytest.raises(ValueError, match="clipnorm must be > 0.*got -1"):
        Classifier(clipnorm=-1)


# ---- optimizers: Keras 3's update rules, transcribed ---------------------------------------------------


def quadratic():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 4, generator=g, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    return lambda w: 2 * a.T @ (a @ w - b)  # gradient of ||a w - b||^2


def keras_nadam(grad, w, steps, lr, b1=0.9, b2=0.999, eps=1e-7):
    """keras.optimizers.Nadam (Keras 3): mu_t = b1 (1 - 0.5 * 0.96^t)."""
    m, v, u_product = torch.zeros_like(w), torch.zeros_like(w), 1.0
    for t in range(1, steps + 1):
        g = grad(w)
        u_t, u_next = b1 * (1 - 0.5 * 0.96**t), b1 * (1 - 0.5 * 0.96 ** (t + 1))
        u_product *= u_t
        m, v = m + (g - m) * (1 - b1), v + (g * g - v) * (1 - b2)
        m_hat = u_next * m / (1 - u_product * u_next) + (1 - u_t) * g / (1 - u_product)
        w = w - lr * m_hat / ((v / (1 - b2**t)).sqrt() + eps)
    return w


def keras_rmsprop(grad, w, steps, lr, rho=0.9, eps=1e-7):
    v = torch.zeros_like(w)
    for _ in range(steps):
        g = grad(w)
        v = rho * v + (1 - rho) * g * g
        w = w - lr * g / (v + eps).sqrt()  # epsilon inside the root
    return w


def keras_adagrad(grad, w, steps, lr, initial=0.1, eps=1e-7):
    acc = torch.full_like(w, initial)
    for _ in range(steps):
        g = grad(w)
        acc = acc + g * g
        w = w - lr * g / (acc + eps).sqrt()
    return w


def keras_sgd(grad, w, steps, lr, momentum=0.0, nesterov=False):
    m = torch.zeros_like(w)
    for _ in range(steps):
        g = grad(w)
        m = momentum * m - lr * g
        w = w + (momentum * m - lr * g if nesterov else m)
    return w


def run_torch(grad, w0, steps, optimizer):
    w = nn.Parameter(w0.clone())
    opt = optimizer([w])
    for _ in range(steps):
        w.grad = grad(w.detach())
        opt.step()
    return w.detach(), opt


@pytest.mark.parametrize(
    "name, reference, rtol",
    [
        ("Nadam", keras_nadam, 1e-9),
        ("Adagrad", keras_adagrad, 1e-6),
        ("RMSprop", keras_rmsprop, 1e-6),
        ("SGD", keras_sgd, 1e-12),
    ],
)
def test_keras_optimizer_arguments_reproduce_keras_updates(name, reference, rtol):
    grad, w0 = quadratic(), torch.zeros(4, dtype=torch.float64)
    lr = KERAS_OPTIMIZERS[name][1]["lr"]
    got, _ = run_torch(grad, w0, 60, partial(keras_optimizer, name))
    expected = reference(grad, w0, 60, lr)
    torch.testing.assert_close(got, expected, rtol=rtol, atol=1e-12)
    assert (got - w0).abs().max() > 1e-3  # the steps moved the weights: the comparison has content


def test_keras_sgd_momentum_and_nesterov_equal_torch_at_a_constant_lr():
    grad, w0 = quadratic(), torch.zeros(4, dtype=torch.float64)
    for nesterov in (False, True):
        got, _ = run_torch(grad, w0, 40, partial(keras_optimizer, "SGD", lr=0.001, momentum=0.9, nesterov=nesterov))
        torch.testing.assert_close(got, keras_sgd(grad, w0, 40, 0.001, 0.9, nesterov), rtol=1e-12, atol=1e-12)


def test_nadam_momentum_schedule_with_the_keras_preset_arguments():
    args = yaml.safe_load(KERAS_PRESET.read_text())["model"]["optimizer"]["init_args"]
    assert args == {k: v for k, v in KERAS_OPTIMIZERS["Nadam"][1].items() if k in ("eps", "momentum_decay")}
    grad, w0 = quadratic(), torch.zeros(4, dtype=torch.float64)
    steps = 1407  # one CIFAR-10 epoch (45,000 images) at batch 32
    _, opt = run_torch(grad, w0, steps, partial(torch.optim.NAdam, lr=5e-4, **args))
    mu_product = float(next(iter(opt.state.values()))["mu_product"])
    keras_product = math.prod(0.9 * (1 - 0.5 * 0.96**t) for t in range(1, steps + 1))
    assert mu_product == pytest.approx(keras_product, rel=1e-9)
    mu = lambda t, decay: 0.9 * (1 - 0.5 * 0.96 ** (t * decay))  # torch's formula
    assert mu(steps, args["momentum_decay"]) == pytest.approx(0.9, abs=1e-9)  # Keras 3's mu_t
    assert mu(steps, 4e-3) == pytest.approx(0.54, abs=0.005)  # torch's default: Keras 2's legacy schedule
    got, _ = run_torch(grad, w0, 60, partial(torch.optim.NAdam, lr=5e-4, **args))
    torch.testing.assert_close(got, keras_nadam(grad, w0, 60, 5e-4), rtol=1e-9, atol=1e-12)


def test_unknown_keras_optimizer_lists_the_choices():
    with pytest.raises(ValueError, match="unknown Keras optimizer 'Adadelta'; valid choices: SGD, Adam"):
        keras_optimizer("Adadelta", [nn.Parameter(torch.zeros(1))])


# ---- penalties: penalize_output=False leaves the head out ---------------------------------------------


def test_penalize_output_false_excludes_the_output_layer():
    torch.manual_seed(0)
    kwargs = dict(input_shape=(1, 4, 4), num_classes=3, l1=0.01, l2=0.5)
    every = Classifier(MLPConfig(depth=2, width=5), **kwargs)
    hidden = Classifier(MLPConfig(depth=2, width=5), penalize_output=False, **kwargs)
    hidden.load_state_dict(every.state_dict())
    ws = [lin.weight for lin in hidden.net.hidden_linears()]
    expected = 0.01 * sum(w.abs().sum() for w in ws) + 0.5 * sum(w.square().sum() for w in ws)
    torch.testing.assert_close(hidden.penalty(), expected)
    head = every.net.head.weight
    torch.testing.assert_close(every.penalty(), expected + 0.01 * head.abs().sum() + 0.5 * head.square().sum())
    hidden.penalty().backward()
    assert hidden.net.head.weight.grad is None and hidden.net.hidden_linears()[0].weight.grad.abs().sum() > 0


# ---- every chapter config says which semantics it uses (the preset's tests: tests/test_presets.py) ---

CHAPTER_CONFIGS = sorted(
    p for folder in ("cifar10", "fashion_mnist", "presets") for p in (ROOT / "configs" / folder).glob("*.yaml")
)


@pytest.mark.parametrize("path", CHAPTER_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_chapter_config_says_which_semantics_it_uses(path):
    comments = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert any(line.startswith("# Semantics:") for line in comments), f"{path.name} has no '# Semantics:' line"
