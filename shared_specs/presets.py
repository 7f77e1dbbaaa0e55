"""Named specs, each reproducing one published network.

Every preset is registered once, with its source in its docstring. Layout choices
that exist only to match somebody's checkpoint (a bias here, an epsilon there) carry
a comment saying whose.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from typing import Any

from shared_specs.errors import SpecError
from shared_specs.spec import BatchNormSpec, ResNetSpec, StageSpec, StemSpec

_REGISTRY: dict[str, Callable[[], ResNetSpec]] = {}
_FAMILY: dict[str, str] = {}


def register(name: str, family: str = "other") -> Callable[[Callable[[], ResNetSpec]], Callable[[], ResNetSpec]]:
    """Decorator adding a preset factory under `name`, in `family` (what `resnet-rosetta list`
    groups by, e.g. "torchvision"); a taken name is an error."""

    def add(factory: Callable[[], ResNetSpec]) -> Callable[[], ResNetSpec]:
        if name in _REGISTRY:
            raise SpecError(f"preset {name!r} is already registered")
        _REGISTRY[name] = factory
        _FAMILY[name] = family
        return factory

    return add


def preset_family(name: str) -> str:
    """The family a preset was registered in ("torchvision", "keras.applications", "timm SE-ResNet", ...)."""
    _lookup(name)
    return _FAMILY[name]


def list_presets(pattern: str = "*") -> list[str]:
    """Preset names matching a shell-style pattern, e.g. `list_presets("resnet5*")`, in
    registration order (torchvision, keras.applications, CIFAR, tutorials, timm; shallow to deep)."""
    return [n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern)]


def preset_doc(name: str) -> str:
    """The first line of a preset's docstring: where it comes from."""
    factory = _lookup(name)
    return (factory.__doc__ or "").strip().splitlines()[0]


def get_spec(name: str, **overrides: Any) -> ResNetSpec:
    """The preset's spec, with fields replaced by `overrides` (validated, strict)."""
    spec = _lookup(name)()
    return spec.replace(**overrides) if overrides else spec


def find_preset(spec: ResNetSpec) -> str | None:
    """The name of the registered preset equal to `spec` in every field but `name`, if any."""
    for name, factory in _REGISTRY.items():
        if spec.replace(name=name) == factory():
            return name
    return None


def resolve_spec(spec_or_name: ResNetSpec | str, **overrides: Any) -> ResNetSpec:
    """A spec given as itself or as a preset name, with `overrides` applied."""
    if isinstance(spec_or_name, str):
        return get_spec(spec_or_name, **overrides)
    if not isinstance(spec_or_name, ResNetSpec):
        raise SpecError(f"expected a ResNetSpec or a preset name, got {type(spec_or_name).__name__}")
    return spec_or_name.replace(**overrides) if overrides else spec_or_name


def _lookup(name: str) -> Callable[[], ResNetSpec]:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else "; see list_presets()"
        raise SpecError(f"unknown preset {name!r}{hint}") from None


def _stages(depths: tuple[int, ...], widths: tuple[int, ...], strides: tuple[int, ...]) -> tuple[StageSpec, ...]:
    return tuple(StageSpec(d, w, s) for d, w, s in zip(depths, widths, strides, strict=True))


# -- torchvision (torchvision/models/resnet.py, "v1.5": stride on the 3x3) ---------

_IMAGENET_WIDTHS = (64, 128, 256, 512)


def _torchvision(name: str, block: str, depths: tuple[int, ...], groups: int = 1,
                 width_per_group: int = 64) -> ResNetSpec:
    return ResNetSpec(
        name=name,
        block=block,  # type: ignore[arg-type]
        stages=_stages(depths, _IMAGENET_WIDTHS, (1, 2, 2, 2)),
        groups=groups,
        width_per_group=width_per_group,
    )


@register("resnet18", family="torchvision")
def resnet18() -> ResNetSpec:
    """torchvision.models.resnet18 (He et al. 2015, basic blocks [2, 2, 2, 2])."""
    return _torchvision("resnet18", "basic", (2, 2, 2, 2))


