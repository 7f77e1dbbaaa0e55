"""The PyTorch module tree and the Keras layer graph of one spec, row by row.

Each row is one canonical name: the PyTorch module at that path and the Keras
layer(s) carrying it, with the output shape each framework produces (NCHW and
NHWC). Containers show where the two designs differ: PyTorch nests blocks in
modules, a Keras functional graph has only layers, so a PyTorch residual block
meets Keras's Add layer and a stage has no Keras counterpart at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from resnet_rosetta.frameworks import import_frameworks
from shared_specs import ResNetSpec, make_plan


@dataclass(frozen=True)
class Row:
    """One canonical name: its PyTorch module and the Keras layer(s) carrying it, with shapes."""

    canonical: str  # "" for the whole model
    torch_class: str
    torch_shape: tuple[int, ...]
    keras_layers: tuple[tuple[str, str], ...]  # (name, class), padding layers first
    keras_shape: tuple[int, ...] | None

    @property
    def depth(self) -> int:
        return 0 if not self.canonical else self.canonical.count(".") + 1


def side_by_side(spec: ResNetSpec, input_hw: tuple[int, int]) -> list[Row]:
    """One row per PyTorch module of `spec`'s network, in module-tree order, shapes for a
    batch of one `input_hw` image."""
    torch, keras = import_frameworks()
    import resnet_keras as rk
    import resnet_torch as rt

    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        tmodel = rt.build(spec).eval()
    torch_shapes: dict[str, tuple[int, ...]] = {}
    hooks = [module.register_forward_hook(
                 lambda _m, _i, out, name=name: torch_shapes.__setitem__(name, tuple(out.shape)))
             for name, module in tmodel.named_modules()]
    with torch.no_grad():
        tmodel(torch.empty(1, spec.in_channels, *input_hw, device="meta"))
    for hook in hooks:
        hook.remove()

    kmodel = rk.build(spec)
    by_name = {layer.name: layer for layer in kmodel.layers}
    probe = keras.Model(kmodel.input, [layer.output for layer in kmodel.layers[1:]])
    specs = probe.compute_output_spec(keras.KerasTensor((1, *input_hw, spec.in_channels)))
    keras_shapes = {layer.name: tuple(s.shape) for layer, s in zip(kmodel.layers[1:], specs, strict=True)}
    keras_shapes[kmodel.layers[0].name] = (1, *input_hw, spec.in_channels)
    blocks = {b.name for b in make_plan(spec).blocks()}

    rows = []
    for name, module in tmodel.named_modules():
        if not name:
            rows.append(Row(name, type(module).__name__, torch_shapes[name], ((kmodel.name, type(kmodel).__name__),),
                            keras_shapes[kmodel.layers[-1].name]))
            continue
        base = name.replace(".", "_")
        # a block meets the Add layer where its branches merge; an op meets its layer and any padding before it
        names = [base + "_add"] if name in blocks else [n for n in (base + "_pad", base) if n in by_name]
        if not names:  # a module inside an op (SE's fc1): a sub-layer or a variable of the op's Keras layer
            inner = _inside(by_name, name)
            if inner:
                rows.append(Row(name, type(module).__name__, torch_shapes[name], inner, None))
                continue
        rows.append(Row(name, type(module).__name__, torch_shapes[name],
                        tuple((n, type(by_name[n]).__name__) for n in names),
                        keras_shapes[names[-1]] if names else None))
    return rows


def _inside(by_name: dict[str, Any], name: str) -> tuple[tuple[str, str], ...]:
    """What carries the PyTorch module `name` inside its parent op's Keras layer: a sub-layer
    of the same local name (SqueezeExcite's fc1, fc2), or else the layer's own weights (ECA's
    Conv1d is one (k, 1, 1) kernel of EfficientChannelAttention). Empty if the parent has no layer."""
    parent, _, local = name.rpartition(".")
    holder = by_name.get(parent.replace(".", "_"))
    if holder is None:
        return ()
    sub = getattr(holder, local, None)
    if hasattr(sub, "weights") and hasattr(sub, "name"):  # a Keras layer
        return ((f"{holder.name}.{local}", type(sub).__name__),)
    return tuple((f"{holder.name}.{w.name}", "variable " + "x".join(map(str, w.shape))) for w in holder.weights)


def format_rows(rows: list[Row]) -> list[tuple[str, ...]]:
    """Table cells: indented PyTorch path, class, NCHW shape, Keras layers, NHWC shape."""
    out = []
    for row in rows:
        path = "  " * max(row.depth - 1, 0) + (row.canonical or "(model)")
        keras = " + ".join(f"{n} ({c})" for n, c in row.keras_layers) or "(none: a functional graph has no containers)"
        out.append((path, row.torch_class, _shape(row.torch_shape), keras,
                    _shape(row.keras_shape) if row.keras_shape else ""))
    return out


def _shape(shape: Any) -> str:
    return "x".join("?" if s is None else str(s) for s in shape)
