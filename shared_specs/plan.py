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

from shared_specs.errors import SpecError
from shared_specs.spec import ResNetSpec, StageSpec

Padding = Union[int, Literal["same"]]


@dataclass(frozen=True)
class Conv:
    """2-D convolution; `padding` is symmetric pixels, or Keras/TensorFlow 'same'.
    `standardize` is the epsilon of weight standardisation (BiT's StdConv2d), or None."""

    name: str
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    padding: Padding
    groups: int
    bias: bool
    standardize: float | None = None


@dataclass(frozen=True)
class BatchNorm:
    """BatchNorm over channels; `running_var` is the spec's "unbiased" or "biased" update."""

    name: str
    channels: int
    epsilon: float
    running_stats_decay: float
    running_var: Literal["unbiased", "biased"] = "unbiased"


@dataclass(frozen=True)
class GroupNorm:
    """GroupNorm: statistics over `groups` groups of channels and H, W, per example."""

    name: str
    channels: int
    groups: int
    epsilon: float


@dataclass(frozen=True)
class EvoNormS0:
    """EvoNorm-S0 (timm's EvoNorm2dS0): x * sigmoid(v * x) / group_std(x) * weight + bias;
    with `act` False only x * weight + bias (timm's apply_act=False)."""

    name: str
    channels: int
    groups: int
    epsilon: float
    act: bool


@dataclass(frozen=True)
class FilterResponseNorm:
    """FRN (timm's FilterResponseNormTlu2d): x / sqrt(mean over H, W of x^2 + epsilon) *
    weight + bias, then with `tlu` max(., tau)."""

    name: str
    channels: int
    epsilon: float
    tlu: bool


@dataclass(frozen=True)
class BatchNorm1d(BatchNorm):
    """BatchNorm over the features of a (N, F) tensor: a classifier's nn.BatchNorm1d, whose
    Keras twin is BatchNormalization over the last axis. The same tensors as BatchNorm."""


Norm = Union[BatchNorm, GroupNorm, EvoNormS0, FilterResponseNorm]
NORM_OPS = (BatchNorm, GroupNorm, EvoNormS0, FilterResponseNorm)


@dataclass(frozen=True)
class ReLU:
    name: str


@dataclass(frozen=True)
class SqueezeExcite:
    """x * sigmoid(fc2(relu(fc1(mean over H, W of x)))), fc1/fc2 1x1 convs with bias."""

    name: str
    channels: int
    reduced: int


@dataclass(frozen=True)
class EfficientChannelAttention:
    """x * sigmoid(conv1d over the channel axis of mean over H, W of x), no bias, zero padding."""

    name: str
    channels: int
    kernel_size: int


@dataclass(frozen=True)
class BlurPool:
    """Anti-aliased downsampling (timm's BlurPool2d): reflect-pad 1, then the binomial
    [1, 2, 1] x [1, 2, 1] / 16 filter per channel with `stride`."""

    name: str
    channels: int
    stride: int


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
    """Unpadded average pool: in ceil mode, a partial last window averaging only real
    pixels (timm's avg_down), or in floor mode dropping it (timm's avg anti-aliasing)."""

    name: str
    size: int
    stride: int
    ceil_mode: bool = True


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
class GlobalPool:
    """Global pooling other than the average (which stays GlobalAvgPool, as every existing
    plan has it): "max", "avgmax" (0.5 * (avg + max)) or "catavgmax" ([avg, max] along the
    channels, as timm's SelectAdaptivePool2d concatenates them)."""

    name: str
    mode: Literal["max", "avgmax", "catavgmax"]


@dataclass(frozen=True)
class Dropout:
    """Dropout with probability `rate` in training, the identity in eval mode."""

    name: str
    rate: float


@dataclass(frozen=True)
class Linear:
    name: str
    in_features: int
    out_features: int
    bias: bool = True


@dataclass(frozen=True)
class Softmax:
    name: str