@register("resnet34", family="torchvision")
def resnet34() -> ResNetSpec:
    """torchvision.models.resnet34 (He et al. 2015, basic blocks [3, 4, 6, 3])."""
    return _torchvision("resnet34", "basic", (3, 4, 6, 3))


@register("resnet50", family="torchvision")
def resnet50() -> ResNetSpec:
    """torchvision.models.resnet50 ("v1.5": bottleneck stride on the 3x3)."""
    return _torchvision("resnet50", "bottleneck", (3, 4, 6, 3))


@register("resnet101", family="torchvision")
def resnet101() -> ResNetSpec:
    """torchvision.models.resnet101 (bottlenecks [3, 4, 23, 3], v1.5)."""
    return _torchvision("resnet101", "bottleneck", (3, 4, 23, 3))


@register("resnet152", family="torchvision")
def resnet152() -> ResNetSpec:
    """torchvision.models.resnet152 (bottlenecks [3, 8, 36, 3], v1.5)."""
    return _torchvision("resnet152", "bottleneck", (3, 8, 36, 3))


@register("resnext50_32x4d", family="torchvision")
def resnext50_32x4d() -> ResNetSpec:
    """torchvision.models.resnext50_32x4d (Xie et al. 2017, 32 groups of width 4)."""
    return _torchvision("resnext50_32x4d", "bottleneck", (3, 4, 6, 3), groups=32, width_per_group=4)


@register("resnext101_32x8d", family="torchvision")
def resnext101_32x8d() -> ResNetSpec:
    """torchvision.models.resnext101_32x8d (Xie et al. 2017, 32 groups of width 8)."""
    return _torchvision("resnext101_32x8d", "bottleneck", (3, 4, 23, 3), groups=32, width_per_group=8)


@register("resnext101_64x4d", family="torchvision")
def resnext101_64x4d() -> ResNetSpec:
    """torchvision.models.resnext101_64x4d (64 groups of width 4)."""
    return _torchvision("resnext101_64x4d", "bottleneck", (3, 4, 23, 3), groups=64, width_per_group=4)


@register("wide_resnet50_2", family="torchvision")
def wide_resnet50_2() -> ResNetSpec:
    """torchvision.models.wide_resnet50_2 (Zagoruyko & Komodakis 2016, bottleneck width x2)."""
    return _torchvision("wide_resnet50_2", "bottleneck", (3, 4, 6, 3), width_per_group=128)


@register("wide_resnet101_2", family="torchvision")
def wide_resnet101_2() -> ResNetSpec:
    """torchvision.models.wide_resnet101_2 (bottleneck width x2, [3, 4, 23, 3])."""
    return _torchvision("wide_resnet101_2", "bottleneck", (3, 4, 23, 3), width_per_group=128)


# -- keras.applications (keras/src/applications/resnet.py, resnet_v2.py) ----------

# keras.applications builds every BatchNormalization with epsilon=1.001e-5 and the
# Keras default momentum 0.99 (which folds the biased batch variance into the running
# one), and pads before its max-pool with ZeroPadding2D.
_KERAS_BN = BatchNormSpec(epsilon=1.001e-5, running_stats_decay=0.99, running_var="biased")
_KERAS_V1_STEM = StemSpec(pool_pad_value="zero")
_KERAS_V2_STEM = StemSpec(norm=False, pool_pad_value="zero")


def _keras_v1(name: str, depths: tuple[int, ...]) -> ResNetSpec:
    return ResNetSpec(
        name=name,
        stages=_stages(depths, _IMAGENET_WIDTHS, (1, 2, 2, 2)),
        bottleneck_stride="1x1",  # original 2015 layout: the first 1x1 is strided
        conv_bias="all",  # every Conv2D keeps Keras's default use_bias=True
        stem=_KERAS_V1_STEM,
        batchnorm=_KERAS_BN,
    )


def _keras_v2(name: str, depths: tuple[int, ...]) -> ResNetSpec:
    return ResNetSpec(
        name=name,
        stages=_stages(depths, _IMAGENET_WIDTHS, (2, 2, 2, 1)),  # stack2(stride1=2) x3, last stride1=1
        preactivation=True,
        stride_position="last",  # block2(stride=...) is the stage's last block
        shortcut="B-subsample",  # conv_shortcut in the first block, MaxPooling2D(1, s) in the last
        conv_bias="unnormalized",  # *_1_conv, *_2_conv have use_bias=False; *_0_conv, *_3_conv, conv1_conv keep it
        stem=_KERAS_V2_STEM,
        batchnorm=_KERAS_BN,
    )


