"""Canonical weights back out of an ONNX graph (no deep-learning framework needed).

Readable: graphs whose initializers keep the model's state_dict names and whose
BatchNorms are still BatchNormalization nodes, which is what
`resnet_torch.export_onnx` writes, for our models and for torchvision's alike.
Not readable, with a message saying why: graphs whose BatchNorm was folded away.
Folding turns a conv weight w and its BatchNorm (gamma, beta, mean, var) into
w * gamma / sqrt(var + eps) and beta - mean * gamma / sqrt(var + eps): per channel,
four numbers become a scale and a shift, and infinitely many BatchNorms give the
same two, so the originals cannot be recovered. Keras's exporters always fold
(tf2onnx through TensorFlow's graph optimiser; the torch backend's tracer
constant-folds the arithmetic), and so does torch.onnx's optional optimiser.

Nothing is taken on the strength of a name alone: each BatchNorm node's epsilon,
and each conv's kernel, stride and groups, must be what the spec says.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from shared_specs import CheckpointError, ResNetSpec, SpecError, check_weights, infer_spec, make_plan, resolve_spec
from shared_specs import plan as P
from shared_specs.checkpoint import FORMAT, FORMAT_VERSION
from shared_specs.spec import describe_differences

_BN_INPUTS = ("weight", "bias", "running_mean", "running_var")  # ONNX order: scale, B, mean, var


def from_onnx(path: str | os.PathLike[str], spec: ResNetSpec | str | None = None
              ) -> tuple[ResNetSpec, dict[str, np.ndarray]]:
    """(spec, canonical weights) of an ONNX file.

    The spec stored by our exporters is used when present (a given `spec` must then
    equal it); a graph from elsewhere (torchvision through torch.onnx) takes `spec`, a
    ResNetSpec or a preset name, or else the spec `shared_specs.infer_spec` reads off its
    initializers' names and shapes. Either way the graph's strides, groups and
    epsilons must then agree with it.
    """
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    try:
        model = onnx.load(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: cannot read: no such file") from None
    except Exception as err:  # protobuf's DecodeError and friends for a damaged file
        raise CheckpointError(f"{path}: not a readable ONNX model ({type(err).__name__})") from None
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    spec = _pick_spec(path, {p.key: p.value for p in model.metadata_props}, spec, initializers)
    plan = make_plan(spec)
    bn_ops = {op.name: op for op in plan.ops() if isinstance(op, P.BatchNorm)}
    bn_nodes = [n for n in graph.node if n.op_type == "BatchNormalization"]
    if bn_ops and len(bn_nodes) != len(bn_ops):
        raise CheckpointError(
            f"{path}: the graph has {len(bn_nodes)} BatchNormalization nodes where {spec.name} has "
            f"{len(bn_ops)} BatchNorms: they were folded into the convolutions or into constants, which "
            "keeps the function but not the weights (per channel, gamma, beta, mean and variance became "
            "one scale and one shift, and cannot be told apart again). Export with "
            "resnet_torch.export_onnx, which keeps BatchNorm; Keras's exporters always fold."
        )
    expected = {name for name, _, _ in plan.tensors()}
    if not expected & initializers.keys():
        sample = ", ".join(sorted(initializers)[:3])
        raise CheckpointError(
            f"{path}: no initializer carries a canonical name (it has {sample or 'none'}); from_onnx reads "
            "graphs whose weights keep their state_dict names, as resnet_torch.export_onnx writes them"
        )
    problems = _check_nodes(graph, plan, bn_ops)
    if problems:
        raise CheckpointError(f"{path}: the graph is not {spec.name}: " + "; ".join(problems[:8]))
    weights = {n: numpy_helper.to_array(initializers[n]) for n in expected if n in initializers}
    return spec, check_weights(spec, weights, source=str(path))


def _pick_spec(path: Path, meta: dict[str, str], given: ResNetSpec | str | None,
               initializers: dict[str, Any]) -> ResNetSpec:
    given_spec = resolve_spec(given) if given is not None else None
    if meta.get("format") != FORMAT:
        if given_spec is not None:
            return given_spec
        # exporters add constants of their own (shape tensors, 'onnx::...'): only state_dict-like names count
        shapes = {name: SimpleNamespace(shape=tuple(i.dims)) for name, i in initializers.items()
                  if name.endswith((".weight", ".bias", ".running_mean", ".running_var"))}
        try:
            return infer_spec(shapes)
        except SpecError as err:
            raise CheckpointError(f"{path}: the graph carries no resnet-rosetta spec and its initializers are not "
                                  f"a ResNet's state_dict ({err}); pass spec= (a preset name or ResNetSpec)") from None
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(f"{path}: format_version {meta.get('format_version')!r} is not supported")
    try:
        stored = ResNetSpec.from_json(meta.get("spec", ""))
    except SpecError as err:
        raise CheckpointError(f"{path}: stored spec is invalid: {err}") from None
    if given_spec is not None and (diff := stored.differences(given_spec)):
        raise CheckpointError(f"{path}: its stored spec differs from the one given in "
                              f"{describe_differences(diff, 'stored', 'given')}")
    return stored


def _check_nodes(graph, plan: P.Plan, bn_ops: dict[str, P.BatchNorm]) -> list[str]:  # type: ignore[no-untyped-def]
    """Each BatchNorm and conv node that reads canonical weights agrees with the plan."""
    from onnx import helper

    convs = {f"{op.name}.weight": op for op in plan.ops() if isinstance(op, P.Conv)}
    problems: list[str] = []
    seen_bn: set[str] = set()
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "BatchNormalization":
            layer = node.input[1].rsplit(".", 1)[0]
            op = bn_ops.get(layer)
            if op is None or list(node.input[1:5]) != [f"{layer}.{s}" for s in _BN_INPUTS]:
                problems.append(f"a BatchNormalization node reads {list(node.input[1:5])}, "
                                "not one BatchNorm's canonical tensors")
                continue
            seen_bn.add(layer)
            epsilon = attrs.get("epsilon", 1e-5)
            if not np.isclose(epsilon, op.epsilon, rtol=1e-6, atol=0):  # stored as float32 in the graph
                problems.append(f"{layer} has epsilon {epsilon:.6g} in the graph, {op.epsilon:.6g} in the spec")
        elif node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in convs:
            op = convs[node.input[1]]
            found = (list(attrs.get("strides", [1, 1])), attrs.get("group", 1))
            if found != ([op.stride] * 2, op.groups):
                problems.append(f"{op.name} has strides {found[0]} and {found[1]} groups in the graph, "
                                f"stride {op.stride} and {op.groups} groups in the spec")
    missing = sorted(set(bn_ops) - seen_bn)
    if missing:
        problems.append(f"no BatchNormalization node for {', '.join(missing[:4])}")
    return problems
