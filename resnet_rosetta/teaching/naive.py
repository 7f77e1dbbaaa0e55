"""Naive ports: each porting trap reproduced on demand, as an ordinary model.

A naive porter makes one mistake and nothing else. Each mistake is either a spec
change (the target framework's default where the source used something else:
Keras 'same' padding, Keras's BatchNorm epsilon, the other framework's "momentum"
number) or a weight layout mistake (a reshape where a transpose was due). Either way
the result is built by resnet_torch or resnet_keras from a spec and canonical
weights, so its layers carry the canonical names and `resnet-rosetta diff` (or
`layer_outputs`) can line it up with a correct port layer by layer.

Weight mistakes are expressed on canonical weights: `naive_weights` returns the
canonical tensors that, loaded correctly, give exactly what the naive porter's
wrong assignment gives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from resnet_rosetta.frameworks import Framework, get_framework
from shared_specs import ResNetSpec, SpecError, make_plan
from shared_specs import plan as P
from shared_specs.layout import conv_to_keras
from shared_specs.spec import torch_momentum

WeightMistake = Callable[[np.ndarray, Framework], np.ndarray]


def _conv_reshaped(w: np.ndarray, target: Framework) -> np.ndarray:
    """The source framework's kernel `reshape`d into the target's layout instead of
    transposed: never an error, since the element count always fits."""
    source = target.other.native("conv", w)
    return target.canonical("conv", source.reshape(target.native("conv", w).shape))


def _conv_reversed(w: np.ndarray, target: Framework) -> np.ndarray:
    """`np.transpose(w)` (or `.T`) of the source's kernel, which reverses all four axes. It
    fits every square kernel without an error, is right for 1x1 kernels, and mirrors the rest."""
    return target.canonical("conv", target.other.native("conv", w).T)


def _dense_untransposed(w: np.ndarray, target: Framework) -> np.ndarray:
    """The source's matrix written into the target's as it is: silent when in == out,
    and with a reshape for any shape."""
    source = target.other.native("dense", w)
    return target.canonical("dense", source.reshape(target.native("dense", w).shape))


@dataclass(frozen=True)
class NaiveTrap:
    """One porting mistake: its name, the trap number in docs/differences.md, what the
    porter does, and how it changes the spec and/or the weights."""

    name: str
    trap: int
    mistake: str
    spec_change: Callable[[ResNetSpec, Framework], ResNetSpec] | None = None
    conv_mistake: WeightMistake | None = None
    dense_mistake: WeightMistake | None = None
    # canonical weights the naive spec needs and the source has not (a BatchNorm's fresh statistics)
    weights_change: Callable[[ResNetSpec, dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None


def _padding(spec: ResNetSpec, target: Framework) -> ResNetSpec:
    # the target framework's idiom for a "same-size" conv: Keras 'same', PyTorch k // 2
    return spec.replace(padding=target.padding_idiom)


def _pool_pad(spec: ResNetSpec, target: Framework) -> ResNetSpec:
    if spec.stem.pool != "max":
        raise SpecError(f"trap 'zero-pool-padding' needs a stem max-pool; {spec.name} has none")
    return spec.replace(stem={"pool_pad_value": target.pool_pad_idiom})


def _epsilon(spec: ResNetSpec, target: Framework) -> ResNetSpec:
    # framework defaults: keras.layers.BatchNormalization 1e-3, torch.nn.BatchNorm2d 1e-5
    return spec.replace(batchnorm={"epsilon": target.default_bn_epsilon})


def _momentum(spec: ResNetSpec, target: Framework) -> ResNetSpec:
    # the source framework's "momentum" number typed into the target's argument: torch's
    # 0.1 (= decay 0.9) becomes Keras momentum 0.1, Keras's 0.99 becomes torch momentum 0.99;
    # either way the decay turns into 1 - decay, the other framework's number for it.
    return spec.replace(batchnorm={"running_stats_decay": torch_momentum(spec.batchnorm.running_stats_decay)})


def _bottleneck_stride(spec: ResNetSpec, target: Framework) -> ResNetSpec:
    if spec.block != "bottleneck":
        raise SpecError(f"trap 'stride-on-1x1' needs bottleneck blocks; {spec.name} has basic blocks")
    return spec.replace(bottleneck_stride="1x1" if spec.bottleneck_stride == "3x3" else "3x3")


def _stride_position(spec: ResNetSpec, target: Framework) -> ResNetSpec:
    if all(stage.depth == 1 or stage.stride == 1 for stage in spec.stages):
        raise SpecError(f"trap 'v2-stride-first' changes nothing in {spec.name}: no strided stage has 2+ blocks")
    return spec.replace(stride_position="first" if spec.stride_position == "last" else "last")


def _needs(spec: ResNetSpec, trap: str, what: str, present: bool) -> None:
    if not present:
        raise SpecError(f"trap {trap!r} needs {what}; {spec.name} has none")


def _groupnorm_as_batchnorm(spec: ResNetSpec, target: Framework) -> ResNetSpec:
    _needs(spec, "groupnorm-as-batchnorm", "GroupNorm layers", spec.norm.kind == "groupnorm")
    return spec.replace(norm={"kind": "batchnorm"}, batchnorm={"epsilon": spec.norm.epsilon})


def _fresh_statistics(spec: ResNetSpec, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # a BatchNorm layer as built: running mean 0 and variance 1, since the GroupNorm had none to copy
    for op in make_plan(spec).ops():
        if isinstance(op, P.BatchNorm) and f"{op.name}.running_mean" not in weights:
            weights[f"{op.name}.running_mean"] = np.zeros(op.channels, np.float32)
            weights[f"{op.name}.running_var"] = np.ones(op.channels, np.float32)
    return weights


def _gn_epsilon(spec: ResNetSpec, target: Framework) -> ResNetSpec:
    # framework defaults: keras.layers.GroupNormalization 1e-3, torch.nn.GroupNorm 1e-5
    _needs(spec, "gn-epsilon", "GroupNorm layers", spec.norm.kind == "groupnorm")
    return spec.replace(norm={"epsilon": target.default_gn_epsilon})


def _frn_epsilon(spec: ResNetSpec, target: Framework) -> ResNetSpec:
    # ecosystem defaults: TF Addons' FilterResponseNormalization 1e-6 (the paper's), timm's FRN 1e-5
    _needs(spec, "frn-epsilon", "FRN layers", spec.norm.kind == "frn")
    return spec.replace(norm={"epsilon": target.default_frn_epsilon})


def _no_anti_alias(spec: ResNetSpec, target: Framework) -> ResNetSpec:
    _needs(spec, "no-anti-alias", "anti-aliasing", spec.anti_alias != "none")
    return spec.replace(anti_alias="none")


def _std_conv_forgotten(spec: ResNetSpec, target: Framework) -> ResNetSpec:
    _needs(spec, "std-conv-forgotten", "weight-standardised convs", spec.std_conv_epsilon is not None)
    return spec.replace(std_conv_epsilon=None)


NAIVE: dict[str, NaiveTrap] = {t.name: t for t in (
    NaiveTrap("kernel-reshape", 1, "conv kernels reshaped into the target layout instead of transposed",
              conv_mistake=_conv_reshaped),
    NaiveTrap("kernel-reversed", 1, "conv kernels transposed with np.transpose(w) / w.T (all axes reversed)",
              conv_mistake=_conv_reversed),
    NaiveTrap("dense-untransposed", 2, "the classifier matrix written without its transpose",
              dense_mistake=_dense_untransposed),
    NaiveTrap("same-padding", 4, "every conv uses the target framework's own padding idiom "
              "(Keras 'same', or PyTorch padding=k//2 for a Keras-native model)", spec_change=_padding),
    NaiveTrap("zero-pool-padding", 5, "the stem max-pool pads with the target's idiom (Keras ZeroPadding2D, "
              "or PyTorch's -inf for a Keras model)", spec_change=_pool_pad),
    NaiveTrap("bn-epsilon", 6, "BatchNorm keeps the target framework's default epsilon "
              "(Keras 1e-3, PyTorch 1e-5)", spec_change=_epsilon),
    NaiveTrap("bn-momentum", 7, "the source framework's BatchNorm momentum number copied into the target's",
              spec_change=_momentum),
    NaiveTrap("stride-on-1x1", 19, "a bottleneck 'ResNet-50 v1' assumed to put its stride where the other "
              "framework's does (torchvision: 3x3, keras.applications: first 1x1)", spec_change=_bottleneck_stride),
    NaiveTrap("v2-stride-first", 20, "a ResNet V2 assumed to stride in the first block of a stage, as v1 does",
              spec_change=_stride_position),
    NaiveTrap("groupnorm-as-batchnorm", 23, "GroupNorm ported as BatchNorm: weight and bias copied, running "
              "statistics left as built (mean 0, variance 1)", spec_change=_groupnorm_as_batchnorm,
              weights_change=_fresh_statistics),
    NaiveTrap("gn-epsilon", 24, "GroupNorm keeps the target framework's default epsilon (Keras 1e-3, PyTorch 1e-5)",
              spec_change=_gn_epsilon),
    NaiveTrap("frn-epsilon", 26, "FRN keeps the target ecosystem's default epsilon (TF Addons 1e-6, timm 1e-5)",
              spec_change=_frn_epsilon),
    NaiveTrap("no-anti-alias", 27, "anti-aliasing left out: the stride goes back into the conv (or pool)",
              spec_change=_no_anti_alias),
    NaiveTrap("std-conv-forgotten", 30, "weight-standardised convs (BiT) ported as plain convs",
              spec_change=_std_conv_forgotten),
)}


def _lookup(trap: str) -> NaiveTrap:
    try:
        return NAIVE[trap]
    except KeyError:
        raise SpecError(f"unknown naive-port trap {trap!r}; known: {', '.join(NAIVE)}") from None


def naive_spec(spec: ResNetSpec, trap: str, framework: str = "keras") -> ResNetSpec:
    """The spec a naive porter of `spec` into `framework` ("keras" or "torch") ends up building."""
    t = _lookup(trap)
    target = get_framework(framework)
    return t.spec_change(spec, target) if t.spec_change else spec


def naive_weights(spec: ResNetSpec, weights: Mapping[str, np.ndarray], trap: str,
                  framework: str = "keras") -> dict[str, np.ndarray]:
    """Canonical weights equivalent to the naive porter's wrong assignment into `framework`."""
    t = _lookup(trap)
    target = get_framework(framework)
    out = dict(weights)
    for op in make_plan(spec).ops():
        mistake = t.conv_mistake if isinstance(op, P.Conv) else t.dense_mistake if isinstance(op, P.Linear) else None
        if mistake is not None:
            key = f"{op.name}.weight"
            out[key] = np.ascontiguousarray(mistake(np.asarray(weights[key]), target))
    if t.weights_change is not None:
        out = t.weights_change(naive_spec(spec, trap, framework), out)
    return out


