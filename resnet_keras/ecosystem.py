"""keras.applications ResNets <-> (spec, canonical weights) (the PyTorch twin, for
torchvision and timm, is resnet_torch/ecosystem.py).

keras.applications builds its six ResNets from two block functions
(keras/src/applications/resnet.py: `residual_block_v1`, `residual_block_v2`), and the
presets `resnet{50,101,152}_v{1,2}` are exactly their layout. So converting is
naming: `KERAS_APPLICATIONS_NAMES` gives each op of the spec's plan its
keras.applications layer name, and resnet_keras.weights.RULES gives each tensor's
layout. Both directions read the same two tables.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import keras
import numpy as np

from resnet_keras.weights import Transform, op_rules
from shared_specs import BatchNormSpec, ResNetSpec, SpecError, StageSpec, check_weights, get_spec, make_plan
from shared_specs import plan as P
from shared_specs.spec import HeadSpec

# keras.applications layer name of every weighted op, by canonical name; in a block the
# key and the name start with "{block}": canonical `layer{s}.{b}`, keras `conv{s+1}_block{b+1}`.
# v1's BN k follows conv k; v2's BN k precedes conv k (its bn1 is keras's preact_bn).
# None: that version has no such layer.
#   canonical                v1: ResNet50/101/152    v2: ResNet50V2/101V2/152V2
KERAS_APPLICATIONS_NAMES: dict[str, tuple[str | None, str | None]] = {
    "conv1":                 ("conv1_conv",          "conv1_conv"),
    "bn1":                   ("conv1_bn",            None),
    "{block}.bn1":           ("{block}_1_bn",        "{block}_preact_bn"),
    "{block}.conv1":         ("{block}_1_conv",      "{block}_1_conv"),
    "{block}.bn2":           ("{block}_2_bn",        "{block}_1_bn"),
    "{block}.conv2":         ("{block}_2_conv",      "{block}_2_conv"),
    "{block}.bn3":           ("{block}_3_bn",        "{block}_2_bn"),
    "{block}.conv3":         ("{block}_3_conv",      "{block}_3_conv"),
    "{block}.downsample.0":  ("{block}_0_conv",      "{block}_0_conv"),
    "{block}.downsample.1":  ("{block}_0_bn",        None),
    "post_bn":               (None,                  "post_bn"),
    "fc":                    ("predictions",         "predictions"),
}  # fmt: skip

# The presets that are keras.applications models, with their constructors.
CONSTRUCTORS: dict[str, str] = {
    "resnet50_v1": "ResNet50", "resnet101_v1": "ResNet101", "resnet152_v1": "ResNet152",
    "resnet50_v2": "ResNet50V2", "resnet101_v2": "ResNet101V2", "resnet152_v2": "ResNet152V2",
}


def from_keras_applications(model: keras.Model) -> tuple[ResNetSpec, dict[str, np.ndarray]]:
    """(spec, canonical weights) of a keras.applications ResNet50/101/152 or ResNet*V2.

    The architecture is read from the model's layers (stage depths and widths,
    strides, classes, classifier activation, input channels, BN epsilon and
    momentum), then every layer the spec's plan names is checked against it and
    every model variable must find its place, so a model that is not one of these
    raises SpecError naming the layer that differs.
    """
    spec = _read_spec(model)
    weights: dict[str, np.ndarray] = {}
    used: set[int] = set()
    for name, variable, _, to_canonical in _variables(model, spec):
        used.add(id(variable))
        weights[name] = np.array(to_canonical(keras.ops.convert_to_numpy(variable)), copy=True)  # no aliasing (trap 17)
    extra = [v.path for v in model.weights if id(v) not in used]
    if extra:
        raise SpecError(f"model {model.name!r}: variables {extra[:4]} have no place in the {spec.name} layout")
    return spec, check_weights(spec, weights, source=f"keras.applications model {model.name!r}")


def to_keras_applications(spec: ResNetSpec, weights: Mapping[str, np.ndarray], *,
                          input_size: tuple[int | None, int | None] | None = None) -> keras.Model:
    """The keras.applications model of `spec` (weights=None), holding `weights`.

    `input_size` (H, W) defaults to keras.applications' own: 224x224 with a classifier,
    any size without. A spec keras.applications cannot build (torchvision's v1.5
    resnet50, another epsilon, groups ...) raises SpecError naming each field that
    differs; weights are validated in full before any is assigned.
    """
    constructor = keras_applications_constructor(spec)
    checked = check_weights(spec, weights, source=f"weights for keras.applications.{constructor}")
    include_top = spec.num_classes is not None
    if input_size is None:
        input_size = (224, 224) if include_top else (None, None)
    channels_last = keras.config.image_data_format() == "channels_last"
    shape = (*input_size, spec.in_channels) if channels_last else (spec.in_channels, *input_size)
    model = getattr(keras.applications, constructor)(
        weights=None, include_top=include_top, input_shape=shape, classes=spec.num_classes or 1000,
        classifier_activation="softmax" if spec.head_activation == "softmax" else None)
    for name, variable, to_keras, _ in _variables(model, spec):
        # a fresh contiguous array: the JAX backend may alias numpy buffers (trap 17)
        variable.assign(np.array(to_keras(checked[name]), dtype=variable.dtype, order="C", copy=True))
    return model


def keras_applications_constructor(spec: ResNetSpec) -> str:
    """The keras.applications function building `spec` (e.g. "ResNet50V2"), or SpecError
    naming every field keras.applications cannot express."""
    version = "v2" if spec.preactivation else "v1"
    by_depths = {tuple(s.depth for s in get_spec(p).stages): p for p in CONSTRUCTORS if p.endswith(version)}
    depths = tuple(s.depth for s in spec.stages)
    if depths not in by_depths:
        raise SpecError(f"stages: keras.applications has {version} ResNets with stage depths "
                        f"{sorted(by_depths)}, not {depths} ({spec.name})")
    preset = by_depths[depths]
    if spec.head != HeadSpec():
        raise SpecError(f"{spec.name} is not expressible as keras.applications.{CONSTRUCTORS[preset]}: its classifier "
                        f"is an avg pool and one Dense ('predictions'), the spec's head {spec.head.describe()} "
                        "(resnet_keras.build(spec) holds it)")
    # What keras.applications takes as arguments (or, zero_init_last_bn, what only
    # initialisation uses) may differ; everything else must be the preset's.
    reference = get_spec(preset).replace(in_channels=spec.in_channels, num_classes=spec.num_classes,
                                         head_activation=spec.head_activation,
                                         zero_init_last_bn=spec.zero_init_last_bn)
    diff = spec.differences(reference)
    if diff:
        fields = ", ".join(f"{d.path}={d.mine!r} (keras.applications: {d.theirs!r})" for d in diff)
        raise SpecError(f"{spec.name} is not expressible as keras.applications.{CONSTRUCTORS[preset]}: {fields}")
    return CONSTRUCTORS[preset]


# -- helpers ------------------------------------------------------------------------


def _layer_names(plan: P.Plan) -> dict[str, str]:
    """The keras.applications layer name of every weighted op of a keras.applications
    layout's plan (KERAS_APPLICATIONS_NAMES has a name for each)."""
    column = int(plan.spec.preactivation)
    names: dict[str, str] = {}

    def add(op: P.Op, key: str, block: str = "") -> None:
        if op_rules(op):
            names[op.name] = KERAS_APPLICATIONS_NAMES[key][column].format(block=block)  # type: ignore[union-attr]

    for op in plan.stem:
        add(op, op.name)
    for s, stage in enumerate(plan.stages, start=2):  # keras numbers stages from conv2
        for b, block in enumerate(stage.blocks, start=1):
            for op in block.ops():
                add(op, "{block}." + block.local(op), f"conv{s}_block{b}")
    for op in (*plan.post, *plan.head):
        add(op, op.name)
    return names


