"""Per-layer outputs of our PyTorch and Keras ResNets, keyed by canonical name.

Enough to show where a mistake first changes the function ("the first bite"):
every op of the plan is a module of its own in resnet_torch and the last Keras layer
of its name in resnet_keras, so both sides can be read at the same canonical names.
Feature maps come back NCHW from both frameworks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from resnet_rosetta.frameworks import import_frameworks
from shared_specs import ResNetSpec, make_plan


def probe_names(spec: ResNetSpec) -> list[str]:
    """Canonical op names in execution order; a block without a closing op (pre-activation
    blocks end in the addition) is read at its own name (`layer1.0`)."""
    plan = make_plan(spec)
    names = [op.name for op in plan.stem]
    for block in plan.blocks():
        names += [op.name for op in block.ops()]
        if not block.post:
            names.append(block.name)
    return names + [op.name for op in plan.post] + [op.name for op in plan.head]


def torch_outputs(model: Any, x: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Eval-mode outputs of `names` (default: all probe names) of a resnet_torch model on NCHW `x`."""
    torch, _ = import_frameworks()
    names = names if names is not None else probe_names(model.spec)
    seen: dict[str, np.ndarray] = {}
    hooks = []
    for name in names:
        def keep(_module: Any, _inputs: Any, output: Any, name: str = name) -> None:
            seen[name] = output.detach().cpu().numpy().copy()

        hooks.append(model.get_submodule(name).register_forward_hook(keep))
    try:
        model.eval()
        with torch.no_grad():
            model(torch.from_numpy(x).to(next(model.parameters()).dtype))
    finally:
        for hook in hooks:
            hook.remove()
    return {name: seen[name] for name in names}


def keras_outputs(model: Any, x: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Inference outputs of `names` of a resnet_keras model on NCHW `x`, returned NCHW."""
    _, keras = import_frameworks()
    names = names if names is not None else probe_names(model.spec)
    blocks = {b.name: b for b in make_plan(model.spec).blocks()}

    def layer_name(name: str) -> str:
        block = blocks.get(name)
        if block is None:
            return name.replace(".", "_")
        return (block.post[-1].name if block.post else block.name + ".add").replace(".", "_")

    probe = keras.Model(model.input, [model.get_layer(layer_name(n)).output for n in names])
    outputs = probe(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), training=False)
    result = {}
    for name, y in zip(names, outputs, strict=True):
        y = keras.ops.convert_to_numpy(y)
        result[name] = np.ascontiguousarray(y.transpose(0, 3, 1, 2)) if y.ndim == 4 else y
    return result


def relative_difference(reference: np.ndarray, other: np.ndarray) -> float:
    """max |reference - other| / max |reference|; infinite when the shapes differ."""
    if reference.shape != other.shape:
        return float("inf")
    scale = float(np.abs(reference).max())
    return float(np.abs(reference.astype(np.float64) - other).max()) / max(scale, 1e-30)


def first_divergence(reference: dict[str, np.ndarray], other: dict[str, np.ndarray],
                     tolerance: float) -> tuple[str, float] | None:
    """The first name (in `reference`'s order, among those `other` has too) whose relative
    difference exceeds `tolerance`."""
    for name, ref in reference.items():
        if name not in other:  # a layer only one side has (a naive port that drops BlurPool)
            continue
        rel = relative_difference(ref, other[name])
        if rel > tolerance:
            return name, rel
    return None
