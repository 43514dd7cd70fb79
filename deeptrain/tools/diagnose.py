"""``deeptrain diagnose``: how the signal and the gradients flow through a deep MLP at initialization.

For each network configuration: build it (no training), push one batch of standardized
images forward, the cross-entropy backward, and record per hidden layer the activation std
and the L2 norm of the weight gradient. One line per configuration, against depth, as a
PNG and as an image in TensorBoard. This is the chapter's argument in one picture:
sigmoid + N(0, 1) saturates, sigmoid + Glorot lets the gradient vanish towards the input,
ReLU/ELU + He keep it, SELU + LeCun normal self-normalizes, batch norm forces it.

    deeptrain diagnose --dataset image_folder --data-dir ../shared/data/cifar10-jpeg --out docs/diagnose_depth50.png
    deeptrain diagnose --synthetic --depth 20          # standard-normal inputs, no data needed
    deeptrain diagnose --config my_nets.yaml            # {depth, width, configs: {label: {MLPConfig fields}}}
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from deeptrain.callbacks.activation_stats import activation_layers, record_activations, summarize
from deeptrain.nn.activations import activation_name
from deeptrain.nn.mlp import MLP, MLPConfig

# The chapter's comparison, at depth 50 (Glorot is Keras' default, uniform).
PRESETS: dict[str, dict[str, Any]] = {
    "depth50": {
        "depth": 50,
        "width": 100,
        "configs": {
            "sigmoid + N(0, 1)": {"activation": "sigmoid", "kernel_init": "random_normal", "kernel_init_args": {"stddev": 1.0}},
            "sigmoid + Glorot": {"activation": "sigmoid", "kernel_init": "glorot_uniform"},
            "tanh + Glorot": {"activation": "tanh", "kernel_init": "glorot_uniform"},
            "ReLU + He": {"activation": "relu", "kernel_init": "he_normal"},
            "ELU + He": {"activation": "elu", "kernel_init": "he_normal"},
            "SELU + LeCun normal": {"activation": "selu", "kernel_init": "lecun_normal"},
            "ELU + He + BN": {"activation": "elu", "kernel_init": "he_normal", "norm": "batch"},
        },
    }
}


@dataclass
class Profile:
    """Per hidden layer (bottom to top) of one network on one batch."""

    name: str
    act_mean: list[float]
    act_std: list[float]
    saturated: list[Optional[float]]  # sigmoid/tanh only
    dead: list[Optional[float]]  # ReLU-like only
    grad_norm: list[float]  # ||dL/dW|| of each hidden layer's weight
    loss: float


def preset_configs(preset: dict[str, Any], depth: Optional[int] = None, width: Optional[int] = None) -> dict[str, MLPConfig]:
    """{label: MLPConfig} of a preset (or a YAML of the same form), depth and width overridable."""
    base = {"depth": depth or preset.get("depth", 50), "width": width or preset.get("width", 100)}
    return {label: MLPConfig.coerce({**base, **fields}) for label, fields in preset["configs"].items()}


def profile(name: str, config: MLPConfig, x: Tensor, y: Tensor, num_classes: int, seed: int = 0) -> Profile:
    """Initialize ``config`` with ``seed`` and measure one forward/backward pass of ``(x, y)``.

    ``x`` must already be standardized (the network sees it as it is). The network is in
    training mode, as on the first step (batch norm on batch statistics). The global RNG
    is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = MLP(tuple(x.shape[1:]), num_classes, config).train()
    layers = activation_layers(net)
    with record_activations(layers) as records:
        loss = F.cross_entropy(net(x), y)
    loss.backward()
    stats = [summarize(*records[label], activation_name(module)) for label, module in layers]
    grads = [float(linear.weight.grad.norm()) for linear in net.hidden_linears()]
    return Profile(name, [s.mean for s in stats], [s.std for s in stats], [s.saturated for s in stats],
                   [s.dead for s in stats], grads, loss.item())


def standardized_batch(dataset: str, data_dir: Optional[str], batch_size: int, seed: int) -> tuple[Tensor, Tensor, int]:
    """``batch_size`` random training images, standardized per pixel with the training split's statistics."""
    from deeptrain.data.datamodule import ImageDataModule

    dm = ImageDataModule(dataset, data_dir=data_dir, normalize="standardize")
    train = dm.split("train")
    idx = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(seed))[:batch_size]
    mean, std = dm.input_stats()
    return (train.images[idx].float() - mean) / std, train.labels[idx], dm.num_classes


