"""The layer plan: one spec turned into named layers, shared by both builders.

`make_plan(spec)` decides, once, every layer of the network: its canonical name,
channels, kernel, stride, padding and bias. The PyTorch and Keras builders only
translate each op type into their framework's layer, so they cannot disagree about
the architecture. Canonical names are torchvision's state_dict prefixes where
torchvision has the layer (`conv1`, `layer2.0.downsample.0`, `fc`), timm's for the
deep stem (`conv1.0` ... `conv1.6`) and the "D" shortcut (`downsample.1`), and named
the same way elsewhere (`post_bn` of pre-activation nets, after keras.applications).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Union

from shared_specs.spec import ResNetSpec

Padding = Union[int, Literal["same"]]


@dataclass(frozen=True)
class Conv:
    """2-D convolution; `padding` is symmetric pixels, or Keras/TensorFlow 'same'."""

    name: str
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    padding: Padding
    groups: int
    bias: bool


@dataclass(frozen=True)
class BatchNorm:
    """BatchNorm over channels; `running_var` is the spec's "unbiased" or "biased" update."""

    name: str
    channels: int
    epsilon: float
    running_stats_decay: float
    running_var: Literal["unbiased", "biased"] = "unbiased"


@dataclass(frozen=True)
class ReLU:
    name: str


@dataclass(frozen=True)
class MaxPool:
    """Max-pool; `pad_value` is "-inf" (PyTorch) or "zero" (a ZeroPadding2D before it)."""

    name: str
    size: int
    stride: int
    padding: Padding
    pad_value: Literal["-inf", "zero"]


@dataclass(frozen=True)
class AvgPool:
    """Average pool in ceil mode that leaves padding out of the mean (timm's avg_down)."""

    name: str
    size: int
    stride: int


@dataclass(frozen=True)
class Subsample:
    """Strided identity: keeps every `stride`-th row and column (x[..., ::s, ::s])."""

    name: str
    stride: int


@dataclass(frozen=True)
class ChannelPad:
    """Appends `extra` all-zero channels (the paper's option A shortcut)."""

    name: str
    extra: int


@dataclass(frozen=True)
class GlobalAvgPool:
    name: str


@dataclass(frozen=True)
class Linear:
    name: str
    in_features: int
    out_features: int


@dataclass(frozen=True)
class Softmax:
    name: str


Op = Union[Conv, BatchNorm, ReLU, MaxPool, AvgPool, Subsample, ChannelPad, GlobalAvgPool, Linear, Softmax]


@dataclass(frozen=True)
class Block:
    """A residual block: out = post(main(pre(x)) + shortcut(pre(x) or x)).

    `pre` is the pre-activation BN + ReLU of v2 blocks (empty in v1). An empty
    `shortcut` is the identity. `shortcut_reads_pre` says whether the shortcut sees
    the pre-activated input (v2 projections) or the block input.
    """

    name: str
    in_channels: int
    out_channels: int
    stride: int
    pre: tuple[Op, ...]
    main: tuple[Op, ...]
    shortcut: tuple[Op, ...]
    shortcut_reads_pre: bool
    post: tuple[Op, ...]

    def ops(self) -> Iterator[Op]:
        yield from self.pre
        yield from self.main
        yield from self.shortcut
        yield from self.post

    def local(self, op: Op) -> str:
        """The op's name relative to the block (`layer1.0.conv1` -> `conv1`)."""
        return op.name[len(self.name) + 1 :]

    @property
    def last_bn(self) -> BatchNorm | None:
        """The BatchNorm closing the residual branch (zero-initialised on request)."""
        last = self.main[-1]
        return last if isinstance(last, BatchNorm) else None


@dataclass(frozen=True)
class Stage:
    name: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Plan:
    """Every layer of a spec's network, in execution order, with canonical names."""

    spec: ResNetSpec
    stem: tuple[Op, ...]
    stages: tuple[Stage, ...]
    post: tuple[Op, ...]
    head: tuple[Op, ...]

    def ops(self) -> Iterator[Op]:
        yield from self.stem
        for stage in self.stages:
            for block in stage.blocks:
                yield from block.ops()
        yield from self.post
        yield from self.head

    def blocks(self) -> Iterator[Block]:
        for stage in self.stages:
            yield from stage.blocks

    def tensors(self) -> Iterator[tuple[str, tuple[int, ...], bool]]:
        """(canonical tensor name, torch-layout shape, trainable) for every weight."""
        for op in self.ops():
            yield from op_tensors(op)