def _variables(model: keras.Model, spec: ResNetSpec) -> Iterator[tuple[str, Any, Transform, Transform]]:
    """(canonical tensor name, model variable, to Keras, to canonical) for every weight,
    after checking each layer is what the plan says (else SpecError naming it)."""
    plan = make_plan(spec)
    names = _layer_names(plan)
    for op in plan.ops():
        rules = op_rules(op)
        if rules:
            layer = _layer(model, names[op.name])
            check_layer(op, layer, spec)
            for suffix, attr, to_keras, to_canonical in rules:
                yield f"{op.name}.{suffix}", getattr(layer, attr), to_keras, to_canonical


def check_layer(op: P.Op, layer: keras.layers.Layer, spec: ResNetSpec) -> None:
    """SpecError unless a library's `layer` (keras.applications, keras-hub) is the Conv2D,
    BatchNormalization or Dense that the plan's `op` says, configured alike."""
    if isinstance(op, P.Conv):
        kind: type = keras.layers.Conv2D
        expected: dict[str, Any] = {"filters": op.out_channels, "kernel_size": (op.kernel_size,) * 2,
                                    "strides": (op.stride,) * 2, "groups": op.groups, "use_bias": op.bias}
    elif isinstance(op, P.BatchNorm):
        kind, expected = keras.layers.BatchNormalization, {"epsilon": op.epsilon, "momentum": op.running_stats_decay}
    else:
        kind, expected = keras.layers.Dense, {"units": op.out_features}  # type: ignore[union-attr]
    if not isinstance(layer, kind):
        raise SpecError(f"layer {layer.name!r} is a {type(layer).__name__}; the {spec.name} layout has a "
                        f"{kind.__name__} there")
    for attr, value in expected.items():
        actual = getattr(layer, attr)
        if (tuple(actual) if isinstance(actual, (list, tuple)) else actual) != value:
            raise SpecError(f"layer {layer.name!r} has {attr}={actual!r}; the {spec.name} layout needs {value!r}")


