"""transformers' ResNet (`ResNetModel`, `ResNetForImageClassification`) <-> (spec, canonical
weights) (the Keras twin, for keras-hub, is resnet_keras/keras_hub.py).

transformers builds its ResNet from a `ResNetConfig` (models/resnet/modeling_resnet.py):
a 7x7/2 stem of `embedding_size` channels with BatchNorm, ReLU and a 3x3/2 max-pool;
stages of `layer_type` "basic" or "bottleneck" blocks whose OUTPUT widths are
`hidden_sizes` (a bottleneck reduces by 4 inside), strided in the first block (stage 1
only with `downsample_in_first_stage`; the stride on the bottleneck's 1x1 with
`downsample_in_bottleneck`), a 1x1 conv + BatchNorm projection wherever the shape
changes; nn.BatchNorm2d defaults; then a global average pool and, in the classifier,
`classifier.1` (nn.Flatten, nn.Linear). Since transformers 5 it is PyTorch only.

So converting is `spec_of_config` / `config_of_spec` and one name table,
`TRANSFORMERS_NAMES`, laid over the spec's plan; both are PyTorch, so tensors keep their
layout. transformers is imported on first use, and not at all to read a state_dict
with its config (what a `save_pretrained` directory holds).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from resnet_torch.ecosystem import _numpy_state
from shared_specs import BatchNormSpec, ResNetSpec, SpecError, StageSpec, StemSpec, WeightsError, check_weights
from shared_specs import plan as P
from shared_specs.plan import IGNORED_SUFFIXES
from shared_specs.presets import find_preset
from shared_specs.spec import functional_differences

Weights = dict[str, np.ndarray]

# transformers' module name of every weighted op, by canonical name. In a block the key and the
# name start with "{block}": canonical `layer{s}.{b}`, transformers `encoder.stages.{s-1}.layers.{b}`.
# Names are ResNetModel's; ResNetForImageClassification puts all but the classifier under "resnet.".
#   canonical               transformers
TRANSFORMERS_NAMES: dict[str, str] = {
    "conv1":                "embedder.embedder.convolution",
    "bn1":                  "embedder.embedder.normalization",
    "{block}.conv1":        "{block}.layer.0.convolution",
    "{block}.bn1":          "{block}.layer.0.normalization",
    "{block}.conv2":        "{block}.layer.1.convolution",
    "{block}.bn2":          "{block}.layer.1.normalization",
    "{block}.conv3":        "{block}.layer.2.convolution",
    "{block}.bn3":          "{block}.layer.2.normalization",
    "{block}.downsample.0": "{block}.shortcut.convolution",
    "{block}.downsample.1": "{block}.shortcut.normalization",
    "fc":                   "classifier.1",
}  # fmt: skip
_MODEL_PREFIX = "resnet."  # ResNetForImageClassification.resnet is the ResNetModel
CONFIG_KEYS = ("num_channels", "embedding_size", "hidden_sizes", "depths", "layer_type", "hidden_act",
               "downsample_in_first_stage", "downsample_in_bottleneck")


def from_transformers(model_or_state_dict: nn.Module | Mapping[str, Any],
                      config: Any = None) -> tuple[ResNetSpec, Weights]:
    """(spec, canonical numpy weights) of a transformers `ResNetForImageClassification` or
    `ResNetModel`, or of either's state_dict.

    A model brings its config (every BatchNorm's eps and momentum are checked against it).
    With a state_dict, `config` is its `ResNetConfig` or config.json's dict; without one
    the layout is read from the tensor shapes, and what shapes cannot say takes
    ResNetConfig's defaults: the bottleneck stride on the 3x3 (downsample_in_bottleneck
    False), and stage 1 unstrided unless it projects a shape-keeping block
    (downsample_in_first_stage). Every tensor must find its place (num_batches_tracked
    aside), or WeightsError lists what does not.
    """
    if isinstance(model_or_state_dict, nn.Module):
        model = model_or_state_dict
        from transformers import ResNetForImageClassification, ResNetModel

        if not isinstance(model, (ResNetForImageClassification, ResNetModel)):
            raise SpecError(f"expected a transformers ResNetForImageClassification or ResNetModel, got "
                            f"{type(model).__name__}")
        if config is not None:
            raise SpecError("a transformers model brings its own config; pass config only with a state_dict")
        for name, module in model.named_modules():
            if isinstance(module, nn.BatchNorm2d) and (module.eps, module.momentum) != (1e-5, 0.1):
                raise SpecError(f"{name} has eps={module.eps}, momentum={module.momentum}; transformers' ResNet "
                                "uses nn.BatchNorm2d's defaults (1e-5, 0.1), which the config cannot change")
        config, state = model.config, model.state_dict()
    else:
        state = model_or_state_dict
    numpy_state = _numpy_state(state)
    classifier = any(k.startswith(_MODEL_PREFIX) for k in numpy_state)
    config = _config_dict(config) if config is not None else _infer_config(numpy_state, classifier)
    num_classes = _num_classes(numpy_state) if classifier else None
    spec = spec_of_config(config, num_classes=num_classes)
    names = tensor_names(spec, classifier)
    by_theirs = {theirs: ours for ours, theirs in names.items()}
    extra = [k for k in numpy_state if k not in by_theirs and not k.endswith(IGNORED_SUFFIXES)]
    if extra:
        raise WeightsError(f"transformers state_dict of {spec.name}: tensors {extra[:4]} have no place in its layout")
    weights = {ours: numpy_state[theirs] for theirs, ours in by_theirs.items() if theirs in numpy_state}
    return spec, check_weights(spec, weights, source=f"the transformers {spec.name} state_dict")


def to_transformers(spec: ResNetSpec, weights: Mapping[str, np.ndarray], *,
                    labels: list[str] | None = None) -> nn.Module:
    """`ResNetForImageClassification` (or `ResNetModel` when the spec has no classifier)
    computing `spec`, `weights` loaded, in eval mode; `labels` become its id2label.

    SpecError names every field transformers' ResNetConfig cannot express (fields that only
    change initialisation or training statistics, and the stem pool's padding after a ReLU,
    may differ); WeightsError lists every tensor that does not fit; nothing is built first.
    """
    from transformers import ResNetConfig, ResNetForImageClassification, ResNetModel

    config = config_of_spec(spec)
    checked = check_weights(spec, weights, source="weights for transformers' ResNet")
    classifier = spec.num_classes is not None
    extra: dict[str, Any] = {}
    if classifier:
        extra["num_labels"] = spec.num_classes
        if labels is not None:
            if len(labels) != spec.num_classes:
                raise SpecError(f"{len(labels)} labels for {spec.num_classes} classes")
            extra.update(id2label=dict(enumerate(labels)), label2id={v: i for i, v in enumerate(labels)})
    with torch.device("meta"):  # no random init of weights about to be replaced
        model = (ResNetForImageClassification if classifier else ResNetModel)(ResNetConfig(**config, **extra))
    names = tensor_names(spec, classifier)
    state: dict[str, torch.Tensor] = {}
    by_theirs = {theirs: ours for ours, theirs in names.items()}
    for theirs, placeholder in model.state_dict().items():
        if theirs in by_theirs:  # torch.tensor copies: the model never aliases the caller's arrays (trap 17)
            state[theirs] = torch.tensor(checked[by_theirs[theirs]], dtype=placeholder.dtype)
        elif theirs.endswith(IGNORED_SUFFIXES):
            state[theirs] = torch.zeros(placeholder.shape, dtype=placeholder.dtype)
        else:  # unreachable after config_of_spec; guards the name table's agreement with transformers
            raise RuntimeError(f"transformers' {theirs} has no canonical tensor")
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def spec_of_config(config: Mapping[str, Any], *, num_classes: int | None = None) -> ResNetSpec:
    """The spec of a ResNetConfig (as a dict of its fields; defaults for missing keys)."""
    c = {**_defaults(), **{k: v for k, v in config.items() if k in CONFIG_KEYS}}
    if c["layer_type"] not in ("basic", "bottleneck"):
        raise SpecError(f"layer_type {c['layer_type']!r} is not transformers' 'basic' or 'bottleneck'")
    if c["hidden_act"] != "relu":
        raise SpecError(f"hidden_act {c['hidden_act']!r}: the spec's blocks use ReLU")
    hidden, depths = list(c["hidden_sizes"]), list(c["depths"])
    if len(hidden) != len(depths) or not hidden:
        raise SpecError(f"hidden_sizes {hidden} and depths {depths} must list the same stages")
    bottleneck = c["layer_type"] == "bottleneck"
    if bottleneck and any(h % 4 for h in hidden):
        raise SpecError(f"hidden_sizes {hidden}: a bottleneck's output is 4 times its inner width")
    stages = tuple(StageSpec(d, h // 4 if bottleneck else h, 2 if i or c["downsample_in_first_stage"] else 1)
                   for i, (h, d) in enumerate(zip(hidden, depths)))
    spec = ResNetSpec(
        name="resnet", block=c["layer_type"], stages=stages,
        bottleneck_stride="1x1" if bottleneck and c["downsample_in_bottleneck"] else "3x3",
        stem=StemSpec(widths=(int(c["embedding_size"]),), kernel_size=7, stride=2),
        batchnorm=BatchNormSpec(), in_channels=int(c["num_channels"]), num_classes=num_classes)
    return spec.replace(name=find_preset(spec) or f"transformers_resnet_{spec.depth}")


def config_of_spec(spec: ResNetSpec) -> dict[str, Any]:
    """ResNetConfig fields building `spec`, or SpecError naming what transformers cannot express."""
    bottleneck = spec.block == "bottleneck"
    config = {
        "num_channels": spec.in_channels,
        "embedding_size": spec.stem.widths[0],
        "hidden_sizes": [s.width * (4 if bottleneck else 1) for s in spec.stages],
        "depths": [s.depth for s in spec.stages],
        "layer_type": spec.block,
        "hidden_act": "relu",
        "downsample_in_first_stage": spec.stages[0].stride == 2,
        "downsample_in_bottleneck": bottleneck and spec.bottleneck_stride == "1x1",
    }
    reference = spec_of_config(config, num_classes=spec.num_classes)
    diff = functional_differences(spec, reference)
    if diff:
        fields = ", ".join(f"{d.path}={d.mine!r} (transformers: {d.theirs!r})" for d in diff)
        raise SpecError(f"{spec.name} is not expressible as transformers' ResNet: {fields}")
    return config


def tensor_names(spec: ResNetSpec, classifier: bool) -> dict[str, str]:
    """Canonical tensor name -> transformers state_dict key, for every tensor of `spec`."""
    prefix = _MODEL_PREFIX if classifier else ""
    names = {}
    for op in P.make_plan(spec).ops():
        for tensor, _, _ in P.op_tensors(op):
            suffix = tensor[len(op.name) + 1:]
            if m := re.fullmatch(r"layer(\d+)\.(\d+)\.(.+)", op.name):
                key, block = "{block}." + m[3], f"encoder.stages.{int(m[1]) - 1}.layers.{m[2]}"
            else:
                key, block = op.name, ""
            if key not in TRANSFORMERS_NAMES:
                raise SpecError(f"{op.name}: transformers' ResNet has no layer for it")  # config_of_spec refuses first
            module = TRANSFORMERS_NAMES[key].format(block=block)
            names[tensor] = f"{'' if op.name == 'fc' else prefix}{module}.{suffix}"
    return names


# -- helpers ------------------------------------------------------------------------


def _defaults() -> dict[str, Any]:
    """ResNetConfig's defaults (microsoft/resnet-50's layout), without importing transformers."""
    return {"num_channels": 3, "embedding_size": 64, "hidden_sizes": [256, 512, 1024, 2048], "depths": [3, 4, 6, 3],
            "layer_type": "bottleneck", "hidden_act": "relu", "downsample_in_first_stage": False,
            "downsample_in_bottleneck": False}


def _config_dict(config: Any) -> dict[str, Any]:
    if isinstance(config, Mapping):
        data = dict(config)
    elif hasattr(config, "to_dict"):
        data = config.to_dict()
    else:
        raise SpecError(f"config must be a transformers ResNetConfig or a dict, got {type(config).__name__}")
    model_type = data.get("model_type", "resnet")
    if model_type != "resnet":
        raise SpecError(f"config has model_type {model_type!r}, not transformers' 'resnet'")
    return data


def _num_classes(state: Mapping[str, np.ndarray]) -> int:
    weight = state.get("classifier.1.weight")
    if weight is None:
        raise SpecError("a ResNetForImageClassification state_dict without classifier.1.weight (num_labels=0 "
                        "has no classifier and returns pooled features, which the spec cannot express: use "
                        "ResNetModel)")
    return int(weight.shape[0])


def _infer_config(state: Mapping[str, np.ndarray], classifier: bool) -> dict[str, Any]:
    """A ResNetConfig dict from a state_dict's names and shapes (see from_transformers)."""
    prefix = _MODEL_PREFIX if classifier else ""
    stem = state.get(f"{prefix}embedder.embedder.convolution.weight")
    if stem is None:
        raise SpecError(f"not a transformers ResNet state_dict: no {prefix}embedder.embedder.convolution.weight")
    depths: list[int] = []
    while f"{prefix}encoder.stages.{len(depths)}.layers.0.layer.0.convolution.weight" in state:
        i = len(depths)
        depth = 1
        while f"{prefix}encoder.stages.{i}.layers.{depth}.layer.0.convolution.weight" in state:
            depth += 1
        depths.append(depth)
    if not depths:
        raise SpecError(f"not a transformers ResNet state_dict: no {prefix}encoder.stages.0.layers.0 tensors")
    bottleneck = f"{prefix}encoder.stages.0.layers.0.layer.2.convolution.weight" in state
    last = 2 if bottleneck else 1
    hidden = [int(state[f"{prefix}encoder.stages.{i}.layers.0.layer.{last}.convolution.weight"].shape[0])
              for i in range(len(depths))]
    # stage 1 is strided exactly when it projects a block that keeps its channels
    first_projects = f"{prefix}encoder.stages.0.layers.0.shortcut.convolution.weight" in state
    return {**_defaults(), "num_channels": int(stem.shape[1]), "embedding_size": int(stem.shape[0]),
            "hidden_sizes": hidden, "depths": depths, "layer_type": "bottleneck" if bottleneck else "basic",
            "downsample_in_first_stage": first_projects and int(stem.shape[0]) == hidden[0]}