@register("resnet50_v1", family="keras.applications")
def resnet50_v1() -> ResNetSpec:
    """keras.applications.ResNet50 layout (original v1: stride on the first 1x1, conv biases)."""
    return _keras_v1("resnet50_v1", (3, 4, 6, 3))


@register("resnet101_v1", family="keras.applications")
def resnet101_v1() -> ResNetSpec:
    """keras.applications.ResNet101 layout (original v1, [3, 4, 23, 3])."""
    return _keras_v1("resnet101_v1", (3, 4, 23, 3))


@register("resnet152_v1", family="keras.applications")
def resnet152_v1() -> ResNetSpec:
    """keras.applications.ResNet152 layout (original v1, [3, 8, 36, 3])."""
    return _keras_v1("resnet152_v1", (3, 8, 36, 3))


@register("resnet50_v2", family="keras.applications")
def resnet50_v2() -> ResNetSpec:
    """keras.applications.ResNet50V2 layout (He et al. 2016 pre-activation, stride in the last block)."""
    return _keras_v2("resnet50_v2", (3, 4, 6, 3))


@register("resnet101_v2", family="keras.applications")
def resnet101_v2() -> ResNetSpec:
    """keras.applications.ResNet101V2 layout (pre-activation, [3, 4, 23, 3])."""
    return _keras_v2("resnet101_v2", (3, 4, 23, 3))


@register("resnet152_v2", family="keras.applications")
def resnet152_v2() -> ResNetSpec:
    """keras.applications.ResNet152V2 layout (pre-activation, [3, 8, 36, 3])."""
    return _keras_v2("resnet152_v2", (3, 8, 36, 3))


# -- He et al. 2015, section 4.2: CIFAR-10 nets, 6n+2 layers, option A -------------


def _cifar(depth: int) -> ResNetSpec:
    n = (depth - 2) // 6
    return ResNetSpec(
        name=f"cifar_resnet{depth}",
        block="basic",
        stages=_stages((n, n, n), (16, 32, 64), (1, 2, 2)),
        shortcut="A",
        stem=StemSpec(widths=(16,), kernel_size=3, stride=1, pool="none"),
        num_classes=10,
    )


@register("cifar_resnet20", family="He et al. 2015 CIFAR-10")
def cifar_resnet20() -> ResNetSpec:
    """He et al. 2015 Table 6, ResNet-20 (n=3, 0.27M params, 8.75% CIFAR-10 error)."""
    return _cifar(20)


@register("cifar_resnet32", family="He et al. 2015 CIFAR-10")
def cifar_resnet32() -> ResNetSpec:
    """He et al. 2015 Table 6, ResNet-32 (n=5, 0.46M params)."""
    return _cifar(32)


@register("cifar_resnet44", family="He et al. 2015 CIFAR-10")
def cifar_resnet44() -> ResNetSpec:
    """He et al. 2015 Table 6, ResNet-44 (n=7, 0.66M params)."""
    return _cifar(44)


@register("cifar_resnet56", family="He et al. 2015 CIFAR-10")
def cifar_resnet56() -> ResNetSpec:
    """He et al. 2015 Table 6, ResNet-56 (n=9, 0.85M params)."""
    return _cifar(56)


@register("cifar_resnet110", family="He et al. 2015 CIFAR-10")
def cifar_resnet110() -> ResNetSpec:
    """He et al. 2015 Table 6, ResNet-110 (n=18, 1.7M params)."""
    return _cifar(110)


@register("cifar_resnet1202", family="He et al. 2015 CIFAR-10")
def cifar_resnet1202() -> ResNetSpec:
    """He et al. 2015 Table 6, ResNet-1202 (n=200, 19.4M params)."""
    return _cifar(1202)


# -- the seed tutorials (shared/seeds) ---------------------------------------------


