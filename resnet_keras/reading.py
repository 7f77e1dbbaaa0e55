"""Any Keras ResNet, read: its layer graph, and from it (spec, canonical weights, names)
(the PyTorch twin is resnet_torch/reading.py).

`read_graph` walks a functional or Sequential model's graph, models nested in it
included (a keras.applications base under a new head), and normalises every layer into
shared_specs.graph's nodes, named by layer name (`base/conv1_conv` inside a nested
model): 'same' or explicit ZeroPadding2D padding, Conv2D/Dense activations, Add layers
and `x + y`. The seed checker reads Keras models through it, and so does `from_model`,
which turns the reading into a spec (shared_specs.graph_spec) and the layers'
variables into canonical weights through resnet_keras.weights.RULES.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from resnet_keras.layers import ChannelPad, ConstantPadding2D, GlobalPool2D, UnbiasedBatchNormalization
from resnet_keras.weights import op_rules
from shared_specs import ResNetSpec, SpecError, check_weights, make_plan
from shared_specs.graph import (
    Node,
    conv_padding,
    drop_nodes,
    fold_padding,
    merge_cat_of_pools,
    symmetric_padding,
)
from shared_specs.graph_spec import spec_from_graph

L = keras.layers


def read_graph(model: keras.Model) -> list[Node]:
    """The normalised graph of a Keras functional or Sequential model, nodes named by layer name."""
    return _read(model)[0]


def _read(model: Any) -> tuple[list[Node], dict[str, Any]]:
    """(nodes, layer by node name)."""
    if not isinstance(model, keras.Model):
        raise SpecError(f"expected a keras.Model, got {type(model).__name__}")
    nodes: list[Node] = [Node("input", "input", layer_type="InputLayer")]
    layers: dict[str, Any] = {}
    graph = _functional(model)
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise SpecError(f"model {model.name!r} has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; "
                        "a ResNet has one of each")
    out = _walk(graph, [0], "", nodes, layers)
    if out[0] != len(nodes) - 1:
        raise SpecError(f"{nodes[-1].describe()} does not lead to the output of model {model.name!r}")
    return fold_padding(drop_nodes(nodes, "dropped")), layers


def _functional(model: Any) -> Any:
    if isinstance(model, keras.Sequential):
        if getattr(model, "_functional", None) is None:
            raise SpecError(f"Sequential model {model.name!r} has no input shape yet: build it (keras.Input or "
                            "model.build) before reading it")
        return model._functional
    if not hasattr(model, "_nodes_by_depth"):
        raise SpecError(f"model {model.name!r} is a subclassed keras.Model: only functional and Sequential models "
                        "have a layer graph to read")
    return model


def _walk(graph: Any, inputs: list[int], prefix: str, nodes: list[Node], layers: dict[str, Any]) -> list[int]:
    """Emit the nodes of a functional graph whose inputs are `inputs`; returns its outputs' indices.
    Nested models are walked in place, their layers named `prefix/name`."""
    where = {id(t): i for t, i in zip(graph.inputs, inputs)}
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            op = node.operation
            if op is None or node.is_input or isinstance(op, L.InputLayer):
                continue
            parents = [where[id(t)] for t in node.input_tensors]
            if isinstance(op, keras.Model):
                results = _walk(_functional(op), parents, f"{prefix}{op.name}/", nodes, layers)
            else:
                name = prefix + op.name
                if len(op._inbound_nodes) > 1 and getattr(op, "weights", None):
                    raise SpecError(f"layer {name!r} is called {len(op._inbound_nodes)} times: a layer whose weights "
                                    "serve several places has no place in a ResNet spec")
                layers[name] = op
                results = [_layer(op, name, parents, nodes)]
            for tensor, index in zip(node.outputs, results):
                where[id(tensor)] = index
    return [where[id(t)] for t in graph.outputs]


def _emit(nodes: list[Node], node: Node) -> int:
    nodes.append(node)
    return len(nodes) - 1


def _layer(layer: Any, name: str, inputs: list[int], nodes: list[Node]) -> int:
    kind = type(layer).__name__

    def emit(node_kind: str, attrs: dict[str, Any] | None = None) -> int:
        return _emit(nodes, Node(node_kind, name, attrs or {}, inputs, kind))

    if isinstance(layer, (L.Conv2D, L.Dense, L.BatchNormalization)) and not layer.built:
        raise SpecError(f"layer {name!r} is not built: call the model on an input first")
    if isinstance(layer, L.Conv2D):
        k, s = layer.kernel_size, layer.strides
        if type(layer) is not L.Conv2D or len(set(k)) != 1 or len(set(s)) != 1 or set(layer.dilation_rate) != {1} \
                or layer.data_format != "channels_last":
            return emit(f"unknown {kind}", {"why": f"kernel {k}, strides {s}, dilation {layer.dilation_rate}, "
                                                   f"{layer.data_format}"})
        index = emit("conv", {"kernel": k[0], "stride": s[0],
                              "padding": conv_padding("same", k[0], s[0]) if layer.padding == "same" else 0,
                              "in": layer.kernel.shape[-2] * layer.groups, "out": layer.filters,
                              "groups": layer.groups, "bias": layer.use_bias})
        return _activation(layer, name, index, nodes)
    if isinstance(layer, L.BatchNormalization):
        if layer.axis not in (-1, len(layer.input.shape) - 1) or not (layer.center and layer.scale) or layer.renorm:
            return emit(f"unknown {kind}", {"why": "not over the last axis, without center or scale, or renorm"})
        biased = not isinstance(layer, UnbiasedBatchNormalization)  # Keras's own folds in the biased variance
        return emit("bn", {"channels": layer.gamma.shape[0], "epsilon": float(layer.epsilon),
                           "decay": float(layer.momentum), "running_var": "biased" if biased else "unbiased"})
    if isinstance(layer, L.MaxPooling2D):
        k, s = layer.pool_size, layer.strides
        if len(set(k)) != 1 or len(set(s)) != 1:
            return emit(f"unknown {kind}", {"why": "a non-square window"})
        if k[0] == 1:
            return emit("subsample", {"stride": s[0]})
        padding = "same" if layer.padding == "same" else 0
        return emit("maxpool", {"kernel": k[0], "stride": s[0], "padding": padding, "pad_value": "-inf"})
    if isinstance(layer, L.AveragePooling2D):
        k, s = layer.pool_size, layer.strides
        if len(set(k)) != 1 or len(set(s)) != 1:
            return emit(f"unknown {kind}", {"why": "a non-square window"})
        return emit("avgpool", {"kernel": k[0], "stride": s[0], "ceil_mode": layer.padding == "same"})
    if isinstance(layer, L.ZeroPadding2D):
        return emit("pad", {"padding": symmetric_padding(layer.padding), "value": "zero"})
    if isinstance(layer, ConstantPadding2D):
        return emit("pad", {"padding": layer.padding, "value": "zero" if layer.value == 0 else "-inf"})
    if isinstance(layer, L.Dense):
        index = emit("linear", {"in": layer.kernel.shape[0], "out": layer.units, "bias": layer.use_bias})
        return _activation(layer, name, index, nodes)
    if isinstance(layer, L.Activation):
        return emit(_activation_kind(layer.activation))
    if isinstance(layer, L.ReLU):
        plain = layer.max_value is None and not layer.negative_slope and not layer.threshold
        return emit("relu" if plain else f"unknown {kind}", {} if plain else {"why": "max_value/negative_slope"})
    if isinstance(layer, (L.GlobalAveragePooling2D, L.GlobalMaxPooling2D)):
        if layer.keepdims or layer.data_format != "channels_last":
            return emit(f"unknown {kind}", {"why": "keepdims or channels_first"})
        return emit("gap", {"mode": "avg" if isinstance(layer, L.GlobalAveragePooling2D) else "max"})
    if isinstance(layer, GlobalPool2D):
        return emit("gap", {"mode": layer.mode})
    if (isinstance(layer, L.Concatenate) and layer.axis in (-1, 1)
            and merge_cat_of_pools(inputs, nodes, "Concatenate([avg, max])")):
        return inputs[0]
    if isinstance(layer, L.Dropout) and type(layer) is L.Dropout:
        return emit("dropout", {"rate": float(layer.rate)})
    if isinstance(layer, L.Softmax) and layer.axis in (-1, [-1]):
        return emit("softmax")
    if isinstance(layer, L.Add) or kind == "Add":  # keras.layers.add, or `x + y` (keras.ops' Add)
        return emit("add") if len(inputs) == 2 else emit(f"unknown {kind}", {"why": f"{len(inputs)} inputs"})
    if isinstance(layer, ChannelPad):
        return emit("channel_pad")
    if isinstance(layer, L.Flatten):
        return inputs[0]
    return emit(f"unknown {kind}")


def _activation_kind(activation: Any) -> str:
    kind = getattr(activation, "__name__", "")
    return kind if kind in ("relu", "softmax") else f"unknown activation {kind}"


def _activation(layer: Any, name: str, index: int, nodes: list[Node]) -> int:
    """A Conv2D/Dense with activation='relu' is the layer followed by a ReLU."""
    kind = getattr(layer.activation, "__name__", "linear")
    if kind == "linear":
        return index
    return _emit(nodes, Node(_activation_kind(layer.activation), f"{name} (activation)", {}, [index],
                             f"{type(layer).__name__}(activation={kind!r})"))


def from_model(model: keras.Model, **hints: Any) -> tuple[ResNetSpec, dict[str, np.ndarray], dict[str, str]]:
    """(spec, canonical weights, names) of a Keras functional or Sequential model whose
    computation is a ResNet the spec can express, whatever its layer names; `names` maps
    each of the model's variable paths to its canonical tensor name.

    Read from the layer graph (nested models included, e.g. a keras.applications base under
    a new head): 'same' or explicit padding, Conv2D/Dense activations, Add layers and
    `x + y`, a head of Dense / ReLU / Dropout / BatchNormalization. Anything else raises
    one SpecError naming the first layer the spec cannot hold, what the spec expected
    there and the closest preset. `hints` are ResNetSpec fields the model cannot show
    (`zero_init_last_bn`, `name`). Variables go through resnet_keras.weights.RULES, as
    every Keras import and export does.
    """
    nodes, layers = _read(model)
    spec, owned = spec_from_graph(nodes, default_name=model.name, **hints)
    ops = {op.name: op for op in make_plan(spec).ops()}
    weights: dict[str, np.ndarray] = {}
    names: dict[str, str] = {}
    used: set[int] = set()
    for own, canonical in owned.items():
        layer, op = layers[own], ops[canonical]
        for suffix, attr, _, to_canonical in op_rules(op):
            variable = getattr(layer, attr)
            used.add(id(variable))
            names[variable.path] = f"{canonical}.{suffix}"
            weights[names[variable.path]] = np.array(to_canonical(keras.ops.convert_to_numpy(variable)), copy=True)
    extra = [v.path for v in model.weights if id(v) not in used]
    if extra:
        raise SpecError(f"variable {extra[0]} of model {model.name!r} has no place in the ResNet it computes")
    return spec, check_weights(spec, weights, source=f"model {model.name!r}"), names