def _layer(model: keras.Model, name: str) -> keras.layers.Layer:
    try:
        return model.get_layer(name)
    except ValueError:
        raise SpecError(f"model {model.name!r} is not a keras.applications ResNet: it has no layer {name!r}") from None


def _read_spec(model: Any) -> ResNetSpec:
    """The spec of a keras.applications ResNet, from its layer names and configurations."""
    if not isinstance(model, keras.Model):
        raise SpecError(f"expected a keras.Model, got {type(model).__name__}")
    for required in ("conv1_conv", "conv2_block1_1_conv"):
        _layer(model, required)
    names = {layer.name for layer in model.layers}
    preact = "post_bn" in names  # ResNet*V2 closes with BN + ReLU; v1 has conv1_bn instead
    stages = []
    while f"conv{len(stages) + 2}_block1_1_conv" in names:
        n = len(stages) + 2
        depth = 1
        while f"conv{n}_block{depth + 1}_1_conv" in names:
            depth += 1
        # v1 strides the first block's 1x1, v2 the last block's 3x3 (presets resnet50_v1/v2)
        strided = f"conv{n}_block{depth}_2_conv" if preact else f"conv{n}_block1_1_conv"
        width = _layer(model, f"conv{n}_block1_1_conv").filters
        stages.append(StageSpec(depth, width, _layer(model, strided).strides[0]))
    last_block = f"conv{len(stages) + 1}_block{stages[-1].depth}_out"
    num_classes, head = None, "none"
    if "predictions" in names:
        dense = model.get_layer("predictions")
        activation = keras.activations.serialize(dense.activation)
        heads = {"softmax": "softmax", "linear": "none"}
        if activation not in heads:
            raise SpecError(f"model {model.name!r}: classifier_activation={activation!r} has no spec counterpart; "
                            "specs have softmax or logits (classifier_activation=None) heads")
        num_classes, head = dense.units, heads[activation]
    else:
        for pool, mode in (("avg_pool", "avg"), ("max_pool", "max")):
            if pool in names:
                raise SpecError(f"model {model.name!r} was built with include_top=False, pooling={mode!r}: a spec "
                                "without a classifier returns the feature map; rebuild it with pooling=None")
    ends_in = "predictions" if num_classes else "post_relu" if preact else last_block
    if model.layers[-1].name != ends_in:
        raise SpecError(f"model {model.name!r} ends in layer {model.layers[-1].name!r} where a keras.applications "
                        f"ResNet ends in {ends_in!r}: a model built on one reads with resnet_keras.from_model")
    conv1 = model.get_layer("conv1_conv")
    bn = _layer(model, "post_bn" if preact else "conv1_bn")
    version = 2 if preact else 1
    return get_spec(f"resnet50_v{version}").replace(
        name=f"resnet{2 + 3 * sum(s.depth for s in stages)}_v{version}",
        stages=tuple(stages),
        stem={"widths": (conv1.filters,)},
        in_channels=int(conv1.kernel.shape[2]),
        batchnorm=BatchNormSpec(float(bn.epsilon), float(bn.momentum), running_var="biased"),  # Keras's own BN
        num_classes=num_classes,
        head_activation=head,
    )