def naive_port(spec: ResNetSpec, weights: Mapping[str, np.ndarray], trap: str, framework: str = "keras") -> Any:
    """`spec` with `weights` ported into `framework` by a porter who falls into `trap`.

    Returns an ordinary resnet_keras / resnet_torch model (canonical layer names) in
    inference mode, ready to be compared with a correct port of the same weights.
    """
    target = naive_spec(spec, trap, framework)
    wrong = naive_weights(spec, weights, trap, framework)
    return get_framework(framework).build(target, wrong, source=f"naive port ({trap})")


def flatten_dense_kernel(weight: np.ndarray, chw: tuple[int, int, int], *, naive: bool = False) -> np.ndarray:
    """The Keras Dense kernel for a PyTorch Linear that reads `torch.flatten` of a (C, H, W) map.

    PyTorch flattens channel-major (C, H, W), Keras's Flatten row-major over NHWC
    (H, W, C). The correct kernel permutes the rows; the naive one (`naive=True`) is
    only the transpose, and is wrong whenever H * W > 1 (trap 14). Global average
    pooling heads, as in every ResNet here, have no such permutation.
    """
    out_features, in_features = weight.shape
    c, h, w = chw
    if in_features != c * h * w:
        raise SpecError(f"a Linear reading {c}x{h}x{w} = {c * h * w} features cannot have {in_features} inputs")
    if naive:
        return np.ascontiguousarray(weight.T)
    return np.ascontiguousarray(conv_to_keras(weight.reshape(out_features, c, h, w)).reshape(-1, out_features))