def synthetic_batch(input_shape: Sequence[int], num_classes: int, batch_size: int, seed: int) -> tuple[Tensor, Tensor, int]:
    """Standard-normal inputs (already standardized) with random labels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, *input_shape, generator=g)
    return x, torch.randint(0, num_classes, (batch_size,), generator=g), num_classes


def plot_profiles(profiles: Sequence[Profile], title: str = "") -> Any:
    """Against depth, one line per network: activation std, the fraction of saturated (sigmoid,
    tanh) or dead (ReLU) units, and the weight-gradient norm."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(15, 4.6))  # no pyplot: no global backend switch, nothing to close
    left, middle, right = figure.subplots(1, 3)
    for p in profiles:
        depth = range(1, len(p.act_std) + 1)
        (line,) = left.plot(depth, p.act_std, lw=1.6, label=p.name)
        stuck = p.saturated if p.saturated[0] is not None else p.dead
        if stuck[0] is not None:
            middle.plot(depth, stuck, lw=1.6, color=line.get_color(), label=p.name)
        right.plot(depth, p.grad_norm, lw=1.6, color=line.get_color(), label=p.name)
    left.set(yscale="log", xlabel="hidden layer", ylabel="std of the activations", title="forward: activation std")
    middle.set(xlabel="hidden layer", ylim=(-0.02, 1.02), title="saturated (sigmoid, tanh) or dead (ReLU) units")
    right.set(yscale="log", xlabel="hidden layer", ylabel="||dL/dW||",
              title="backward: weight-gradient norm (0 = underflow)")
    for ax in (left, middle, right):
        ax.grid(True, which="major", alpha=0.3)
    handles, labels = left.get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 7), fontsize=9, frameon=False)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0.07, 1, 1))  # room for the legend below the panels
    return figure


def summary_table(profiles: Sequence[Profile]) -> str:
    """The numbers behind the picture, one row per network."""
    rows = [f"{'network':<22}{'std L1':>9}{'std top':>9}{'sat. top':>9}{'|g| L1':>10}{'|g| top':>10}{'top/L1':>9}"]
    for p in profiles:
        sat = p.saturated[-1]
        ratio = p.grad_norm[-1] / p.grad_norm[0] if p.grad_norm[0] > 0 else math.inf
        rows.append(
            f"{p.name:<22}{p.act_std[0]:>9.3g}{p.act_std[-1]:>9.3g}{'-' if sat is None else f'{sat:.2f}':>9}"
            f"{p.grad_norm[0]:>10.2e}{p.grad_norm[-1]:>10.2e}{ratio:>9.3g}"
        )
    return "\n".join(rows)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="deeptrain diagnose", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--preset", default="depth50", choices=sorted(PRESETS), help="built-in comparison")
    parser.add_argument("--config", default=None, help="YAML {depth, width, configs: {label: {MLPConfig fields}}}")
    parser.add_argument("--depth", type=int, default=None, help="override the hidden depth")
    parser.add_argument("--width", type=int, default=None, help="override the hidden width")
    parser.add_argument("--dataset", default="cifar10", help="fashion_mnist, cifar10 or image_folder")
    parser.add_argument("--data-dir", default=None, help="default: $DEEPTRAIN_DATA_DIR")
    parser.add_argument("--synthetic", action="store_true", help="standard-normal 3x32x32 inputs instead of images")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=42, help="seed of the batch and of every initialization")
    parser.add_argument("--out", default="diagnose.png", help="PNG to write")
    parser.add_argument("--tensorboard", default="logs/diagnose", help="TensorBoard log dir for the image ('' = none)")
    return parser.parse_args(list(argv))


def load_configs(args: argparse.Namespace) -> tuple[str, dict[str, MLPConfig]]:
    if args.config is None:
        return args.preset, preset_configs(PRESETS[args.preset], args.depth, args.width)
    import yaml

    spec = yaml.safe_load(Path(args.config).read_text())
    if not isinstance(spec, dict) or not isinstance(spec.get("configs"), dict):
        raise ValueError(f"{args.config}: expected a mapping with 'configs: {{label: {{MLPConfig fields}}}}', got {spec!r}")
    return Path(args.config).stem, preset_configs(spec, args.depth, args.width)


def main(argv: Sequence[str] = ()) -> list[Profile]:
    args = parse_args(argv)
    name, configs = load_configs(args)
    if args.synthetic:
        x, y, num_classes = synthetic_batch((3, 32, 32), 10, args.batch_size, args.seed)
        source = "standard-normal inputs"
    else:
        x, y, num_classes = standardized_batch(args.dataset, args.data_dir, args.batch_size, args.seed)
        name_of_data = Path(args.data_dir).name if args.dataset == "image_folder" and args.data_dir else args.dataset
        source = f"{name_of_data} training images, standardized"
    profiles = [profile(label, cfg, x, y, num_classes, args.seed) for label, cfg in configs.items()]
    print(summary_table(profiles))
    depth = {len(p.act_std) for p in profiles}
    figure = plot_profiles(profiles, f"at initialization: {'/'.join(map(str, sorted(depth)))} hidden layers, "
                                     f"one batch of {len(x)} {source}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    if args.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(Path(args.tensorboard) / name)) as writer:
            writer.add_figure(f"diagnose/{name}", figure, 0, close=False)
        print(f"TensorBoard image diagnose/{name} in {Path(args.tensorboard) / name}")
    return profiles
