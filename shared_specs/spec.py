"""The framework-neutral description of a ResNet.

A `ResNetSpec` says everything that decides the function a ResNet computes and the
names and shapes of its tensors, and nothing about any framework. It is frozen and
validated on construction, so a spec that exists is a network both builders can make.
Every field is an explicit choice somebody's published network made; the docstrings
say whose.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any, Literal, NamedTuple

from shared_specs.errors import SpecError

BlockType = Literal["basic", "bottleneck"]
ShortcutType = Literal["A", "B", "B-subsample", "C", "D"]
SHORTCUTS: tuple[str, ...] = ("A", "B", "B-subsample", "C", "D")
NormKind = Literal["batchnorm", "groupnorm", "evonorm_s0", "frn"]
NORMS: tuple[str, ...] = ("batchnorm", "groupnorm", "evonorm_s0", "frn")
STEM_POOLS: tuple[str, ...] = ("max", "none", "conv")
ANTI_ALIAS: tuple[str, ...] = ("none", "blur", "avg")


@dataclass(frozen=True)
class StemSpec:
    """The layers before the first stage.

    `widths` has one entry per stem conv: `(64,)` is the ImageNet or CIFAR stem,
    `(32, 32, 64)` the "deep" 3x3 stem of ResNet-C/D (timm's resnet50d). The first
    conv uses `kernel_size`/`stride`/`padding`; later ones are `kernel_size` square,
    stride 1, each followed by BatchNorm + ReLU. `norm` puts BatchNorm + ReLU after
    the last conv (pre-activation networks and some tutorials leave it out).
    `padding=None` means `kernel_size // 2`, or Keras 'same' when the spec's
    `padding` is "same". `pool_pad_value` is what the max-pool pads with: PyTorch
    pads with -inf, keras.applications with a ZeroPadding2D ("zero"); the two agree
    only on non-negative inputs (trap 5). `pool="conv"` is ResNet-RS's stem (timm's
    replace_stem_pool): a strided 3x3 conv + norm + ReLU in the max-pool's place,
    under timm's name `maxpool` (`maxpool.0` conv, `maxpool.1` norm).
    """

    widths: tuple[int, ...] = (64,)
    kernel_size: int = 7
    stride: int = 2
    padding: int | None = None
    norm: bool = True
    pool: Literal["max", "none", "conv"] = "max"
    pool_size: int = 3
    pool_stride: int = 2
    pool_padding: int | None = None
    pool_pad_value: Literal["-inf", "zero"] = "-inf"

    def __post_init__(self) -> None:
        _coerce_tuple(self, "widths")
        if not self.widths:
            raise SpecError("stem.widths must name at least one conv width")
        for i, w in enumerate(self.widths):
            _check_int(f"stem.widths[{i}]", w, minimum=1)
        _check_int("stem.kernel_size", self.kernel_size, minimum=1)
        _check_int("stem.stride", self.stride, minimum=1)
        if self.padding is not None:
            _check_int("stem.padding", self.padding, minimum=0)
        _check_bool("stem.norm", self.norm)
        _check_choice("stem.pool", self.pool, STEM_POOLS)
        _check_int("stem.pool_size", self.pool_size, minimum=1)
        _check_int("stem.pool_stride", self.pool_stride, minimum=1)
        if self.pool_padding is not None:
            _check_int("stem.pool_padding", self.pool_padding, minimum=0)
            if 2 * self.pool_padding >= self.pool_size + 1 and self.pool == "max":
                raise SpecError(
                    f"stem.pool_padding={self.pool_padding} is too large for pool_size="
                    f"{self.pool_size}: a window could hold nothing but padding"
                )
        _check_choice("stem.pool_pad_value", self.pool_pad_value, ("-inf", "zero"))


@dataclass(frozen=True)
class StageSpec:
    """One stage ("layer1" ... in torchvision): `depth` blocks of base `width`.

    `width` is torchvision's `planes`: a basic block outputs `width` channels, a
    bottleneck `4 * width`, with an inner width of `width * width_per_group / 64 *
    groups`. `stride` is applied by one block of the stage (see
    `ResNetSpec.stride_position`).

    `block` gives this stage its own block type (timm's test_resnet mixes them);
    None takes the spec's. `block_widths` gives every block's conv output widths
    outright, one tuple per block ((conv1, conv2, conv3) for a bottleneck, (conv1,
    conv2) for a basic block), for pruned networks (timm's *_pruned models) whose
    widths follow no formula; `width` then stays the nominal width, which is what
    ECA's kernel size is computed from, as timm does.

    `always_project` gives the stage's first block a projection shortcut even where
    its shape does not change: PaddleClas's ResNet_vd and keras-hub's ResNetBackbone
    project in every stage's first block (keras-hub's basic_block excepted in the
    first stage); False leaves it to the spec's `shortcut`.
    """

    depth: int
    width: int
    stride: int = 1
    block: BlockType | None = None
    block_widths: tuple[tuple[int, ...], ...] | None = None
    always_project: bool = False

    def __post_init__(self) -> None:
        _check_int("depth", self.depth, minimum=1)
        _check_int("width", self.width, minimum=1)
        _check_int("stride", self.stride, minimum=1)
        if self.block is not None:
            _check_choice("block", self.block, ("basic", "bottleneck"))
        _check_bool("always_project", self.always_project)
        if self.block_widths is not None:
            _coerce_tuple(self, "block_widths")
            widths = tuple(tuple(w) if isinstance(w, list) else w for w in self.block_widths)
            object.__setattr__(self, "block_widths", widths)
            if len(widths) != self.depth:
                raise SpecError(f"block_widths lists {len(widths)} blocks, the stage has depth {self.depth}")
            for j, block in enumerate(widths):
                if not isinstance(block, tuple) or len(block) not in (2, 3):
                    raise SpecError(f"block_widths[{j}] must list the output widths of the block's 2 or 3 convs, "
                                    f"got {block!r}")
                for k, w in enumerate(block):
                    _check_int(f"block_widths[{j}][{k}]", w, minimum=1)


def width_per_group_of(inner: int, width: int, groups: int, where: str) -> int:
    """The `width_per_group` that gives a bottleneck of stage `width` and `groups` its
    `inner` width (the inverse of `ResNetSpec.bottleneck_width`); SpecError naming `where`
    if none does."""
    if (inner * 64) % (width * groups):
        raise SpecError(f"{where} has an inner width of {inner}, which is not width * width_per_group / 64 * groups "
                        f"for width {width} and groups {groups}")
    return inner * 64 // (width * groups)


def torch_momentum(running_stats_decay: float) -> float:
    """PyTorch's BatchNorm `momentum` for a running-stats decay: it weights the NEW batch,
    so 1 - decay, rounded to 12 digits so that 0.9 gives exactly 0.1 (trap 7)."""
    return round(1.0 - running_stats_decay, 12)


def decay_from_torch_momentum(momentum: float) -> float:
    """The running-stats decay of a PyTorch BatchNorm `momentum` (the inverse of `torch_momentum`)."""
    return round(1.0 - momentum, 12)


@dataclass(frozen=True)
class BatchNormSpec:
    """BatchNorm numerics, framework-neutral.

    `running_stats_decay` is the weight of the OLD running value:
    `running = decay * running + (1 - decay) * batch`. PyTorch's `momentum` is
    `1 - decay` (0.1 -> 0.9); Keras's `momentum` is `decay` itself (0.99). Naming
    the quantity avoids carrying one framework's "momentum" into the other (trap 7).

    `running_var` is the batch variance a training step folds into the running
    variance: "unbiased" (times n/(n-1), n values per channel) as torch.nn.BatchNorm2d
    does, or "biased" as keras.layers.BatchNormalization does (trap 8). Both builders
    honour it, so networks trained in either framework keep the same statistics.
    """

    epsilon: float = 1e-5
    running_stats_decay: float = 0.9
    running_var: Literal["unbiased", "biased"] = "unbiased"

    def __post_init__(self) -> None:
        _check_float("batchnorm.epsilon", self.epsilon)
        if not self.epsilon > 0:
            raise SpecError(f"batchnorm.epsilon must be > 0, got {self.epsilon!r}")
        _check_float("batchnorm.running_stats_decay", self.running_stats_decay)
        if not 0.0 <= self.running_stats_decay < 1.0:
            raise SpecError(
                "batchnorm.running_stats_decay is the weight of the old running value and must be in "
                f"[0, 1), got {self.running_stats_decay!r} (torch momentum=0.1 is decay 0.9)"
            )
        _check_choice("batchnorm.running_var", self.running_var, ("unbiased", "biased"))


@dataclass(frozen=True)
class NormSpec:
    """Which normalisation the norm layers are; BatchNorm's numerics stay in `batchnorm`.

    - "batchnorm": BatchNorm (torchvision, keras.applications; timm's BatchNormAct2d).
    - "groupnorm": GroupNorm over `groups` groups with `epsilon` (timm's resnet50_gn,
      resnetv2_50d_gn, BiT); no running statistics, so train and eval compute alike.
    - "evonorm_s0": EvoNorm-S0 (Liu et al. 2020, timm's EvoNorm2dS0): x * sigmoid(v * x)
      / group_std(x) * weight + bias, its own activation; without one (a norm closing
      a branch; timm's apply_act=False) it is only x * weight + bias, with no `v`.
    - "frn": Filter Response Normalisation + TLU (Singh & Krishnan 2020, timm's
      FilterResponseNormTlu2d): x / sqrt(mean(x^2 over H, W) + epsilon) * weight +
      bias, then max(., tau) as its activation.
    EvoNorm-S0 and FRN carry their activation, so no ReLU follows them.
    """

    kind: NormKind = "batchnorm"
    groups: int = 32
    epsilon: float = 1e-5

    def __post_init__(self) -> None:
        _check_choice("norm.kind", self.kind, NORMS)
        _check_int("norm.groups", self.groups, minimum=1)
        _check_float("norm.epsilon", self.epsilon)
        if not self.epsilon > 0:
            raise SpecError(f"norm.epsilon must be > 0, got {self.epsilon!r}")


@dataclass(frozen=True)
class AttentionSpec:
    """Channel attention inside each residual block, after its last norm and before the
    addition, under timm's module name `se` whatever its kind.

    - "se": squeeze-excitation (Hu et al. 2018) as timm's SEModule builds it: global
      mean, 1x1 conv with bias to `make_divisible(C * reduction, divisor)` channels
      (timm's rounding with round_limit 0: to the nearest multiple, never below
      `divisor`), ReLU, 1x1 conv with bias back to C, sigmoid, times the input.
      `layer1.0.se.fc1`, `layer1.0.se.fc2`.
    - "eca": efficient channel attention (Wang et al. 2020, timm's EcaModule): global
      mean, a Conv1d over the channel axis without bias, sigmoid, times the input. Its
      kernel size follows from the block's nominal width C: t = int(|log2(C) + beta| /
      gamma), k = t if odd else t + 1, at least 3. `layer1.0.se.conv`.
    """

    kind: Literal["se", "eca"]
    reduction: float = 1 / 16
    divisor: int = 8
    gamma: int = 2
    beta: int = 1

    def __post_init__(self) -> None:
        _check_choice("attention.kind", self.kind, ("se", "eca"))
        _check_float("attention.reduction", self.reduction)
        if not 0 < self.reduction <= 1:
            raise SpecError(f"attention.reduction must be in (0, 1], got {self.reduction!r}")
        _check_int("attention.divisor", self.divisor, minimum=1)
        _check_int("attention.gamma", self.gamma, minimum=1)
        _check_int("attention.beta", self.beta, minimum=0)

    def se_width(self, channels: int) -> int:
        """timm's make_divisible(channels * reduction, divisor, round_limit=0)."""
        v = channels * self.reduction
        return max(self.divisor, int(v + self.divisor / 2) // self.divisor * self.divisor)

    def eca_kernel_size(self, channels: int) -> int:
        t = int(abs(math.log(channels, 2) + self.beta) / self.gamma)
        return max(t if t % 2 else t + 1, 3)


HEAD_POOLS: tuple[str, ...] = ("avg", "max", "avgmax", "catavgmax")
HEAD_LAYERS: tuple[str, ...] = ("linear", "relu", "dropout", "batchnorm")


@dataclass(frozen=True)
class HeadLayerSpec:
    """One entry of a classifier written as an nn.Sequential, before its final Linear.

    - "linear": nn.Linear to `features` outputs (with `bias`);
    - "relu";
    - "dropout": nn.Dropout with probability `rate` (identity in eval mode);
    - "batchnorm": nn.BatchNorm1d over the features, with the spec's `batchnorm` numerics
      (Keras: BatchNormalization over the last axis).
    These are what fine-tuning puts in place of torchvision's `fc` (e.g. Linear, ReLU,
    Dropout, Linear); other layers have no counterpart in either builder.
    """

    kind: Literal["linear", "relu", "dropout", "batchnorm"]
    features: int | None = None
    bias: bool = True
    rate: float | None = None

    def __post_init__(self) -> None:
        _check_choice("kind", self.kind, HEAD_LAYERS)
        _check_bool("bias", self.bias)
        if self.kind == "linear":
            _check_int("features", self.features, minimum=1)
        elif self.features is not None or not self.bias:
            raise SpecError(f"features and bias belong to a linear layer, not a {self.kind} one")
        if self.kind == "dropout":
            _check_float("rate", self.rate)
            if not 0.0 <= self.rate < 1.0:  # type: ignore[operator]
                raise SpecError(f"rate is a dropout probability in [0, 1), got {self.rate!r}")
        elif self.rate is not None:
            raise SpecError(f"rate belongs to a dropout layer, not a {self.kind} one")


@dataclass(frozen=True)
class HeadSpec:
    """What follows the last stage when there is a classifier (`num_classes` set).

    - `pool`: global pooling of the last feature map: "avg" (torchvision), "max", or
      timm's "avgmax" (0.5 * (avg + max)) and "catavgmax" (avg and max concatenated,
      twice the features).
    - `dropout`: dropout after pooling, before the classifier and outside it (timm's
      `drop_rate`, applied functionally); 0 for none.
    - `layers`: what a fine-tuned `fc = nn.Sequential(...)` holds before its final
      Linear (HeadLayerSpec: Linear / ReLU / Dropout / BatchNorm1d). The final Linear
      has `num_classes` outputs, and `head_activation` follows it.
    - `sequential`: the classifier is an nn.Sequential, so its tensors are named as
      torchvision names them, `fc.0`, `fc.3`, ... by position; implied by any `layers`
      (set it alone for `fc = nn.Sequential(nn.Linear(...))`: `fc.0`). Otherwise it is
      the one nn.Linear `fc`.
    The default, avg-pool then one Linear `fc`, is torchvision's head, and what a
    stored spec without a `head` means.
    """

    pool: Literal["avg", "max", "avgmax", "catavgmax"] = "avg"
    dropout: float = 0.0
    layers: tuple[HeadLayerSpec, ...] = ()
    sequential: bool = False

    def __post_init__(self) -> None:
        _check_choice("head.pool", self.pool, HEAD_POOLS)
        _check_float("head.dropout", self.dropout)
        if not 0.0 <= self.dropout < 1.0:
            raise SpecError(f"head.dropout is a dropout probability in [0, 1), got {self.dropout!r}")
        _coerce_tuple(self, "layers")
        layers = tuple(_from_plain(HeadLayerSpec, v, f"head.layers[{i}].") if isinstance(v, dict) else v
                       for i, v in enumerate(self.layers))
        for i, layer in enumerate(layers):
            if not isinstance(layer, HeadLayerSpec):
                raise SpecError(f"head.layers[{i}] must be a HeadLayerSpec, got {type(layer).__name__}")
        object.__setattr__(self, "layers", layers)
        _check_bool("head.sequential", self.sequential)
        if layers:  # entries of an nn.Sequential: the final Linear is one too
            object.__setattr__(self, "sequential", True)

    def describe(self) -> str:
        """`avg pool -> Dropout(0.2) -> Linear(256) -> ReLU -> Linear`, for messages."""
        names = {"relu": "ReLU", "batchnorm": "BatchNorm1d"}
        parts = [f"{self.pool} pool"] + ([f"Dropout({self.dropout:g})"] if self.dropout else []) + [
            f"Linear({layer.features}{'' if layer.bias else ', no bias'})" if layer.kind == "linear" else
            f"Dropout({layer.rate:g})" if layer.kind == "dropout" else names[layer.kind] for layer in self.layers]
        return " -> ".join(parts + ["Linear"])


@dataclass(frozen=True, kw_only=True)
class ResNetSpec:
    """A whole ResNet; fields are keyword-only; docs/spec.md explains each with its source.

    - `block`: "basic" (two 3x3) or "bottleneck" (1x1, 3x3, 1x1, expansion 4).
    - `preactivation`: False for post-activation v1 (He et al. 2015), True for the
      pre-activation v2 of He et al. 2016 (keras.applications ResNet*V2).
    - `bottleneck_stride`: where a strided bottleneck puts its stride: "1x1" (the
      2015 paper, keras.applications ResNet50) or "3x3" (torchvision's "v1.5").
    - `stride_position`: which block of a stage is strided: "first" (paper,
      torchvision) or "last" (keras.applications V2).
    - `shortcut`: "A" parameter-free (strided identity, zero channels appended);
      "B" projection where the shape changes; "B-subsample" projection where the
      channels change and a strided identity where only the resolution does
      (keras.applications V2); "C" projection in every block; "D" average-pool then
      1x1 projection where the shape changes (Bag of Tricks, timm's "d" models).
    - `reduce_first`: the first conv of each block outputs 1/reduce_first of its
      usual width (SENet-154: 2; timm's block_reduce_first).
    - `shortcut_kernel_size`: kernel of strided projection shortcuts (SENet-154: 3,
      timm's down_kernel_size; unstrided projections stay 1x1 as in timm).
    - `attention`: squeeze-excitation or ECA in every block (AttentionSpec), or None.
    - `anti_alias`: "blur" or "avg" moves every stride-2 conv's stride of a block
      into a BlurPool (Zhang 2019; binomial 3x3, reflect padding) or a 2x2 average
      pool after its activation, and anti-aliases the stem pool likewise (timm's
      aa_layer); "none" strides as usual.
    - `conv_bias`: "none" (torchvision), "all" (keras.applications v1), or
      "unnormalized": only convs not directly followed by BatchNorm (V2).
    - `norm`: which normalisation (NormSpec: BatchNorm, GroupNorm, EvoNorm-S0, FRN).
    - `std_conv_epsilon`: weight-standardised convs (BiT's StdConv2d: each output
      channel's kernel minus its mean, over sqrt(variance + epsilon)), or None.
    - `padding`: "symmetric" pads `k // 2` on every side as PyTorch does; "same"
      is Keras/TensorFlow 'same', which pads (0, 1) for a stride-2 3x3 on even
      inputs (trap 4) and exists to reproduce Keras-native models.
    - `num_classes=None` drops pooling and classifier: the model returns the last
      feature map (like keras.applications `include_top=False`).
    - `head`: pooling, dropout and the layers of a fine-tuned classifier (HeadSpec);
      `num_classes` is its final Linear's outputs, `head_activation` what follows it.
    """

    name: str = "resnet"
    block: BlockType = "bottleneck"
    preactivation: bool = False
    stages: tuple[StageSpec, ...]
    bottleneck_stride: Literal["1x1", "3x3"] = "3x3"
    stride_position: Literal["first", "last"] = "first"
    shortcut: ShortcutType = "B"
    groups: int = 1
    width_per_group: int = 64
    reduce_first: int = 1
    shortcut_kernel_size: int = 1
    attention: AttentionSpec | None = None
    anti_alias: Literal["none", "blur", "avg"] = "none"
    stem: StemSpec = field(default_factory=StemSpec)
    conv_bias: Literal["none", "all", "unnormalized"] = "none"
    padding: Literal["symmetric", "same"] = "symmetric"
    batchnorm: BatchNormSpec = field(default_factory=BatchNormSpec)
    norm: NormSpec = field(default_factory=NormSpec)
    std_conv_epsilon: float | None = None
    zero_init_last_bn: bool = False
    in_channels: int = 3
    num_classes: int | None = 1000
    head_activation: Literal["none", "softmax"] = "none"
    head: HeadSpec = field(default_factory=HeadSpec)

    def __post_init__(self) -> None:
        _coerce_tuple(self, "stages")
        if not self.stages:
            raise SpecError("stages must hold at least one stage")
        for i, stage in enumerate(self.stages):
            if not isinstance(stage, StageSpec):
                raise SpecError(f"stages[{i}] must be a StageSpec, got {type(stage).__name__}")
        if not isinstance(self.stem, StemSpec):
            raise SpecError(f"stem must be a StemSpec, got {type(self.stem).__name__}")
        if not isinstance(self.batchnorm, BatchNormSpec):
            raise SpecError(f"batchnorm must be a BatchNormSpec, got {type(self.batchnorm).__name__}")
        if not isinstance(self.norm, NormSpec):
            raise SpecError(f"norm must be a NormSpec, got {type(self.norm).__name__}")
        if not isinstance(self.head, HeadSpec):
            raise SpecError(f"head must be a HeadSpec, got {type(self.head).__name__}")
        if self.attention is not None and not isinstance(self.attention, AttentionSpec):
            raise SpecError(f"attention must be an AttentionSpec or None, got {type(self.attention).__name__}")
        if not isinstance(self.name, str) or not self.name:
            raise SpecError(f"name must be a non-empty string, got {self.name!r}")
        _check_choice("block", self.block, ("basic", "bottleneck"))
        _check_bool("preactivation", self.preactivation)
        _check_choice("bottleneck_stride", self.bottleneck_stride, ("1x1", "3x3"))
        _check_choice("stride_position", self.stride_position, ("first", "last"))
        _check_choice("shortcut", self.shortcut, SHORTCUTS)
        _check_int("groups", self.groups, minimum=1)
        _check_int("width_per_group", self.width_per_group, minimum=1)
        _check_int("reduce_first", self.reduce_first, minimum=1)
        _check_int("shortcut_kernel_size", self.shortcut_kernel_size, minimum=1)
        if self.shortcut_kernel_size % 2 == 0:
            raise SpecError(f"shortcut_kernel_size must be odd (a centred window), got {self.shortcut_kernel_size}")
        _check_choice("anti_alias", self.anti_alias, ANTI_ALIAS)
        if self.std_conv_epsilon is not None:
            _check_float("std_conv_epsilon", self.std_conv_epsilon)
            if not self.std_conv_epsilon > 0:
                raise SpecError(f"std_conv_epsilon must be > 0 or None, got {self.std_conv_epsilon!r}")
            if self.padding == "same":
                raise SpecError("std_conv_epsilon follows BiT's symmetric padding; padding='same' is Keras-native")
        _check_choice("conv_bias", self.conv_bias, ("none", "all", "unnormalized"))
        _check_choice("padding", self.padding, ("symmetric", "same"))
        _check_bool("zero_init_last_bn", self.zero_init_last_bn)
        _check_int("in_channels", self.in_channels, minimum=1)
        if self.num_classes is not None:
            _check_int("num_classes", self.num_classes, minimum=1)
        _check_choice("head_activation", self.head_activation, ("none", "softmax"))
        if self.num_classes is None and self.head_activation != "none":
            raise SpecError("head_activation needs a classifier: set num_classes or head_activation='none'")
        if self.num_classes is None and self.head != HeadSpec():
            raise SpecError("head describes the classifier: with num_classes=None (no classifier) it must be the "
                            "default HeadSpec()")
        if self.zero_init_last_bn and self.preactivation:
            raise SpecError("zero_init_last_bn needs a BatchNorm closing each block; "
                            "pre-activation blocks end in a conv")
        if self.attention is not None and self.preactivation:
            raise SpecError("attention sits after the norm closing each block (timm); pre-activation blocks end in "
                            "a conv")
        if self.anti_alias != "none" and self.stem.pool != "none" and self.stem.pool_stride != 2:
            raise SpecError(f"anti_alias={self.anti_alias!r} anti-aliases a stride-2 stem pool; stem.pool_stride is "
                            f"{self.stem.pool_stride}")
        if self.anti_alias != "none":
            if self.padding == "same":
                raise SpecError("anti_alias follows PyTorch's symmetric padding (timm); padding='same' is "
                                "Keras-native")
            if self.preactivation:
                raise SpecError("anti_alias goes after the activation of a block's strided conv (timm's v1 "
                                "blocks); pre-activation blocks have none there")
            if any(s.stride not in (1, 2) for s in self.stages):
                raise SpecError(f"anti_alias pools by 2; stage strides are {[s.stride for s in self.stages]}")
        self._check_widths()
        if self.norm.kind in ("groupnorm", "evonorm_s0") or any(s.block_widths for s in self.stages):
            from shared_specs.plan import make_plan  # the plan knows every layer's channels: it checks them

            make_plan(self)

    def _check_widths(self) -> None:
        if "basic" in self.stage_blocks and (self.groups != 1 or self.width_per_group != 64):
            raise SpecError(
                "groups and width_per_group apply to bottleneck blocks only: a basic block needs "
                f"groups=1 and width_per_group=64, got groups={self.groups}, "
                f"width_per_group={self.width_per_group}"
            )
        for i, stage in enumerate(self.stages):
            kind = self.block_of(stage)
            if stage.block_widths is not None and any(len(w) != (3 if kind == "bottleneck" else 2)
                                                      for w in stage.block_widths):
                raise SpecError(f"stages[{i}].block_widths must give {3 if kind == 'bottleneck' else 2} widths per "
                                f"{kind} block")
            if kind == "bottleneck" and (stage.width * self.width_per_group) % 64:
                raise SpecError(
                    f"stages[{i}].width={stage.width} times width_per_group={self.width_per_group} "
                    "must be a multiple of 64 (the bottleneck width is width * width_per_group / 64 "
                    "* groups; torchvision would silently round it down)"
                )
        if self.shortcut == "A":
            projected = [i for i, stage in enumerate(self.stages) if stage.always_project]
            if projected:
                raise SpecError(f"stages[{projected[0]}].always_project needs a projection shortcut; shortcut 'A' "
                                "is parameter-free")
            channels = self.stem.widths[-1]
            for i, stage in enumerate(self.stages):
                for out in self.block_outputs(stage):
                    if out < channels:
                        raise SpecError(
                            f"shortcut 'A' is parameter-free and can only add channels, but stages[{i}] "
                            f"shrinks {channels} -> {out} channels; use shortcut 'B' or 'C'"
                        )
                    channels = out

    @property
    def stage_blocks(self) -> tuple[BlockType, ...]:
        """Each stage's block type: its own, or the spec's."""
        return tuple(self.block_of(stage) for stage in self.stages)

    def block_of(self, stage: StageSpec) -> BlockType:
        return stage.block or self.block

    def block_outputs(self, stage: StageSpec) -> tuple[int, ...]:
        """Output channels of each block of `stage`."""
        if stage.block_widths is not None:
            return tuple(w[-1] for w in stage.block_widths)
        return (stage.width * (4 if self.block_of(stage) == "bottleneck" else 1),) * stage.depth

    def bottleneck_width(self, width: int) -> int:
        """The inner (3x3) width of a bottleneck in a stage of base `width`:
        width * width_per_group / 64 * groups (ResNeXt's cardinality x group width)."""
        return width * self.width_per_group // 64 * self.groups

    @property
    def expansion(self) -> int:
        """Output channels of a block of the spec's block type divided by its stage width."""
        return 4 if self.block == "bottleneck" else 1

    @property
    def depth(self) -> int:
        """Weighted layers counted as in the papers: stem convs, block convs, classifier."""
        convs = sum((3 if self.block_of(s) == "bottleneck" else 2) * s.depth for s in self.stages)
        head = 0 if self.num_classes is None else 1 + sum(layer.kind == "linear" for layer in self.head.layers)
        return len(self.stem.widths) + convs + head

    # -- serialisation ---------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; `from_dict(to_dict())` gives an equal spec."""
        return _to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResNetSpec:
        """Strict inverse of `to_dict`: unknown keys are an error, missing ones take defaults."""
        return _from_plain(cls, data, "")

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> ResNetSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SpecError(f"spec is not valid JSON: {err}") from None
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> ResNetSpec:
        """A copy with fields changed; nested specs accept dicts of their fields.

        Unknown field names raise `SpecError` naming them (a typo never becomes a default).
        """
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise SpecError(f"unknown ResNetSpec field(s) {unknown}; known fields: {sorted(known)}")
        resolved: dict[str, Any] = {}
        for key, value in changes.items():
            if key in _NESTED and isinstance(value, dict):  # a partial dict updates the current value
                current = getattr(self, key)
                base = _to_plain(current) if current is not None else {}
                value = _from_plain(_NESTED[key], {**base, **value}, f"{key}.")
            elif key == "stages" and isinstance(value, (list, tuple)):
                value = tuple(
                    _from_plain(StageSpec, v, f"stages[{i}].") if isinstance(v, dict) else v
                    for i, v in enumerate(value)
                )
            resolved[key] = value
        return dataclasses.replace(self, **resolved)

    def differences(self, other: ResNetSpec, *, ignore: tuple[str, ...] = ("name",)) -> list[Difference]:
        """The fields whose values differ, as (dotted path, mine, theirs), sorted by path:
        `[Difference("batchnorm.epsilon", 1e-05, 0.001)]`. Fields named in `ignore` are skipped."""
        return [d for d in differences(self.to_dict(), other.to_dict()) if d.path.split(".")[0] not in ignore]


class Difference(NamedTuple):
    """One field that differs: its dotted path (`stages[3].depth`) and the two values."""

    path: str
    mine: Any
    theirs: Any


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[Difference]:
    """Where two plain nested dicts (a spec's `to_dict()`, or anything holding one) differ,
    as dotted paths; a key only one side has is reported with None on the other."""
    fa, fb = _flatten(a), _flatten(b)
    return [Difference(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def functional_differences(spec: ResNetSpec, library: ResNetSpec) -> list[Difference]:
    """Where `spec` differs from what a library builds (`library`, its spec) in the function
    the network computes in eval mode: what only initialises (`zero_init_last_bn`) or
    only acts in training (`batchnorm.running_var`, `head.dropout`: the library's layers
    train their own way) is left out, and so is the stem max-pool's padding value where
    a ReLU precedes the pool (-inf and zero padding then give the same maxima).
    Converters to other libraries refuse a spec with any difference left, naming them."""
    diffs = spec.differences(library, ignore=("name", "zero_init_last_bn"))
    after_relu = spec.stem.norm and library.stem.norm and spec.stem.pool == library.stem.pool == "max"
    return [d for d in diffs if d.path not in ("batchnorm.running_var", "head.dropout")
            and not (d.path == "stem.pool_pad_value" and after_relu)]


def describe_differences(diffs: list[Difference], mine: str, theirs: str) -> str:
    """'batchnorm.epsilon 1e-05 (stored) vs 0.001 (given), ...': for one-line messages."""
    return ", ".join(f"{d.path} {d.mine!r} ({mine}) vs {d.theirs!r} ({theirs})" for d in diffs)


# -- helpers ------------------------------------------------------------------


def _coerce_tuple(obj: Any, name: str) -> None:
    value = getattr(obj, name)
    if isinstance(value, list):
        object.__setattr__(obj, name, tuple(value))
    elif not isinstance(value, tuple):
        raise SpecError(f"{name} must be a sequence, got {type(value).__name__}")


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise SpecError(f"{name} must be >= {minimum}, got {value}")


def _check_float(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{name} must be a number, got {value!r}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise SpecError(f"{name} must be true or false, got {value!r}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SpecError(f"{name} must be one of {list(choices)}, got {value!r}")


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, tuple):
        return [_to_plain(v) for v in obj]
    return obj


def _from_plain(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise SpecError(f"{where or 'spec'} must be an object, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise SpecError(f"unknown key(s) {[where + k for k in unknown]} in {cls.__name__}; known: {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in _NESTED and cls is ResNetSpec and value is not None:
            value = _from_plain(_NESTED[key], value, f"{where}{key}.")
        elif key == "stages":
            if not isinstance(value, list):
                raise SpecError(f"{where}stages must be a list, got {type(value).__name__}")
            value = tuple(_from_plain(StageSpec, v, f"{where}stages[{i}].") for i, v in enumerate(value))
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field missing
        raise SpecError(f"{where or 'spec'}: {err}") from None
    except SpecError as err:
        if where and not str(err).startswith(where.rstrip(".")):
            raise SpecError(f"{where}{err}") from None
        raise


_NESTED: dict[str, type] = {"stem": StemSpec, "batchnorm": BatchNormSpec, "norm": NormSpec,
                            "attention": AttentionSpec, "head": HeadSpec}


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(data, list) and data and isinstance(data[0], dict):
        out = {}
        for i, v in enumerate(data):
            out.update(_flatten(v, f"{prefix[:-1]}[{i}]."))
        return out
    return {prefix[:-1]: data}
