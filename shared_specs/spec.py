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
from dataclasses import dataclass, field, fields
from typing import Any, Literal, NamedTuple

from shared_specs.errors import SpecError

BlockType = Literal["basic", "bottleneck"]
ShortcutType = Literal["A", "B", "B-subsample", "C", "D"]
SHORTCUTS: tuple[str, ...] = ("A", "B", "B-subsample", "C", "D")


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
    only on non-negative inputs (trap 5).
    """

    widths: tuple[int, ...] = (64,)
    kernel_size: int = 7
    stride: int = 2
    padding: int | None = None
    norm: bool = True
    pool: Literal["max", "none"] = "max"
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
        _check_choice("stem.pool", self.pool, ("max", "none"))
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
    """

    depth: int
    width: int
    stride: int = 1

    def __post_init__(self) -> None:
        _check_int("depth", self.depth, minimum=1)
        _check_int("width", self.width, minimum=1)
        _check_int("stride", self.stride, minimum=1)


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
    - `conv_bias`: "none" (torchvision), "all" (keras.applications v1), or
      "unnormalized": only convs not directly followed by BatchNorm (V2).
    - `padding`: "symmetric" pads `k // 2` on every side as PyTorch does; "same"
      is Keras/TensorFlow 'same', which pads (0, 1) for a stride-2 3x3 on even
      inputs (trap 4) and exists to reproduce Keras-native models.
    - `num_classes=None` drops pooling and classifier: the model returns the last
      feature map (like keras.applications `include_top=False`).
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
    stem: StemSpec = field(default_factory=StemSpec)
    conv_bias: Literal["none", "all", "unnormalized"] = "none"
    padding: Literal["symmetric", "same"] = "symmetric"
    batchnorm: BatchNormSpec = field(default_factory=BatchNormSpec)
    zero_init_last_bn: bool = False
    in_channels: int = 3
    num_classes: int | None = 1000
    head_activation: Literal["none", "softmax"] = "none"

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
        if not isinstance(self.name, str) or not self.name:
            raise SpecError(f"name must be a non-empty string, got {self.name!r}")
        _check_choice("block", self.block, ("basic", "bottleneck"))
        _check_bool("preactivation", self.preactivation)
        _check_choice("bottleneck_stride", self.bottleneck_stride, ("1x1", "3x3"))
        _check_choice("stride_position", self.stride_position, ("first", "last"))
        _check_choice("shortcut", self.shortcut, SHORTCUTS)
        _check_int("groups", self.groups, minimum=1)
        _check_int("width_per_group", self.width_per_group, minimum=1)
        _check_choice("conv_bias", self.conv_bias, ("none", "all", "unnormalized"))
        _check_choice("padding", self.padding, ("symmetric", "same"))
        _check_bool("zero_init_last_bn", self.zero_init_last_bn)
        _check_int("in_channels", self.in_channels, minimum=1)
        if self.num_classes is not None:
            _check_int("num_classes", self.num_classes, minimum=1)
        _check_choice("head_activation", self.head_activation, ("none", "softmax"))
        if self.num_classes is None and self.head_activation != "none":
            raise SpecError("head_activation needs a classifier: set num_classes or head_activation='none'")
        if self.zero_init_last_bn and self.preactivation:
            raise SpecError("zero_init_last_bn needs a BatchNorm closing each block; "
                            "pre-activation blocks end in a conv")
        self._check_widths()

    def _check_widths(self) -> None:
        if self.block == "basic" and (self.groups != 1 or self.width_per_group != 64):
            raise SpecError(
                "groups and width_per_group apply to bottleneck blocks only: a basic block needs "
                f"groups=1 and width_per_group=64, got groups={self.groups}, "
                f"width_per_group={self.width_per_group}"
            )
        for i, stage in enumerate(self.stages):
            if self.block == "bottleneck" and (stage.width * self.width_per_group) % 64:
                raise SpecError(
                    f"stages[{i}].width={stage.width} times width_per_group={self.width_per_group} "
                    "must be a multiple of 64 (the bottleneck width is width * width_per_group / 64 "
                    "* groups; torchvision would silently round it down)"
                )
        if self.shortcut == "A":
            channels = self.stem.widths[-1]
            for i, stage in enumerate(self.stages):
                out = stage.width * self.expansion
                if out < channels:
                    raise SpecError(
                        f"shortcut 'A' is parameter-free and can only add channels, but stages[{i}] "
                        f"shrinks {channels} -> {out} channels; use shortcut 'B' or 'C'"
                    )
                channels = out

    def bottleneck_width(self, width: int) -> int:
        """The inner (3x3) width of a bottleneck in a stage of base `width`:
        width * width_per_group / 64 * groups (ResNeXt's cardinality x group width)."""
        return width * self.width_per_group // 64 * self.groups

    @property
    def expansion(self) -> int:
        """Output channels of a block divided by its stage width."""
        return 4 if self.block == "bottleneck" else 1

    @property
    def depth(self) -> int:
        """Weighted layers counted as in the papers: stem convs, block convs, classifier."""
        per_block = 3 if self.block == "bottleneck" else 2
        head = 0 if self.num_classes is None else 1
        return len(self.stem.widths) + per_block * sum(s.depth for s in self.stages) + head

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
            if key in ("stem", "batchnorm") and isinstance(value, dict):
                current = getattr(self, key)
                value = _from_plain(type(current), {**_to_plain(current), **value}, f"{key}.")
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
        if key == "stem":
            value = _from_plain(StemSpec, value, f"{where}stem.")
        elif key == "batchnorm":
            value = _from_plain(BatchNormSpec, value, f"{where}batchnorm.")
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
