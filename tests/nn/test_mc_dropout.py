import math

import pytest
import torch
from torch import nn

from deeptrain.nn.mc_dropout import dropout_modules, has_dropout, mc_dropout_mode, mc_predict, mc_sample
from deeptrain.nn.mlp import MLP, MLPConfig


def dropout_net(dropout=0.5, norm="batch"):
    torch.manual_seed(0)
    return MLP((12,), 4, MLPConfig(widths=[32, 32], activation="relu", norm=norm, dropout=dropout))


def fit_bn_stats(net, steps=5):
    net.train()
    with torch.no_grad():
        for _ in range(steps):
            net(torch.randn(64, 12) * 3 + 1)  # running stats away from their init (0, 1)


def snapshot(net):
    return {k: v.clone() for k, v in net.state_dict().items()}, [m.training for m in net.modules()]


def test_passes_differ_and_their_mean_differs_from_the_deterministic_prediction():
    net = dropout_net()
    fit_bn_stats(net)
    net.eval()
    x = torch.randn(8, 12)
    probs = mc_sample(net, x, samples=20, seed=0)  # (T, N, C)
    assert probs.shape == (20, 8, 4)
    assert not torch.allclose(probs[0], probs[1])
    assert (probs.std(dim=0) > 1e-3).all()
    deterministic = net(x).softmax(-1)
    mean, std = mc_predict(net, x, samples=20, seed=0)
    torch.testing.assert_close(mean, probs.mean(0))
    torch.testing.assert_close(std, probs.std(0, correction=0))
    assert (mean - deterministic).abs().max() > 1e-2
    torch.testing.assert_close(mean.sum(-1), torch.ones(8))


@pytest.mark.parametrize("start_mode", ["train", "eval", "mixed"])
def test_weights_bn_statistics_and_module_modes_are_left_as_they_were(start_mode):
    net = dropout_net()
    fit_bn_stats(net)
    net.train() if start_mode == "train" else net.eval()
    if start_mode == "mixed":
        net.backbone[0].norm.train()
        net.backbone[1].dropout.eval()
    state, modes = snapshot(net)
    mc_predict(net, torch.randn(16, 12), samples=10)
    after_state, after_modes = snapshot(net)
    assert after_modes == modes
    for key, value in state.items():
        assert torch.equal(after_state[key], value), key  # running_mean/var and num_batches_tracked included


def test_dropout_is_on_and_batchnorm_in_eval_mode_during_the_passes():
    net = dropout_net().train()
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen[name] = module.training  # returns None: the output is kept
        return hook

    net.backbone[0].norm.register_forward_hook(record("bn"))
    net.backbone[0].dropout.register_forward_hook(record("dropout"))
    mc_predict(net, torch.randn(4, 12), samples=3)
    assert seen == {"bn": False, "dropout": True}


def _loop_reference(net, x, samples):
    """The seeds' recipe, done right: T Python-level passes, dropout on, everything else in eval."""
    with torch.no_grad():
        net.eval()
        for m in dropout_modules(net):
            m.train()
        return torch.stack([net(x).softmax(-1) for _ in range(samples)])


@pytest.mark.parametrize("share_prefix", [False, True])
def test_one_pass_is_exactly_a_forward_with_dropout_on_and_bn_in_eval_mode(share_prefix):
    net = dropout_net()
    fit_bn_stats(net)
    x = torch.randn(6, 12)
    fast = mc_sample(net, x, samples=1, seed=3, share_prefix=share_prefix)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        loop = _loop_reference(net, x, samples=1)
    torch.testing.assert_close(fast, loop)


@pytest.mark.parametrize("share_prefix", [False, True])
def test_vectorized_passes_have_the_distribution_of_T_separate_passes(share_prefix):
    net = dropout_net()
    fit_bn_stats(net)
    x = torch.randn(6, 12)
    mean, std = mc_predict(net, x, samples=400, seed=0, share_prefix=share_prefix)
    torch.manual_seed(1)
    loop = _loop_reference(net, x, samples=400)
    # the standard error of a mean over 400 passes is ~0.015 here
    torch.testing.assert_close(mean, loop.mean(0), atol=0.08, rtol=0)
    torch.testing.assert_close(std, loop.std(0), atol=0.08, rtol=0)