BN_BUFFERS = ("running_mean", "running_var")
# torchvision's BatchNorm2d also stores an int64 step counter; it does not change
# what the network computes (only momentum=None uses it), Keras has no counterpart,
# so canonical weights leave it out and importers accept and ignore it.
IGNORED_SUFFIXES = ("num_batches_tracked",)


def op_tensors(op: Op) -> Iterator[tuple[str, tuple[int, ...], bool]]:
    """The canonical tensors one op owns: (name, torch-layout shape, trainable)."""
    if isinstance(op, Conv):
        k = op.kernel_size
        yield f"{op.name}.weight", (op.out_channels, op.in_channels // op.groups, k, k), True
        if op.bias:
            yield f"{op.name}.bias", (op.out_channels,), True
    elif isinstance(op, BatchNorm):
        yield f"{op.name}.weight", (op.channels,), True
        yield f"{op.name}.bias", (op.channels,), True
        for buffer in BN_BUFFERS:
            yield f"{op.name}.{buffer}", (op.channels,), False
    elif isinstance(op, Linear):
        yield f"{op.name}.weight", (op.out_features, op.in_features), True
        yield f"{op.name}.bias", (op.out_features,), True


def make_plan(spec: ResNetSpec) -> Plan:
    """Lay out every layer of `spec`."""
    return _Planner(spec).plan()


class _Planner:
    def __init__(self, spec: ResNetSpec) -> None:
        self.spec = spec

    # -- small factories ------------------------------------------------------

    def pad(self, kernel_size: int) -> Padding:
        return "same" if self.spec.padding == "same" else kernel_size // 2

    def bias(self, followed_by_bn: bool) -> bool:
        return {"none": False, "all": True, "unnormalized": not followed_by_bn}[self.spec.conv_bias]

    def conv(self, name: str, cin: int, cout: int, k: int, stride: int = 1, *, groups: int = 1,
             followed_by_bn: bool = True, padding: Padding | None = None) -> Conv:
        if padding is None:
            padding = self.pad(k)
        return Conv(name, cin, cout, k, stride, padding, groups, self.bias(followed_by_bn))

    def bn(self, name: str, channels: int) -> BatchNorm:
        b = self.spec.batchnorm
        return BatchNorm(name, channels, b.epsilon, b.running_stats_decay, b.running_var)

    # -- the network ----------------------------------------------------------

    def plan(self) -> Plan:
        stem, channels = self.stem()
        stages = []
        for i, stage_spec in enumerate(self.spec.stages, start=1):
            blocks = []
            for j in range(stage_spec.depth):
                first, last = j == 0, j == stage_spec.depth - 1
                strided = first if self.spec.stride_position == "first" else last
                block = self.block(f"layer{i}.{j}", channels, stage_spec.width, stage_spec.stride if strided else 1)
                blocks.append(block)
                channels = block.out_channels
            stages.append(Stage(f"layer{i}", tuple(blocks)))
        post: tuple[Op, ...] = ()
        if self.spec.preactivation:
            post = (self.bn("post_bn", channels), ReLU("post_relu"))
        head: tuple[Op, ...] = ()
        if self.spec.num_classes is not None:
            head = (GlobalAvgPool("avgpool"), Linear("fc", channels, self.spec.num_classes))
            if self.spec.head_activation == "softmax":
                head += (Softmax("softmax"),)
        return Plan(self.spec, stem, tuple(stages), post, head)

    def stem(self) -> tuple[tuple[Op, ...], int]:
        s = self.spec.stem
        ops: list[Op] = []
        cin = self.spec.in_channels
        deep = len(s.widths) > 1
        for i, width in enumerate(s.widths):
            last = i == len(s.widths) - 1
            name = f"conv1.{3 * i}" if deep else "conv1"
            if i == 0:
                padding = s.padding if s.padding is not None else self.pad(s.kernel_size)
                ops.append(self.conv(name, cin, width, s.kernel_size, s.stride,
                                     followed_by_bn=s.norm or not last, padding=padding))
            else:
                ops.append(self.conv(name, cin, width, s.kernel_size, followed_by_bn=s.norm or not last))
            if not last:  # timm's deep stem: conv, BN, ReLU at indices 3i, 3i+1, 3i+2
                ops += [self.bn(f"conv1.{3 * i + 1}", width), ReLU(f"conv1.{3 * i + 2}")]
            cin = width
        if s.norm:
            ops += [self.bn("bn1", cin), ReLU("relu")]
        if s.pool == "max":
            padding = s.pool_padding if s.pool_padding is not None else self.pad(s.pool_size)
            ops.append(MaxPool("maxpool", s.pool_size, s.pool_stride, padding, s.pool_pad_value))
        return tuple(ops), cin

    def block(self, name: str, cin: int, width: int, stride: int) -> Block:
        spec = self.spec
        cout = width * spec.expansion
        preact = spec.preactivation
        n = f"{name}."
        pre: tuple[Op, ...] = (self.bn(n + "bn1", cin), ReLU(n + "relu1")) if preact else ()
        # In v1 BN k follows conv k; in v2 (pre-activation) BN k precedes conv k.
        bn_of = (lambda k, c: self.bn(f"{n}bn{k + 1}", c)) if preact else (lambda k, c: self.bn(f"{n}bn{k}", c))
        relu_of = (lambda k: ReLU(f"{n}relu{k + 1}")) if preact else (lambda k: ReLU(f"{n}relu{k}"))
        main: list[Op] = []
        if spec.block == "basic":
            convs = [(cin, cout, 3, stride, 1), (cout, cout, 3, 1, 1)]
        else:
            mid = spec.bottleneck_width(width)
            s1, s3 = (stride, 1) if spec.bottleneck_stride == "1x1" else (1, stride)
            convs = [(cin, mid, 1, s1, 1), (mid, mid, 3, s3, spec.groups), (mid, cout, 1, 1, 1)]
        for k, (ci, co, ks, st, groups) in enumerate(convs, start=1):
            last = k == len(convs)
            main.append(self.conv(f"{n}conv{k}", ci, co, ks, st, groups=groups, followed_by_bn=not (preact and last)))
            if preact and last:
                break
            main.append(bn_of(k, co))
            if not last:
                main.append(relu_of(k))
        shortcut = self.shortcut(n, cin, cout, stride)
        post: tuple[Op, ...] = () if preact else (ReLU(n + "relu"),)
        reads_pre = preact and any(isinstance(op, Conv) for op in shortcut)
        return Block(name, cin, cout, stride, pre, tuple(main), shortcut, reads_pre, post)

    def shortcut(self, n: str, cin: int, cout: int, stride: int) -> tuple[Op, ...]:
        kind = self.spec.shortcut
        reshapes = cin != cout or stride != 1
        with_bn = not self.spec.preactivation  # v2 projections are a bare conv (with bias in keras)

        def projection(first_index: int, conv_stride: int) -> tuple[Op, ...]:
            conv = self.conv(f"{n}downsample.{first_index}", cin, cout, 1, conv_stride, followed_by_bn=with_bn)
            return (conv, self.bn(f"{n}downsample.{first_index + 1}", cout)) if with_bn else (conv,)

        if kind == "A":
            ops: tuple[Op, ...] = (Subsample(n + "subsample", stride),) if stride != 1 else ()
            return ops + ((ChannelPad(n + "channel_pad", cout - cin),) if cout != cin else ())
        if kind == "C" or (kind == "B" and reshapes) or (kind == "B-subsample" and cin != cout):
            return projection(0, stride)
        if kind == "B-subsample" and stride != 1:
            return (Subsample(n + "subsample", stride),)
        if kind == "D" and reshapes:
            # timm keeps index 0 for the pool (an Identity when unstrided), so the
            # projection is downsample.1/.2 whatever the stride.
            pool: tuple[Op, ...] = (AvgPool(n + "downsample.0", 2, stride),) if stride != 1 else ()
            return pool + projection(1, 1)
        return ()

