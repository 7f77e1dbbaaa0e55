"""One PyTorch module per plan op (the Keras twin is resnet_keras/layers.py)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shared_specs import ResNetSpec, make_plan
from shared_specs import plan as P
from shared_specs.spec import torch_momentum


def same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """Keras/TensorFlow 'same' padding of one axis: (before, after), the extra pixel after.

    TF defines the total as max((ceil(size / stride) - 1) * stride + kernel_size - size, 0).
    Written with non-negative integer operands only (the same numbers): ceil written as
    `-(-size // stride)` exports to ONNX as an integer Div, which truncates instead of
    flooring and pads odd sizes wrongly.
    """
    if stride == 1 or kernel_size == 1:  # constant: k - 1, or 0 as a 1x1 window never pads
        total = kernel_size - 1 if stride == 1 else 0
    else:
        total = kernel_size - stride + (stride - size % stride) % stride
    if kernel_size < stride:  # only then can the total be negative
        total = torch.sym_max(total, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel_size: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """Pad H and W as 'same' does, for a window that then runs unpadded.

    Pads by the most 'same' can ever need ((k-1)//2 before, k-1 after), then keeps the
    `size + k - 1` rows and columns starting where 'same' would start. The window sees
    exactly TF's padded input (the extra trailing rows are never reached), and the
    output size is (size - 1) // stride + 1 with no padding term in it: under
    torch.export with dynamic H and W the symbolic sizes then grow linearly with depth,
    where padding by `same_padding` directly nests the Mod terms of every earlier
    layer twice (tutorial_keras_resnet18 took minutes to export instead of seconds).
    """
    lo, hi = (kernel_size - 1) // 2, kernel_size - 1
    sizes = x.shape[-2:]
    x = F.pad(x, (lo, hi, lo, hi), value=value)
    for dim, size in zip((-2, -1), sizes):
        before, _ = same_padding(size, kernel_size, stride)
        x = x.narrow(dim, lo - before, size + kernel_size - 1)
    return x


class SameConv2d(nn.Conv2d):
    """Conv2d with Keras 'same' padding, which is asymmetric for strided convs on even sizes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(_pad_same(x, self.kernel_size[0], self.stride[0]))


class StdConv2d(nn.Conv2d):
    """Conv2d with weight standardisation (BiT): each output channel's kernel minus its mean,
    over sqrt(its biased variance + `eps`), at every call."""

    def __init__(self, *args: Any, eps: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        var, mean = torch.var_mean(w, dim=(1, 2, 3), keepdim=True, correction=0)
        return self._conv_forward(x, (w - mean) / torch.sqrt(var + self.eps), self.bias)


class EvoNorm2dS0(nn.Module):
    """EvoNorm-S0 (Liu et al. 2020): x * sigmoid(v x) / group_std(x) * weight + bias; without
    `act` only x * weight + bias, as timm's apply_act=False. Statistics per example."""

    def __init__(self, channels: int, groups: int, eps: float, act: bool) -> None:
        super().__init__()
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.v = nn.Parameter(torch.ones(channels)) if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        if self.v is not None:
            n, c, h, w = x.shape
            grouped = x.reshape(n, self.groups, c // self.groups, h, w)
            var = grouped.var(dim=(2, 3, 4), correction=0, keepdim=True)
            std = (var + self.eps).sqrt().expand_as(grouped).reshape(n, c, h, w)
            x = x * torch.sigmoid(x * self.v.view(shape)) / std
        return x * self.weight.view(shape) + self.bias.view(shape)


class FilterResponseNorm2d(nn.Module):
    """Filter Response Normalisation with its TLU (Singh & Krishnan 2020): x / sqrt(mean of
    x^2 over H, W + eps) * weight + bias, then max(., tau) when `tlu`."""

    def __init__(self, channels: int, eps: float, tlu: bool) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.tau = nn.Parameter(torch.zeros(channels)) if tlu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        x = x * torch.rsqrt(x.square().mean(dim=(2, 3), keepdim=True) + self.eps)
        x = x * self.weight.view(shape) + self.bias.view(shape)
        return torch.maximum(x, self.tau.view(shape)) if self.tau is not None else x


class SqueezeExcite(nn.Module):
    """Squeeze-excitation: x * sigmoid(fc2(relu(fc1(mean over H, W)))), 1x1 convs with bias."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True))))
        return x * torch.sigmoid(s)


class EfficientChannelAttention(nn.Module):
    """ECA: x * sigmoid(conv1d over the channel axis of the channel means), zero-padded, no bias."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        s = self.conv(x.mean(dim=(2, 3)).view(n, 1, c))
        return x * torch.sigmoid(s).view(n, c, 1, 1)


class BlurPool2d(nn.Module):
    """Anti-aliased downsampling (Zhang 2019): reflect-pad 1, then the binomial [1, 2, 1] x
    [1, 2, 1] / 16 filter on each channel with `stride`. The filter is a constant, not a weight."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.channels, self.stride = channels, stride
        taps = torch.tensor([1.0, 2.0, 1.0]) / 4
        self.register_buffer("filt", (taps[:, None] * taps[None, :]).expand(channels, 1, 3, 3).clone(),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return F.conv2d(x, self.filt.to(x.dtype), stride=self.stride, groups=self.channels)


class PaddedMaxPool2d(nn.MaxPool2d):
    """Max-pool after explicit padding with `value`: 0 reproduces Keras's ZeroPadding2D + MaxPooling2D,
    and 'same' padding reproduces Keras's MaxPooling2D(padding='same')."""

    def __init__(self, size: int, stride: int, padding: P.Padding, value: float) -> None:
        super().__init__(size, stride)
        self.pad, self.value = padding, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad == "same":
            x = _pad_same(x, self.kernel_size, self.stride, self.value)  # type: ignore[arg-type]
        else:
            x = F.pad(x, (self.pad,) * 4, value=self.value)
        return super().forward(x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pad={self.pad}, pad_value={self.value}"


class Subsample(nn.Module):
    """Strided identity shortcut: every `stride`-th row and column."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :: self.stride, :: self.stride]


class ChannelPad(nn.Module):
    """Appends `extra` zero channels (option A shortcut)."""

    def __init__(self, extra: int) -> None:
        super().__init__()
        self.extra = extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


class GlobalAvgPool(nn.AdaptiveAvgPool2d):
    """torchvision's avgpool + flatten, as one module."""

    def __init__(self) -> None:
        super().__init__((1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(super().forward(x), 1)


class GlobalPool(nn.Module):
    """Global max, avgmax (0.5 * (avg + max)) or catavgmax ([avg, max] concatenated) pooling,
    flattened, as timm's SelectAdaptivePool2d computes them."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        peak = torch.flatten(F.adaptive_max_pool2d(x, 1), 1)
        if self.mode == "max":
            return peak
        mean = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return 0.5 * (mean + peak) if self.mode == "avgmax" else torch.cat((mean, peak), 1)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


class BiasedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that folds the BIASED batch variance into `running_var`, as Keras's
    BatchNormalization does (spec `batchnorm.running_var="biased"`, trap 8).

    nn.BatchNorm2d folds in the unbiased one (times n/(n-1)); normalisation is the same
    in both, so only the running statistics, and with them eval-mode outputs, differ.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.track_running_stats):
            return super().forward(x)
        out = F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        with torch.no_grad():
            var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
            update_running_stats(self, mean, var)
        return out


class BiasedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d folding the BIASED batch variance into `running_var` (BiasedBatchNorm2d's
    twin for a classifier's features)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.track_running_stats):
            return super().forward(x)
        out = F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        with torch.no_grad():
            var, mean = torch.var_mean(x, dim=0, correction=0)
            update_running_stats(self, mean, var)
        return out


def update_running_stats(bn: nn.modules.batchnorm._BatchNorm, mean: torch.Tensor, var: torch.Tensor) -> None:
    """running = (1 - momentum) * running + momentum * batch, as ATen's batch_norm does."""
    momentum = float(bn.momentum)  # type: ignore[arg-type]  # specs always give one (no cumulative average)
    with torch.no_grad():
        bn.running_mean.mul_(1.0 - momentum).add_(mean, alpha=momentum)  # type: ignore[union-attr]
        bn.running_var.mul_(1.0 - momentum).add_(var, alpha=momentum)  # type: ignore[union-attr]
        bn.num_batches_tracked.add_(1)  # type: ignore[union-attr]


def make_layer(op: P.Op) -> nn.Module:
    """The PyTorch module computing `op`."""
    if isinstance(op, P.Conv):
        args = (op.in_channels, op.out_channels, op.kernel_size, op.stride)
        if op.padding == "same":
            return SameConv2d(*args, groups=op.groups, bias=op.bias)
        if op.standardize is not None:
            return StdConv2d(*args, padding=op.padding, groups=op.groups, bias=op.bias, eps=op.standardize)
        return nn.Conv2d(*args, padding=op.padding, groups=op.groups, bias=op.bias)
    if isinstance(op, P.BatchNorm1d):
        cls1 = nn.BatchNorm1d if op.running_var == "unbiased" else BiasedBatchNorm1d
        return cls1(op.channels, eps=op.epsilon, momentum=torch_momentum(op.running_stats_decay))
    if isinstance(op, P.BatchNorm):
        cls = nn.BatchNorm2d if op.running_var == "unbiased" else BiasedBatchNorm2d
        return cls(op.channels, eps=op.epsilon, momentum=torch_momentum(op.running_stats_decay))
    if isinstance(op, P.GroupNorm):
        return nn.GroupNorm(op.groups, op.channels, eps=op.epsilon)
    if isinstance(op, P.EvoNormS0):
        return EvoNorm2dS0(op.channels, op.groups, op.epsilon, op.act)
    if isinstance(op, P.FilterResponseNorm):
        return FilterResponseNorm2d(op.channels, op.epsilon, op.tlu)
    if isinstance(op, P.ReLU):
        # in place, as torchvision's: a new tensor per ReLU made inference slower (benchmarks/README.md);
        # a forward hook that keeps an activation must copy it, as resnet-rosetta diff's do
        return nn.ReLU(inplace=True)
    if isinstance(op, P.SqueezeExcite):
        return SqueezeExcite(op.channels, op.reduced)
    if isinstance(op, P.EfficientChannelAttention):
        return EfficientChannelAttention(op.kernel_size)
    if isinstance(op, P.BlurPool):
        return BlurPool2d(op.channels, op.stride)
    if isinstance(op, P.MaxPool):
        if op.pad_value == "-inf" and op.padding != "same":
            return nn.MaxPool2d(op.size, op.stride, op.padding)
        return PaddedMaxPool2d(op.size, op.stride, op.padding, 0.0 if op.pad_value == "zero" else -math.inf)
    if isinstance(op, P.AvgPool):
        return nn.AvgPool2d(op.size, op.stride, ceil_mode=op.ceil_mode, count_include_pad=False)
    if isinstance(op, P.Subsample):
        return Subsample(op.stride)
    if isinstance(op, P.ChannelPad):
        return ChannelPad(op.extra)
    if isinstance(op, P.GlobalAvgPool):
        return GlobalAvgPool()
    if isinstance(op, P.GlobalPool):
        return GlobalPool(op.mode)
    if isinstance(op, P.Dropout):
        return nn.Dropout(op.rate)
    if isinstance(op, P.Linear):
        return nn.Linear(op.in_features, op.out_features, bias=op.bias)
    if isinstance(op, P.Softmax):
        return nn.Softmax(dim=1)
    raise TypeError(f"no PyTorch layer for {type(op).__name__}")


def classifier(spec: ResNetSpec) -> nn.Module:
    """The spec's `fc` as torchvision and timm models hold it: one nn.Linear, or the
    nn.Sequential of a fine-tuned classifier whose entries are `fc.0`, `fc.1`, ..."""
    ops = [op for op in make_plan(spec).head if op.name == "fc" or op.name.startswith("fc.")]
    if not spec.head.sequential:
        return make_layer(ops[0])
    return nn.Sequential(*(make_layer(op) for op in ops))


def install(parent: nn.Module, ops: tuple[P.Op, ...], prefix: str = "") -> tuple[str, ...]:
    """Register each op's module under its canonical name relative to `prefix`.

    Dotted names (`downsample.0`, timm's `conv1.3`) go into an nn.Sequential, so the
    state_dict keys are the canonical names. Returns the direct children to call, in order.
    """
    order: list[str] = []
    for op in ops:
        path = op.name[len(prefix) :].split(".")
        if len(path) == 1:
            parent.add_module(path[0], make_layer(op))
        else:
            head, index = path
            if head not in parent._modules:
                parent.add_module(head, nn.Sequential())
            parent._modules[head].add_module(index, make_layer(op))  # type: ignore[union-attr]
        if path[0] not in order:
            order.append(path[0])
    return tuple(order)


def run(parent: nn.Module, names: tuple[str, ...], x: torch.Tensor) -> torch.Tensor:
    """Apply the named children of `parent` in order."""
    for name in names:
        x = parent._modules[name](x)  # type: ignore[misc]
    return x