def test_the_T_passes_are_a_few_large_forwards_bounded_by_chunk_size():
    net = dropout_net()
    rows = []
    net.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    mc_predict(net, torch.randn(10, 12), samples=100, share_prefix=False)  # 1000 rows <= default chunk
    assert rows == [1000]
    rows.clear()
    mc_predict(net, torch.randn(50, 12), samples=30, chunk_size=400, share_prefix=False)
    assert max(rows) <= 400
    assert len(rows) == math.ceil(50 / (400 // 30))  # one forward per block of 13 images, not 30 calls
    rows.clear()
    mc_predict(net, torch.randn(3, 12), samples=100, chunk_size=50, share_prefix=False)  # T > chunk: split too
    assert max(rows) <= 50 and sum(rows) == 300


def test_shared_prefix_runs_the_layers_below_the_first_dropout_once():
    torch.manual_seed(0)
    net = MLP((12,), 4, MLPConfig(depth=3, width=16, dropout=0.3, dropout_placement="output"))
    assert net.mc_share_prefix  # the MLP declares itself a chain
    rows = {}
    for name in ("backbone.0.linear", "backbone.2.linear", "backbone.2.dropout", "head"):
        net.get_submodule(name).register_forward_hook(
            lambda m, i, o, name=name: rows.__setitem__(name, rows.get(name, 0) + i[0].shape[0]))
    mean, _ = mc_predict(net, torch.randn(10, 12), samples=50)
    assert rows == {"backbone.0.linear": 10, "backbone.2.linear": 10, "backbone.2.dropout": 500, "head": 500}
    rows.clear()
    reference, _ = mc_predict(net, torch.randn(10, 12), samples=50, share_prefix=False)
    assert rows["backbone.0.linear"] == 500
    assert not net.backbone[2].dropout._forward_pre_hooks  # the repeat hooks are removed


def test_seeded_runs_repeat_and_do_not_disturb_the_global_random_stream():
    net, x = dropout_net(), torch.randn(5, 12)
    torch.manual_seed(123)
    a = mc_predict(net, x, samples=10, seed=7)
    after_seeded = torch.rand(3)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.testing.assert_close(after_seeded, expected)
    b = mc_predict(net, x, samples=10, seed=7)
    c = mc_predict(net, x, samples=10, seed=8)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a[0], c[0])


def test_modes_are_restored_even_when_the_forward_fails():
    net = dropout_net().train()
    with pytest.raises(RuntimeError):
        mc_predict(net, torch.randn(4, 7), samples=2)  # wrong width
    assert all(m.training for m in net.modules())


def test_a_model_without_dropout_is_refused_with_a_clear_error():
    net = dropout_net(dropout=0.0)
    assert not has_dropout(net)
    with pytest.raises(ValueError, match="no dropout layer"):
        mc_predict(net, torch.randn(2, 12))
    with pytest.raises(ValueError, match="samples"):
        mc_predict(dropout_net(), torch.randn(2, 12), samples=0)


def test_context_manager_flips_only_dropout():
    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.AlphaDropout(0.2), nn.Dropout(0.0)).train()
    with mc_dropout_mode(net):
        assert [m.training for m in net] == [False, False, True, False]  # p = 0 is no dropout
    assert all(m.training for m in net.modules())


@pytest.mark.parametrize("kind", ["alpha", "standard"])
def test_alpha_dropout_keeps_selu_activations_self_normalized_in_training_mode(kind):
    """Deep SELU + LeCun normal on standardized inputs stays at mean 0 / std 1 through
    alpha dropout in every layer; standard dropout (rescaling by 1/(1-p)) breaks it."""
    torch.manual_seed(0)
    cfg = MLPConfig(depth=20, width=128, activation="selu", kernel_init="lecun_normal",
                    dropout=0.1, dropout_kind=kind, dropout_placement="all")
    with pytest.warns(UserWarning) if kind == "standard" else _no_warning():
        net = MLP((128,), 10, cfg).train()
    x = torch.randn(1024, 128)  # standardized inputs
    with torch.no_grad():
        h = net.features(x)  # after 20 blocks of linear -> selu -> dropout
    mean, std = h.mean().item(), h.std().item()
    if kind == "alpha":
        assert abs(mean) < 0.05 and abs(std - 1) < 0.05, (mean, std)
    else:  # measured: std ~1.26
        assert std > 1.15, (mean, std)


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_default_chunk_is_cache_sized_for_repeated_cpu_inputs_and_large_otherwise():
    from deeptrain.nn.mc_dropout import CPU_INPUT_BLOCK_FLOATS, LARGE_CHUNK_SIZE, default_chunk_size

    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert default_chunk_size(cpu, 3 * 32 * 32, share_prefix=False) == CPU_INPUT_BLOCK_FLOATS // 3072 < 2000
    assert default_chunk_size(cpu, 3 * 32 * 32, share_prefix=True) == LARGE_CHUNK_SIZE
    assert default_chunk_size(cuda, 3 * 32 * 32, share_prefix=False) == LARGE_CHUNK_SIZE


def test_default_chunk_size_bounds_the_rows_per_forward_when_the_input_is_repeated_on_cpu():
    from deeptrain.nn.mc_dropout import CPU_INPUT_BLOCK_FLOATS

    width = 2 ** 15  # 128 rows per block by default
    net = nn.Sequential(nn.Linear(width, 4), nn.ReLU(), nn.Dropout(0.3), nn.Linear(4, 3))
    rows = []
    net[0].register_forward_hook(lambda m, args, out: rows.append(args[0].shape[0]))
    mean, _ = mc_predict(net, torch.randn(20, width), samples=30, share_prefix=False)
    assert mean.shape == (20, 3)
    assert max(rows) <= CPU_INPUT_BLOCK_FLOATS // width and sum(rows) == 20 * 30
