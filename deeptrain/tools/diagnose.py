"""``deeptrain diagnose``: how the signal and the gradients flow through a deep MLP at initialization.

For each network configuration: build it (no training), push one batch of standardized
images forward, the cross-entropy backward, and record per hidden layer the activation std
and the L2 norm of the weight gradient. One line per configuration, against depth, as a
PNG and as an image in TensorBoard. This is the chapter's argument in one picture:
sigmoid + N(0, 1) saturates, sigmoid + Glorot lets the gradient vanish towards the input,
ReLU/ELU + He keep it, SELU + LeCun normal self-normalizes, batch norm forces it.

    deeptrain diagnose --dataset image_folder --data_dir ../shared/data/cifar10-jpeg --out docs/diagnose_depth50.png
    deeptrain diagnose --synthetic true --depth 20      # standard-normal inputs, no data needed
    deeptrain diagnose --nets my_nets.yaml              # {depth, width, configs: {label: {MLPConfig fields}}}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

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


def diagnose(preset: Literal["depth50"] = "depth50", nets: Optional[str] = None, depth: Optional[int] = None,
             width: Optional[int] = None, dataset: str = "cifar10", data_dir: Optional[str] = None,
             synthetic: bool = False, batch_size: int = 512, seed: int = 42, out: str = "diagnose.png",
             tensorboard: Optional[str] = "logs/diagnose") -> list[Profile]:
    """Activation std and gradient norm against depth of deep MLPs at initialization, plotted.

    Builds each network (no training), pushes one batch of standardized images forward and the
    cross-entropy backward, and plots per hidden layer the activation std, the saturated or dead
    units, and the weight-gradient norm: the chapter's vanishing/exploding gradients in one picture.

    Args:
        preset: the built-in comparison (sigmoid/tanh/ReLU/ELU/SELU with their initializations, and BN).
        nets: a YAML file ``{depth, width, configs: {label: {MLPConfig fields}}}`` to compare instead.
        depth: hidden layers of every network (overrides the preset's or the file's).
        width: units per hidden layer (overrides the preset's or the file's).
        dataset: fashion_mnist, cifar10 or image_folder.
        data_dir: where the dataset is (default: $DEEPTRAIN_DATA_DIR, else ./data).
        synthetic: standard-normal 3x32x32 inputs instead of images (no data needed).
        batch_size: images in the batch.
        seed: seed of the batch and of every initialization.
        out: PNG file to write.
        tensorboard: TensorBoard log folder for the figure (null: none).
    """
    for key, value in (("depth", depth), ("width", width), ("batch_size", batch_size)):
        if value is not None and value < 1:
            raise ValueError(f"diagnose: {key} must be >= 1, got {value}")
    name, configs = load_configs(preset, nets, depth, width)
    if synthetic:
        x, y, num_classes = synthetic_batch((3, 32, 32), 10, batch_size, seed)
        source = "standard-normal inputs"
    else:
        x, y, num_classes = standardized_batch(dataset, data_dir, batch_size, seed)
        name_of_data = Path(data_dir).name if dataset == "image_folder" and data_dir else dataset
        source = f"{name_of_data} training images, standardized"
    profiles = [profile(label, cfg, x, y, num_classes, seed) for label, cfg in configs.items()]
    print(summary_table(profiles))
    depths = {len(p.act_std) for p in profiles}
    figure = plot_profiles(profiles, f"at initialization: {'/'.join(map(str, sorted(depths)))} hidden layers, "
                                     f"one batch of {len(x)} {source}")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=90)
    print(f"wrote {out}")
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(Path(tensorboard) / name)) as writer:
            writer.add_figure(f"diagnose/{name}", figure, 0, close=False)
        print(f"TensorBoard image diagnose/{name} in {Path(tensorboard) / name}")
    return profiles


def load_configs(preset: str, nets: Optional[str], depth: Optional[int], width: Optional[int]) -> tuple[str, dict[str, MLPConfig]]:
    if nets is None:
        return preset, preset_configs(PRESETS[preset], depth, width)
    import yaml

    spec = yaml.safe_load(Path(nets).read_text())
    if not isinstance(spec, dict) or not isinstance(spec.get("configs"), dict):
        raise ValueError(f"{nets}: expected a mapping with 'configs: {{label: {{MLPConfig fields}}}}', got {spec!r}")
    return Path(nets).stem, preset_configs(spec, depth, width)
