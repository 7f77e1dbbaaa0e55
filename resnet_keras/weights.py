"""Canonical weights in and out of a Keras ResNet (the PyTorch twin is resnet_torch/weights.py).

`RULES` is the one table of how a canonical tensor maps to a Keras variable: its
attribute and the layout transforms both ways. Export and import read the same
table, so the two directions cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import keras
import numpy as np

from resnet_keras.build import ResNet, build
from resnet_keras.layers import keras_name
from shared_specs import check_weights, make_plan, write_checkpoint
from shared_specs import plan as P
from shared_specs.checkpoint import read_spec_and_weights, read_weights_for
from shared_specs.layout import (
    conv1d_from_keras,
    conv1d_to_keras,
    conv_from_keras,
    conv_to_keras,
    dense_from_keras,
    dense_to_keras,
)

Transform = Callable[[np.ndarray], np.ndarray]


def _same(a: np.ndarray) -> np.ndarray:
    return a


# (canonical suffix, Keras variable's attribute path, canonical -> Keras, Keras -> canonical)
Rule = tuple[str, str, Transform, Transform]
_AFFINE: tuple[Rule, ...] = (("weight", "gamma", _same, _same), ("bias", "beta", _same, _same))
_BATCHNORM: tuple[Rule, ...] = (*_AFFINE, ("running_mean", "moving_mean", _same, _same),
                                 ("running_var", "moving_variance", _same, _same))
_PER_CHANNEL: tuple[Rule, ...] = tuple((p, p, _same, _same) for p in ("weight", "bias", "v", "tau"))
RULES: dict[type, tuple[Rule, ...]] = {
    P.Conv: (  # kernel layouts: shared_specs/layout.py (traps 1, 3)
        ("weight", "kernel", conv_to_keras, conv_from_keras),
        ("bias", "bias", _same, _same),
    ),
    P.BatchNorm: _BATCHNORM,
    P.BatchNorm1d: _BATCHNORM,  # a classifier's: BatchNormalization over the last axis, the same variables
    P.GroupNorm: _AFFINE,
    P.EvoNormS0: _PER_CHANNEL,  # our layers name their vectors as PyTorch does
    P.FilterResponseNorm: _PER_CHANNEL,
    P.SqueezeExcite: tuple((f"{fc}.{suffix}", f"{fc}.{attr}", to_k, to_c) for fc in ("fc1", "fc2")
                           for suffix, attr, to_k, to_c in (("weight", "kernel", conv_to_keras, conv_from_keras),
                                                            ("bias", "bias", _same, _same))),
    P.EfficientChannelAttention: (("conv.weight", "kernel", conv1d_to_keras, conv1d_from_keras),),
    P.Linear: (  # (out, in) <-> (in, out) (trap 2)
        ("weight", "kernel", dense_to_keras, dense_from_keras),
        ("bias", "bias", _same, _same),
    ),
}


def op_rules(op: P.Op) -> tuple[Rule, ...]:
    """The rows of RULES for the tensors `op` has (a conv without bias has no bias row)."""
    suffixes = {name[len(op.name) + 1:] for name, _, _ in P.op_tensors(op)}
    return tuple(rule for rule in RULES.get(type(op), ()) if rule[0] in suffixes)


def canonical_variables(model: ResNet) -> Iterator[tuple[str, Any, Transform, Transform]]:
    """(canonical tensor name, Keras variable, to Keras, to canonical) for every weight, in plan
    order: how to read anything defined per variable (a gradient, an optimizer slot) canonically."""
    layers = {layer.name: layer for layer in model.layers}  # get_layer is a linear scan
    for op in make_plan(model.spec).ops():
        rules = op_rules(op)
        if rules:
            layer = layers[keras_name(op.name)]
            for suffix, path, to_keras, to_canonical in rules:
                variable = layer
                for attr in path.split("."):  # "fc1.kernel": a sub-layer's variable
                    variable = getattr(variable, attr)
                yield f"{op.name}.{suffix}", variable, to_keras, to_canonical


def export_weights(model: ResNet) -> dict[str, np.ndarray]:
    """The model's canonical weights: numpy copies in PyTorch layout, in plan order."""
    return {
        name: np.array(to_canonical(keras.ops.convert_to_numpy(variable)), copy=True)  # no aliasing (trap 17)
        for name, variable, _, to_canonical in canonical_variables(model)
    }


def import_weights(model: ResNet, weights: Mapping[str, np.ndarray], *, source: str = "weights") -> None:
    """Load canonical weights. Strict and all-or-nothing: every missing, unexpected or
    mis-shaped tensor is listed in one WeightsError and the model is left untouched."""
    checked = check_weights(model.spec, weights, source=source)
    for name, variable, to_keras, _ in canonical_variables(model):
        # a fresh contiguous array: the JAX backend may alias numpy buffers (trap 17)
        variable.assign(np.array(to_keras(checked[name]), dtype=variable.dtype, order="C", copy=True))


def save_weights(model: ResNet, path: str | os.PathLike[str]) -> None:
    """Write the canonical checkpoint (safetensors + spec JSON + format version), atomically."""
    write_checkpoint(path, export_weights(model), model.spec)


def load_weights(model: ResNet, path: str | os.PathLike[str]) -> None:
    """Load a canonical checkpoint into `model`; its stored spec must match the model's."""
    import_weights(model, read_weights_for(path, model.spec, "resnet_keras.load_model"), source=str(path))


def load_model(path: str | os.PathLike[str]) -> ResNet:
    """Build the model a canonical checkpoint describes and load its weights."""
    spec, weights = read_spec_and_weights(path)
    model = build(spec, initialize=False)  # every value is imported next
    import_weights(model, weights, source=str(path))
    return model