Op = Union[Conv, BatchNorm, GroupNorm, EvoNormS0, FilterResponseNorm, ReLU, SqueezeExcite, EfficientChannelAttention,
           BlurPool, MaxPool, AvgPool, Subsample, ChannelPad, GlobalAvgPool, GlobalPool, Dropout, Linear, Softmax]


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
    def last_bn(self) -> Norm | None:
        """The norm closing the residual branch (zero-initialised on request), before any attention."""
        for op in reversed(self.main):
            if isinstance(op, NORM_OPS):
                return op
            if not isinstance(op, (SqueezeExcite, EfficientChannelAttention)):
                return None
        return None


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
    elif isinstance(op, NORM_OPS):
        yield f"{op.name}.weight", (op.channels,), True
        yield f"{op.name}.bias", (op.channels,), True
        if isinstance(op, BatchNorm):
            for buffer in BN_BUFFERS:
                yield f"{op.name}.{buffer}", (op.channels,), False
        elif isinstance(op, EvoNormS0) and op.act:
            yield f"{op.name}.v", (op.channels,), True
        elif isinstance(op, FilterResponseNorm) and op.tlu:
            yield f"{op.name}.tau", (op.channels,), True
    elif isinstance(op, SqueezeExcite):
        yield f"{op.name}.fc1.weight", (op.reduced, op.channels, 1, 1), True
        yield f"{op.name}.fc1.bias", (op.reduced,), True
        yield f"{op.name}.fc2.weight", (op.channels, op.reduced, 1, 1), True
        yield f"{op.name}.fc2.bias", (op.channels,), True
    elif isinstance(op, EfficientChannelAttention):
        yield f"{op.name}.conv.weight", (1, 1, op.kernel_size), True
    elif isinstance(op, Linear):
        yield f"{op.name}.weight", (op.out_features, op.in_features), True
        if op.bias:
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
        if cin % groups or cout % groups:
            raise SpecError(f"{name}: {cin} -> {cout} channels do not split into {groups} groups")
        return Conv(name, cin, cout, k, stride, padding, groups, self.bias(followed_by_bn),
                    self.spec.std_conv_epsilon)

    def norm(self, name: str, channels: int, relu: str | None = None) -> tuple[Op, ...]:
        """The spec's norm layer, followed by a ReLU named `relu` if given. EvoNorm-S0 and
        FRN carry their own activation: one op, named `name`, does both."""
        kind, s = self.spec.norm.kind, self.spec.norm
        if kind in ("groupnorm", "evonorm_s0") and channels % s.groups:
            raise SpecError(f"{name}: {channels} channels do not split into norm.groups={s.groups} groups")
        if kind == "evonorm_s0":
            return (EvoNormS0(name, channels, s.groups, s.epsilon, act=relu is not None),)
        if kind == "frn":
            return (FilterResponseNorm(name, channels, s.epsilon, tlu=relu is not None),)
        if kind == "groupnorm":
            op: Op = GroupNorm(name, channels, s.groups, s.epsilon)
        else:
            b = self.spec.batchnorm
            op = BatchNorm(name, channels, b.epsilon, b.running_stats_decay, b.running_var)
        return (op, ReLU(relu)) if relu is not None else (op,)

    def anti_alias(self, name: str, channels: int, stride: int) -> Op:
        """What takes a stride-2 conv's or pool's stride under the spec's anti_alias."""
        if self.spec.anti_alias == "blur":
            return BlurPool(name, channels, stride)
        return AvgPool(name, 2, stride, ceil_mode=False)  # timm's nn.AvgPool2d(2): floor, no padding

    # -- the network ----------------------------------------------------------

    def plan(self) -> Plan:
        stem, channels = self.stem()
        stages = []
        for i, stage_spec in enumerate(self.spec.stages, start=1):
            blocks = []
            widths = self.block_widths(stage_spec)
            for j in range(stage_spec.depth):
                first, last = j == 0, j == stage_spec.depth - 1
                strided = first if self.spec.stride_position == "first" else last
                block = self.block(f"layer{i}.{j}", stage_spec, channels, widths[j],
                                   stage_spec.stride if strided else 1)
                blocks.append(block)
                channels = block.out_channels
            stages.append(Stage(f"layer{i}", tuple(blocks)))
        post: tuple[Op, ...] = self.norm("post_bn", channels, "post_relu") if self.spec.preactivation else ()
        head = self.head(channels) if self.spec.num_classes is not None else ()
        return Plan(self.spec, stem, tuple(stages), post, head)

    def head(self, channels: int) -> tuple[Op, ...]:
        """Pool, timm's dropout, then the classifier: `fc` (one Linear), or `fc.0`, `fc.1`, ...
        by position in a fine-tuned nn.Sequential; then the final activation."""
        h, b = self.spec.head, self.spec.batchnorm
        ops: list[Op] = [GlobalAvgPool("avgpool") if h.pool == "avg" else GlobalPool("global_pool", h.pool)]
        features = 2 * channels if h.pool == "catavgmax" else channels
        if h.dropout:
            ops.append(Dropout("head_drop", h.dropout))
        for i, layer in enumerate(h.layers):
            name = f"fc.{i}"
            if layer.kind == "linear":
                ops.append(Linear(name, features, layer.features, layer.bias))  # type: ignore[arg-type]
                features = layer.features  # type: ignore[assignment]
            elif layer.kind == "batchnorm":
                ops.append(BatchNorm1d(name, features, b.epsilon, b.running_stats_decay, b.running_var))
            elif layer.kind == "dropout":
                ops.append(Dropout(name, layer.rate))  # type: ignore[arg-type]
            else:
                ops.append(ReLU(name))
        ops.append(Linear(f"fc.{len(h.layers)}" if h.sequential else "fc", features, self.spec.num_classes))
        if self.spec.head_activation == "softmax":
            ops.append(Softmax("softmax"))
        return tuple(ops)

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
            if not last:  # timm's deep stem: conv, norm, act at indices 3i, 3i+1, 3i+2
                ops += self.norm(f"conv1.{3 * i + 1}", width, f"conv1.{3 * i + 2}")
            cin = width
        if s.norm:
            ops += self.norm("bn1", cin, "relu")
        ops += self.stem_pool(cin)
        return tuple(ops), cin

    def stem_pool(self, channels: int) -> tuple[Op, ...]:
        """The stem's pool under timm's name `maxpool`: a max-pool, ResNet-RS's strided conv
        (`maxpool.0` conv, `.1` norm), either one anti-aliased, or nothing."""
        s, aa = self.spec.stem, self.spec.anti_alias
        if s.pool == "none":
            return ()
        if s.pool == "conv":
            if aa == "none":
                conv = self.conv("maxpool.0", channels, channels, 3, 2)
                return (conv, *self.norm("maxpool.1", channels, "maxpool.2"))
            return (self.conv("maxpool.0", channels, channels, 3, 1), self.anti_alias("maxpool.1", channels, 2),
                    *self.norm("maxpool.2", channels, "maxpool.3"))
        padding = s.pool_padding if s.pool_padding is not None else self.pad(s.pool_size)
        if aa == "avg":  # timm swaps the max-pool for nn.AvgPool2d(2)
            return (AvgPool("maxpool", 2, 2, ceil_mode=False),)
        if aa == "blur":  # a max over each window at stride 1, then the blurred stride 2
            return (MaxPool("maxpool.0", s.pool_size, 1, padding, s.pool_pad_value),
                    BlurPool("maxpool.1", channels, s.pool_stride))
        return (MaxPool("maxpool", s.pool_size, s.pool_stride, padding, s.pool_pad_value),)

    def block_widths(self, stage: StageSpec) -> tuple[tuple[int, ...], ...]:
        """Each block's conv output widths: given outright (pruned nets), or the formula."""
        if stage.block_widths is not None:
            return stage.block_widths
        r = self.spec.reduce_first
        if self.spec.block_of(stage) == "basic":
            widths: tuple[int, ...] = (stage.width // r, stage.width)
        else:
            mid = self.spec.bottleneck_width(stage.width)
            widths = (mid // r, mid, stage.width * 4)
        if min(widths) < 1:
            raise SpecError(f"reduce_first={r} leaves no channels in a block of width {stage.width}")
        return (widths,) * stage.depth

    def block(self, name: str, stage: StageSpec, cin: int, widths: tuple[int, ...], stride: int) -> Block:
        spec = self.spec
        cout = widths[-1]
        preact = spec.preactivation
        n = f"{name}."
        pre: tuple[Op, ...] = self.norm(n + "bn1", cin, n + "relu1") if preact else ()
        if spec.block_of(stage) == "basic":
            convs = [(cin, widths[0], 3, stride, 1), (widths[0], cout, 3, 1, 1)]
        else:
            first, mid = widths[0], widths[1]
            s1, s3 = (stride, 1) if spec.bottleneck_stride == "1x1" else (1, stride)
            convs = [(cin, first, 1, s1, 1), (first, mid, 3, s3, spec.groups), (mid, cout, 1, 1, 1)]
        main: list[Op] = []
        for k, (ci, co, ks, st, groups) in enumerate(convs, start=1):
            last = k == len(convs)
            aa = spec.anti_alias != "none" and st > 1
            main.append(self.conv(f"{n}conv{k}", ci, co, ks, 1 if aa else st, groups=groups,
                                  followed_by_bn=not (preact and last)))
            if preact and last:
                break
            # In v1 norm k follows conv k; in v2 (pre-activation) norm k precedes conv k.
            index = k + 1 if preact else k
            main += self.norm(f"{n}bn{index}", co, None if last else f"{n}relu{index}")
            if aa:  # timm: the stride moves after the conv's activation
                main.append(self.anti_alias(f"{n}aa", co, st))
        if spec.attention is not None:
            nominal = stage.width * (4 if spec.block_of(stage) == "bottleneck" else 1)
            main.append(self.attention(f"{n}se", cout, nominal))
        shortcut = self.shortcut(n, cin, cout, stride, stage.always_project and name.endswith(".0"))
        post: tuple[Op, ...] = () if preact else (ReLU(n + "relu"),)
        reads_pre = preact and any(isinstance(op, Conv) for op in shortcut)
        return Block(name, cin, cout, stride, pre, tuple(main), shortcut, reads_pre, post)

    def attention(self, name: str, channels: int, nominal: int) -> Op:
        a = self.spec.attention
        assert a is not None
        if a.kind == "se":
            return SqueezeExcite(name, channels, a.se_width(channels))
        # timm sizes ECA's kernel at construction, from the unpruned width
        return EfficientChannelAttention(name, channels, a.eca_kernel_size(nominal))

    def shortcut(self, n: str, cin: int, cout: int, stride: int, project: bool = False) -> tuple[Op, ...]:
        """The block's shortcut ops; `project` forces a projection (StageSpec.always_project)."""
        kind = self.spec.shortcut
        reshapes = cin != cout or stride != 1 or project
        with_norm = not self.spec.preactivation  # v2 projections are a bare conv (with bias in keras)

        def projection(first_index: int, conv_stride: int) -> tuple[Op, ...]:
            k = self.spec.shortcut_kernel_size if conv_stride > 1 else 1  # timm: 1x1 unless strided
            conv = self.conv(f"{n}downsample.{first_index}", cin, cout, k, conv_stride, followed_by_bn=with_norm)
            return (conv, *self.norm(f"{n}downsample.{first_index + 1}", cout)) if with_norm else (conv,)

        if kind == "A":
            ops: tuple[Op, ...] = (Subsample(n + "subsample", stride),) if stride != 1 else ()
            return ops + ((ChannelPad(n + "channel_pad", cout - cin),) if cout != cin else ())
        if kind == "C" or (kind == "B" and reshapes) or (kind == "B-subsample" and (cin != cout or project)):
            return projection(0, stride)
        if kind == "B-subsample" and stride != 1:
            return (Subsample(n + "subsample", stride),)
        if kind == "D" and reshapes:
            # timm keeps index 0 for the pool (an Identity when unstrided), so the
            # projection is downsample.1/.2 whatever the stride.
            pool: tuple[Op, ...] = (AvgPool(n + "downsample.0", 2, stride),) if stride != 1 else ()
            return pool + projection(1, 1)
        return ()
