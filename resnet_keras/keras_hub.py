"""keras-hub's ResNets <-> (spec, canonical weights) (the PyTorch twin, for transformers, is
resnet_torch/transformers.py).

keras-hub builds every ResNet from one functional backbone
(keras_hub/src/models/resnet/resnet_backbone.py: `ResNetBackbone`) configured by a few
lists and a `block_type`: "basic_block" and "bottleneck_block" (v1 with the stride on
the 3x3, or pre-activation v2 with `use_pre_activation`), and the "vd" variants of
PaddleClas's ResNet_vd (deep stem, avg-pool shortcut). `ResNetImageClassifier` puts a
global pool and a Dense named `predictions` on it. So converting is three small pure
steps: `spec_of_config` (its config -> a spec), `config_of_spec` (the inverse, refusing
what keras-hub cannot build), and one name table, `KERAS_HUB_NAMES`, laid over the
spec's plan, with resnet_keras.weights.RULES for each tensor's layout. keras-hub is
imported on first use.

Layout facts the spec carries (checked against keras-hub 0.32):
- BatchNorm epsilon 1e-5, momentum 0.9 (decay 0.9), Keras's biased running variance.
- Every conv pads explicitly or is 'same' at stride 1: symmetric, as PyTorch pads.
- v1 zero-pads the stem max-pool (after a ReLU, the same maxima as -inf); v2 pads with -inf.
- The first block of every stage has a projection shortcut, the first stage of
  basic_block excepted: where the shape does not change that is `StageSpec.always_project`
  (the basic vd block's first stage).
- The vd shortcut pools with AveragePooling2D(2, stride, padding="same"), which averages
  only real pixels, like PyTorch's ceil-mode pool without padding (shortcut "D").
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import keras
import numpy as np

from resnet_keras.ecosystem import check_layer
from resnet_keras.weights import Transform, op_rules
from shared_specs import BatchNormSpec, ResNetSpec, SpecError, StageSpec, StemSpec, check_weights, find_preset
from shared_specs import plan as P
from shared_specs.preprocessing import Preprocessing
from shared_specs.spec import Difference, HeadSpec, functional_differences

BLOCK_TYPES = ("basic_block", "bottleneck_block", "basic_block_vd", "bottleneck_block_vd")

# keras-hub layer name of every weighted op, by canonical name. In a block the key and the
# name start with "{block}": canonical `layer{s}.{b}`, keras-hub `stack{s-1}_block{b}`. A
# shortcut's conv and norm are keyed by kind: canonical `downsample.0/.1` (projection) or
# `.1/.2` (avg-pool first). The deep stem's i-th conv (i from 1) is canonical `conv1.{3i-3}`,
# its norm `conv1.{3i-2}`; `{n}` is the number of stem convs. v1's BN k follows conv k; v2's
# BN k precedes conv k (its bn1 is keras-hub's pre_activation_bn). None: no such layer.
#   canonical                   v1                          v2 (use_pre_activation)
KERAS_HUB_NAMES: dict[str, tuple[str | None, str | None]] = {
    "conv1":                    ("conv1_conv",              "conv1_conv"),
    "conv1.{3i-3}":             ("conv{i}_conv",            "conv{i}_conv"),
    "conv1.{3i-2}":             ("conv{i}_bn",              "conv{i}_bn"),
    "bn1":                      ("conv{n}_bn",              None),
    "{block}.bn1":              ("{block}_1_bn",            "{block}_pre_activation_bn"),
    "{block}.conv1":            ("{block}_1_conv",          "{block}_1_conv"),
    "{block}.bn2":              ("{block}_2_bn",            "{block}_1_bn"),
    "{block}.conv2":            ("{block}_2_conv",          "{block}_2_conv"),
    "{block}.bn3":              ("{block}_3_bn",            "{block}_2_bn"),
    "{block}.conv3":            ("{block}_3_conv",          "{block}_3_conv"),
    "{block}.downsample<conv>": ("{block}_0_conv",          "{block}_0_conv"),
    "{block}.downsample<norm>": ("{block}_0_bn",            None),
    "post_bn":                  (None,                      "post_bn"),
    "fc":                       ("predictions",             "predictions"),
}  # fmt: skip

_BN = BatchNormSpec(epsilon=1e-5, running_stats_decay=0.9, running_var="biased")  # every keras-hub BatchNormalization
_HEADS = {None: "none", "linear": "none", "softmax": "softmax"}


def from_keras_hub(model: Any) -> tuple[ResNetSpec, dict[str, np.ndarray]]:
    """(spec, canonical weights) of a keras-hub `ResNetBackbone` or `ResNetImageClassifier`.

    The spec comes from the backbone's config (and the classifier's pooling, activation
    and classes); then every layer the spec's plan names is checked against the model
    (class, filters, kernel, strides, bias, epsilon, momentum, units) and every variable
    must find its place, so anything else raises SpecError naming what differs.
    """
    backbone, head = _parts(model)
    spec = spec_of_config(backbone.get_config(), **head)
    weights: dict[str, np.ndarray] = {}
    used: set[int] = set()
    for name, variable, _, to_canonical in _variables(model, backbone, spec):
        used.add(id(variable))
        weights[name] = np.array(to_canonical(keras.ops.convert_to_numpy(variable)), copy=True)  # no aliasing (trap 17)
    extra = [v.path for v in model.weights if id(v) not in used]
    if extra:
        raise SpecError(f"model {model.name!r}: variables {extra[:4]} have no place in the {spec.name} layout")
    return spec, check_weights(spec, weights, source=f"keras-hub model {model.name!r}")


def to_keras_hub(spec: ResNetSpec, weights: Mapping[str, np.ndarray], *,
                 preprocessing: Preprocessing | None = None) -> Any:
    """keras-hub's model of `spec` holding `weights`: a `ResNetImageClassifier` (pooling
    "avg" or "max", dropout, activation None or "softmax") when the spec has a classifier, else the
    `ResNetBackbone`. `preprocessing` (classifier only) becomes its
    ResNetImageClassifierPreprocessor's ResNetImageConverter.

    A spec keras-hub cannot build raises SpecError naming each field and keras-hub's
    value; weights are validated in full before any is assigned.
    """
    import keras_hub

    config = config_of_spec(spec)
    checked = check_weights(spec, weights, source="weights for keras-hub's ResNetBackbone")
    backbone = keras_hub.models.ResNetBackbone(**config)
    model = backbone
    if spec.num_classes is not None:
        preprocessor = None
        if preprocessing is not None:
            from shared_specs.preprocessing import to_keras_hub as converter_kwargs

            converter = keras_hub.layers.ResNetImageConverter(**converter_kwargs(preprocessing)[0])
            preprocessor = keras_hub.models.ResNetImageClassifierPreprocessor(image_converter=converter)
        model = keras_hub.models.ResNetImageClassifier(
            backbone=backbone, num_classes=spec.num_classes, preprocessor=preprocessor, pooling=spec.head.pool,
            dropout=spec.head.dropout, activation="softmax" if spec.head_activation == "softmax" else None)
    for name, variable, to_keras, _ in _variables(model, backbone, spec):
        # a fresh contiguous array: the JAX backend may alias numpy buffers (trap 17)
        variable.assign(np.array(to_keras(checked[name]), dtype=variable.dtype, order="C", copy=True))
    return model


def spec_of_config(config: Mapping[str, Any], *, num_classes: int | None = None, head_activation: str = "none",
                   pooling: str = "avg", dropout: float = 0.0) -> ResNetSpec:
    """The spec of a `ResNetBackbone` config (its get_config(), or config.json's "config"),
    with an ImageClassifier's classes, activation, pooling and dropout if it has one."""
    try:
        filters, kernels = list(config["input_conv_filters"]), list(config["input_conv_kernel_sizes"])
        stacks = list(zip(config["stackwise_num_filters"], config["stackwise_num_blocks"],
                          config["stackwise_num_strides"], strict=True))
        block_type, preact = config["block_type"], bool(config.get("use_pre_activation", False))
    except (KeyError, TypeError, ValueError) as err:
        raise SpecError(f"not a keras-hub ResNetBackbone config: {type(err).__name__} {err}") from None
    if block_type not in BLOCK_TYPES:
        raise SpecError(f"block_type {block_type!r} is not one of keras-hub's {list(BLOCK_TYPES)}")
    if len(set(kernels)) != 1 or kernels[0] % 2 == 0:
        raise SpecError(f"input_conv_kernel_sizes {kernels}: the spec's stem convs share one odd kernel size")
    vd = block_type.endswith("_vd")
    if vd and preact:  # keras-hub's vd shortcut then skips the pool and cannot downsample
        raise SpecError(f"block_type {block_type!r} with use_pre_activation: keras-hub's pre-activation vd "
                        "shortcut has no pool, so no strided stage adds up; the spec has no counterpart")
    block = "basic" if block_type.startswith("basic") else "bottleneck"
    stages, channels = [], filters[-1]
    for i, (width, depth, stride) in enumerate(stacks):
        out = width * (4 if block == "bottleneck" else 1)
        reshapes = channels != out or stride != 1
        projects = block_type != "basic_block" or i > 0
        if reshapes and not projects:
            raise SpecError(f"stack0 of a basic_block ResNetBackbone has no projection shortcut but changes "
                            f"{channels} -> {out} channels at stride {stride}: keras-hub cannot build it")
        stages.append(StageSpec(depth, width, stride, always_project=projects and not reshapes))
        channels = out
    image_shape = config.get("image_shape") or (None, None, 3)
    in_channels = image_shape[0] if config.get("data_format") == "channels_first" else image_shape[-1]
    spec = ResNetSpec(
        name="resnet", block=block, preactivation=preact, stages=tuple(stages), shortcut="D" if vd else "B",
        stem=StemSpec(widths=tuple(filters), kernel_size=kernels[0], stride=2, norm=not preact, pool="max",
                      pool_size=3, pool_stride=2, pool_pad_value="-inf" if preact else "zero"),
        batchnorm=_BN, in_channels=int(in_channels or 3), num_classes=num_classes, head_activation=head_activation,
        head=HeadSpec(pool=pooling, dropout=dropout))
    return spec.replace(name=find_preset(spec) or _name(spec, block_type))


def config_of_spec(spec: ResNetSpec) -> dict[str, Any]:
    """`ResNetBackbone` arguments building `spec`, or SpecError naming every field keras-hub
    cannot express (fields that only change initialisation or training statistics, and the
    stem pool's padding after a ReLU, may differ: the network is the same)."""
    vd = spec.shortcut == "D"
    block_type = f"{spec.block}_block" + ("_vd" if vd else "")
    config = {
        "input_conv_filters": list(spec.stem.widths),
        "input_conv_kernel_sizes": [spec.stem.kernel_size] * len(spec.stem.widths),
        "stackwise_num_filters": [s.width for s in spec.stages],
        "stackwise_num_blocks": [s.depth for s in spec.stages],
        "stackwise_num_strides": [s.stride for s in spec.stages],
        "block_type": block_type,
        "use_pre_activation": spec.preactivation,
        "image_shape": (None, None, spec.in_channels),
    }
    try:
        pooling = spec.head.pool if spec.head.pool in ("avg", "max") else "avg"  # ImageClassifier's two
        reference = spec_of_config(config, num_classes=spec.num_classes, head_activation=spec.head_activation,
                                   pooling=pooling, dropout=spec.head.dropout)
    except SpecError as err:
        raise SpecError(f"{spec.name} is not expressible as keras-hub's ResNetBackbone: {err}") from None
    diff = functional_differences(spec, reference)
    if spec.stages[0].width != 64:  # ResNetBackbone refuses any other first width
        diff.insert(0, Difference("stages[0].width", spec.stages[0].width, 64))
    if diff:
        fields = ", ".join(f"{d.path}={d.mine!r} (keras-hub: {d.theirs!r})" for d in diff)
        raise SpecError(f"{spec.name} is not expressible as keras-hub's ResNetBackbone ({block_type}): {fields}")
    return config


# -- helpers ------------------------------------------------------------------------


def _name(spec: ResNetSpec, block_type: str) -> str:
    """keras-hub's own numbering (resnet_vd_101: one stem conv counted, whatever the stem)."""
    variant = "_vd" if block_type.endswith("_vd") else "_v2" if spec.preactivation else ""
    layers = 2 + sum(s.depth for s in spec.stages) * (3 if spec.block == "bottleneck" else 2)
    return f"keras_hub_resnet{variant}_{layers}"


def _parts(model: Any) -> tuple[Any, dict[str, Any]]:
    """The backbone of a keras-hub ResNet model and the spec fields its head says."""
    import keras_hub

    if isinstance(model, keras_hub.models.ResNetBackbone):
        return model, {}
    if not isinstance(model, keras_hub.models.ImageClassifier):
        raise SpecError(f"expected a keras-hub ResNetBackbone or ResNetImageClassifier, got {type(model).__name__}")
    backbone = model.backbone
    if not isinstance(backbone, keras_hub.models.ResNetBackbone):
        raise SpecError(f"the classifier's backbone is a {type(backbone).__name__}, not a ResNetBackbone")
    activation = model.activation if isinstance(model.activation, (str, type(None))) else \
        keras.activations.serialize(model.activation)
    if activation not in _HEADS:
        raise SpecError(f"the classifier's activation {activation!r} has no spec counterpart; specs have "
                        "softmax or logits (activation=None) heads")
    return backbone, {"num_classes": int(model.num_classes), "head_activation": _HEADS[activation],
                      "pooling": model.pooling, "dropout": float(model.dropout)}


def _key(op: P.Op, stem_convs: int) -> tuple[str, dict[str, Any]]:
    """The KERAS_HUB_NAMES key of an op and the values its name template needs."""
    name = op.name
    if m := re.fullmatch(r"conv1\.(\d+)", name):
        j = int(m[1])
        return ("conv1.{3i-3}" if j % 3 == 0 else "conv1.{3i-2}"), {"i": j // 3 + 1}
    if m := re.fullmatch(r"layer(\d+)\.(\d+)\.(.+)", name):
        block, local = f"stack{int(m[1]) - 1}_block{m[2]}", m[3]
        if local.startswith("downsample."):
            local = "downsample<conv>" if isinstance(op, P.Conv) else "downsample<norm>"
        return "{block}." + local, {"block": block}
    return name, {"n": stem_convs}


def _variables(model: Any, backbone: Any, spec: ResNetSpec) -> Iterator[tuple[str, Any, Transform, Transform]]:
    """(canonical tensor name, model variable, to Keras, to canonical) for every weight,
    after checking each layer is what the plan says (else SpecError naming it)."""
    plan = P.make_plan(spec)
    column = int(spec.preactivation)
    for op in plan.ops():
        rules = op_rules(op)
        if not rules:
            continue
        key, values = _key(op, len(spec.stem.widths))
        template = KERAS_HUB_NAMES.get(key, (None, None))[column]
        if template is None:
            raise SpecError(f"{op.name}: keras-hub's ResNet has no layer for it")  # config_of_spec refuses first
        layer = _layer(model if op.name == "fc" else backbone, template.format(**values))
        check_layer(op, layer, spec)
        for suffix, attr, to_keras, to_canonical in rules:
            yield f"{op.name}.{suffix}", getattr(layer, attr), to_keras, to_canonical


def _layer(model: Any, name: str) -> Any:
    try:
        return model.get_layer(name)
    except ValueError:
        raise SpecError(f"model {model.name!r} is not a keras-hub ResNet: it has no layer {name!r}") from None
