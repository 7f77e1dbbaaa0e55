"""Parameter, FLOP and shape arithmetic on a plan, without any framework.

FLOPs are counted as multiply-accumulates (MACs) of convolutions and the classifier,
the convention of He et al. 2015 Table 1 and of torchvision's published "GFLOPS"
(resnet50: 4.09e9 at 224x224); the convolutions include those inside attention (SE's
two 1x1 convs, ECA's Conv1d) and BlurPool's fixed 3x3 filter. Norms, activations,
pooling and additions are left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shared_specs.errors import SpecError
from shared_specs.plan import (
    AvgPool,
    BlurPool,
    ChannelPad,
    Conv,
    EfficientChannelAttention,
    GlobalAvgPool,
    GlobalPool,
    Linear,
    MaxPool,
    Op,
    Padding,
    Plan,
    SqueezeExcite,
    Subsample,
    make_plan,
    op_tensors,
)
from shared_specs.spec import ResNetSpec

Shape = tuple[int, ...]  # (C, H, W) for feature maps, (F,) after pooling


@dataclass(frozen=True)
class ParamCount:
    """`trainable` is what torchvision reports; Keras's count_params adds `buffers`."""

    trainable: int
    buffers: int

    @property
    def total(self) -> int:
        return self.trainable + self.buffers


@dataclass(frozen=True)
class LayerRow:
    """One layer of `layer_table`: canonical name, op kind, output shape, cost."""

    name: str
    kind: str
    output_shape: Shape
    params: int
    macs: int


def count_params(spec: ResNetSpec) -> ParamCount:
    """Trainable parameters and BatchNorm running statistics of `spec`."""
    trainable = buffers = 0
    for _, shape, is_trainable in make_plan(spec).tensors():
        if is_trainable:
            trainable += math.prod(shape)
        else:
            buffers += math.prod(shape)
    return ParamCount(trainable, buffers)


def count_flops(spec: ResNetSpec, input_hw: tuple[int, int] = (224, 224)) -> int:
    """Multiply-accumulates of one forward pass on one `input_hw` image."""
    return sum(row.macs for row in layer_table(spec, input_hw))


def layer_table(spec: ResNetSpec, input_hw: tuple[int, int] = (224, 224)) -> list[LayerRow]:
    """Every layer in execution order with its output shape, parameters and MACs.

    Raises SpecError when the input is too small for the network (a layer would
    produce an empty feature map).
    """
    plan = make_plan(spec)
    return _walk(plan, (spec.in_channels, *input_hw))


def output_shape(spec: ResNetSpec, input_hw: tuple[int, int] = (224, 224)) -> Shape:
    """Shape of the network's output for one image (without the batch axis)."""
    return layer_table(spec, input_hw)[-1].output_shape


def _walk(plan: Plan, shape: Shape) -> list[LayerRow]:
    rows: list[LayerRow] = []

    def run(ops: tuple[Op, ...], x: Shape) -> Shape:
        for op in ops:
            x = _out_shape(op, x)
            params = sum(math.prod(s) for _, s, _ in op_tensors(op))
            rows.append(LayerRow(op.name, type(op).__name__, x, params, _macs(op, x)))
        return x

    shape = run(plan.stem, shape)
    for block in plan.blocks():
        pre = run(block.pre, shape)
        main = run(block.main, pre)
        short = run(block.shortcut, pre if block.shortcut_reads_pre else shape)
        if main != short:  # cannot happen for a valid spec; guards the planner itself
            raise SpecError(f"{block.name}: residual branch gives {main} but the shortcut gives {short}")
        shape = run(block.post, main)
    shape = run(plan.post, shape)
    run(plan.head, shape)
    return rows


def _spatial(name: str, n: int, k: int, s: int, padding: Padding) -> int:
    out = math.ceil(n / s) if padding == "same" else (n + 2 * padding - k) // s + 1
    if out < 1:
        raise SpecError(f"input too small: {name} gets {n} pixels, fewer than its {k}x{k} window needs")
    return out


def _out_shape(op: Op, x: Shape) -> Shape:
    if isinstance(op, Conv):
        c, h, w = x
        if c != op.in_channels:  # guards the planner
            raise SpecError(f"{op.name} expects {op.in_channels} channels, gets {c}")
        return (op.out_channels, *(_spatial(op.name, n, op.kernel_size, op.stride, op.padding) for n in (h, w)))
    if isinstance(op, MaxPool):
        c, h, w = x
        return (c, *(_spatial(op.name, n, op.size, op.stride, op.padding) for n in (h, w)))
    if isinstance(op, AvgPool):
        # ceil mode, but a window may not start in the padding (PyTorch's rule)
        def ceil_out(n: int) -> int:
            out = -(-(n - op.size) // op.stride) + 1 if n >= op.size else 1
            return out - 1 if (out - 1) * op.stride >= n else out

        c, h, w = x
        if not op.ceil_mode:
            return (c, *(_spatial(op.name, n, op.size, op.stride, 0) for n in (h, w)))
        return (c, ceil_out(h), ceil_out(w))
    if isinstance(op, BlurPool):  # reflect-padded by 1 around a 3x3 window
        c, h, w = x
        if min(h, w) < 2:
            raise SpecError(f"input too small: {op.name} reflect-pads {h}x{w} pixels, which needs at least 2")
        return (c, *(_spatial(op.name, n, 3, op.stride, 1) for n in (h, w)))
    if isinstance(op, Subsample):
        c, h, w = x
        return (c, math.ceil(h / op.stride), math.ceil(w / op.stride))
    if isinstance(op, ChannelPad):
        c, h, w = x
        return (c + op.extra, h, w)
    if isinstance(op, GlobalAvgPool):
        return (x[0],)
    if isinstance(op, GlobalPool):
        return (2 * x[0] if op.mode == "catavgmax" else x[0],)
    if isinstance(op, Linear):
        return (op.out_features,)
    return x  # norms, ReLU, attention, Dropout, Softmax


def _macs(op: Op, out: Shape) -> int:
    if isinstance(op, Conv):
        _, h, w = out
        return h * w * op.out_channels * (op.in_channels // op.groups) * op.kernel_size**2
    if isinstance(op, Linear):
        return op.in_features * op.out_features
    if isinstance(op, SqueezeExcite):
        return 2 * op.channels * op.reduced
    if isinstance(op, EfficientChannelAttention):
        return op.channels * op.kernel_size
    if isinstance(op, BlurPool):
        _, h, w = out
        return 9 * op.channels * h * w
    return 0