@register("tutorial_cifar_resnet18", family="seed tutorials")
def tutorial_cifar_resnet18() -> ResNetSpec:
    """Seed 001 "ResNet详解与CIFAR10数据集实战": the PyTorch CIFAR-10 ResNet18 of the post.

    Faithful to its code: a 3x3 stride-3 unpadded stem conv with BN (no pool), one
    ResBlk per stage, all four strided, every block with a 1x1 conv + BN shortcut
    ("extra", so option C), and nn.Conv2d's default bias on every conv.
    """
    return ResNetSpec(
        name="tutorial_cifar_resnet18",
        block="basic",
        stages=_stages((1, 1, 1, 1), _IMAGENET_WIDTHS, (2, 2, 2, 2)),
        shortcut="C",
        conv_bias="all",
        stem=StemSpec(widths=(64,), kernel_size=3, stride=3, padding=0, pool="none"),
        num_classes=10,
    )


@register("tutorial_keras_resnet18", family="seed tutorials")
def tutorial_keras_resnet18() -> ResNetSpec:
    """Seed 004 "深度学习第6天:ResNet深度残差网络": the Keras ResNet18 of the post.

    Faithful to its code: Keras 'same' padding everywhere, Keras BatchNormalization
    defaults (epsilon 1e-3, momentum 0.99, biased running variance), conv biases, softmax head, built as
    `resnet((224, 224, 3), 1000)`. The post never sets `conv_shortcut`, so its
    strided blocks fail with a shape error; the preset fixes that with a 1x1
    projection + BN where the shape changes (shortcut 'B').
    """
    return ResNetSpec(
        name="tutorial_keras_resnet18",
        block="basic",
        stages=_stages((2, 2, 2, 2), _IMAGENET_WIDTHS, (1, 2, 2, 2)),
        shortcut="B",
        conv_bias="all",
        padding="same",
        batchnorm=BatchNormSpec(epsilon=1e-3, running_stats_decay=0.99, running_var="biased"),
        head_activation="softmax",
    )


# -- timm (timm/models/resnet.py, the "d" variants of Bag of Tricks, He et al. 2019) ---

# timm's stem_type="deep" with stem_width=32: three 3x3 convs 32, 32, 64 (the first
# strided), BN + ReLU between them and after the last, then torchvision's max-pool.
_TIMM_DEEP_STEM = StemSpec(widths=(32, 32, 64), kernel_size=3)


def _timm_d(name: str, block: str, depths: tuple[int, ...]) -> ResNetSpec:
    return ResNetSpec(
        name=name,
        block=block,  # type: ignore[arg-type]
        stages=_stages(depths, _IMAGENET_WIDTHS, (1, 2, 2, 2)),
        # avg_down=True: AvgPool2d(2, s, ceil_mode=True, count_include_pad=False) at
        # downsample.0 (an Identity where s == 1), then 1x1 conv + BN at downsample.1/.2
        shortcut="D",
        stem=_TIMM_DEEP_STEM,
        zero_init_last_bn=True,  # timm's ResNet(zero_init_last=True) default
    )


@register("resnet18d", family="timm ResNet")
def resnet18d() -> ResNetSpec:
    """timm resnet18d (deep 3x3 stem 32/32/64, avg-pool shortcut D, basic blocks [2, 2, 2, 2])."""
    return _timm_d("resnet18d", "basic", (2, 2, 2, 2))


@register("resnet34d", family="timm ResNet")
def resnet34d() -> ResNetSpec:
    """timm resnet34d (deep 3x3 stem 32/32/64, avg-pool shortcut D, basic blocks [3, 4, 6, 3])."""
    return _timm_d("resnet34d", "basic", (3, 4, 6, 3))


@register("resnet50d", family="timm ResNet")
def resnet50d() -> ResNetSpec:
    """timm resnet50d (deep 3x3 stem 32/32/64, avg-pool shortcut D, bottlenecks [3, 4, 6, 3])."""
    return _timm_d("resnet50d", "bottleneck", (3, 4, 6, 3))


@register("resnet101d", family="timm ResNet")
def resnet101d() -> ResNetSpec:
    """timm resnet101d (deep 3x3 stem 32/32/64, avg-pool shortcut D, bottlenecks [3, 4, 23, 3])."""
    return _timm_d("resnet101d", "bottleneck", (3, 4, 23, 3))
