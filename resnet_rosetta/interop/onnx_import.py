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
and each conv's kernel, stride and groups, must be what the spec says; a conv must
read its kernel standardised exactly where the spec standardises it (BiT's StdConv2d,
`std_conv_epsilon`). GroupNorm is checked too: at opset 21+ torch.onnx writes one
GroupNormalization node reading `<norm>.weight`/`.bias` (its groups and epsilon are
compared); at the default opset 18 it writes InstanceNormalization over the groups
followed by Mul and Add with the canonical weight and bias (its epsilon is compared).
EvoNorm-S0 and FRN become plain arithmetic on canonical initializers: their weights
are read as they are, their epsilon and groups are taken from the spec. An optimiser
that reshapes those vectors into new constants, or pre-computes standardised kernels,
leaves canonical names missing: such a graph is refused, naming them.
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
    group_nodes = [n for n in graph.node if n.op_type in ("GroupNormalization", "InstanceNormalization")]
    if bn_ops and not bn_nodes and group_nodes:
        raise CheckpointError(f"{path}: the graph normalises with {len(group_nodes)} GroupNorms where {spec.name} "
                              f"has {len(bn_ops)} BatchNorms (norm.kind)")
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
    missing = [n for n, _, _ in plan.tensors() if n not in initializers]
    if missing:
        raise CheckpointError(
            f"{path}: {len(missing)} of {spec.name}'s tensors are not initializers of the graph, e.g. "
            f"{', '.join(missing[:4])}: an optimiser renamed or folded them (norm vectors reshaped into new "
            "constants, standardised conv kernels pre-computed). Export with resnet_torch.export_onnx, which "
            "keeps every state_dict tensor under its name"
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


# Ops through which a weight reaches the node using it: layout and dtype changes, and the
# arithmetic of weight standardisation ((w - mean) / sqrt(var + eps), w being the first input).
_WEIGHT_PATH = frozenset({"Reshape", "Unsqueeze", "Squeeze", "Expand", "CastLike", "Cast", "Identity", "Sub", "Div"})


def _weight_source(name: str, producers: dict[str, Any], initializers: set[str]) -> tuple[str | None, list[str]]:
    """The initializer a node input is computed from (following first inputs through
    `_WEIGHT_PATH` ops), and the op types passed on the way; (None, ...) if it is not one."""
    passed: list[str] = []
    for _ in range(8):
        if name in initializers:
            return name, passed
        node = producers.get(name)
        if node is None or node.op_type not in _WEIGHT_PATH or not node.input:
            return None, passed
        passed.append(node.op_type)
        name = node.input[0]
    return None, passed


def _scaling_weight(node: Any, consumers: dict[str, list[Any]], producers: dict[str, Any],
                    initializers: set[str]) -> str | None:
    """The canonical `.weight` that multiplies an InstanceNormalization's output (torch.onnx's
    opset-18 GroupNorm: InstanceNormalization over the groups, Reshape back, Mul, Add)."""
    value = node.output[0]
    for _ in range(4):
        following = consumers.get(value, [])
        mul = next((n for n in following if n.op_type == "Mul"), None)
        if mul is not None:
            for other in mul.input:
                source, _ = _weight_source(other, producers, initializers)
                if source is not None and source.endswith(".weight"):
                    return source
            return None
        step = next((n for n in following if n.op_type in ("Reshape", "CastLike")), None)
        if step is None:
            return None
        value = step.output[0]
    return None


def _check_nodes(graph, plan: P.Plan, bn_ops: dict[str, P.BatchNorm]) -> list[str]:  # type: ignore[no-untyped-def]
    """Each BatchNorm, GroupNorm and conv node that reads canonical weights agrees with the plan."""
    from onnx import helper

    convs = {f"{op.name}.weight": op for op in plan.ops() if isinstance(op, P.Conv)}
    group_norms = {op.name: op for op in plan.ops() if isinstance(op, P.GroupNorm)}
    initializers = {i.name for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    problems: list[str] = []
    seen_bn: set[str] = set()
    seen_gn: set[str] = set()

    def group_norm(weight: str | None, epsilon: float, groups: int | None) -> None:
        layer = weight.rsplit(".", 1)[0] if weight else None
        op = group_norms.get(layer)  # type: ignore[arg-type]
        if op is None:
            problems.append(f"a group normalisation is scaled by {weight or 'no canonical weight'}, not by one "
                            "GroupNorm's canonical weight")
            return
        seen_gn.add(op.name)
        if not np.isclose(epsilon, op.epsilon, rtol=1e-6, atol=0):
            problems.append(f"{op.name} has epsilon {epsilon:.6g} in the graph, {op.epsilon:.6g} in the spec")
        if groups is not None and groups != op.groups:
            problems.append(f"{op.name} has {groups} groups in the graph, {op.groups} in the spec")

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
        elif node.op_type == "Conv" and len(node.input) > 1:
            weight, passed = _weight_source(node.input[1], producers, initializers)
            op = convs.get(weight)  # type: ignore[arg-type]
            if op is None:
                continue
            found = (list(attrs.get("strides", [1, 1])), attrs.get("group", 1))
            if found != ([op.stride] * 2, op.groups):
                problems.append(f"{op.name} has strides {found[0]} and {found[1]} groups in the graph, "
                                f"stride {op.stride} and {op.groups} groups in the spec")
            standardised = "Sub" in passed  # (w - mean) / sqrt(var + eps) on the way to the conv
            if standardised != (op.standardize is not None):
                problems.append(f"{op.name} reads its kernel {'standardised' if standardised else 'as it is'} in "
                                f"the graph, {'standardised' if op.standardize is not None else 'as it is'} in "
                                "the spec (std_conv_epsilon)")
        elif node.op_type == "GroupNormalization":  # opset 21+
            weight, _ = _weight_source(node.input[1], producers, initializers)
            group_norm(weight, attrs.get("epsilon", 1e-5), attrs.get("num_groups"))
        elif node.op_type == "InstanceNormalization":  # opset 18: a GroupNorm over (N, groups, -1)
            group_norm(_scaling_weight(node, consumers, producers, initializers), attrs.get("epsilon", 1e-5), None)
    missing = sorted(set(bn_ops) - seen_bn)
    if missing:
        problems.append(f"no BatchNormalization node for {', '.join(missing[:4])}")
    missing = sorted(set(group_norms) - seen_gn)
    if missing:
        problems.append(f"no group normalisation node for {', '.join(missing[:4])}")
    return problems
