"""Any PyTorch ResNet, read: its graph with torch.fx, and from it (spec, canonical weights, names).

`read_graph` traces a module with torch.fx and normalises every op into
shared_specs.graph's nodes, named by the model's own module paths: nn.Conv2d and
functional or in-place ReLU alike, blocks in an nn.ModuleList looped in `forward`,
nested nn.Sequential, flatten/view before the classifier. The seed checker
(resnet_rosetta.teaching) reads models through it, and so does `from_module`, which
turns the reading into a spec (shared_specs.graph_spec) and the model's state_dict
into canonical weights. Nothing here runs the model.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from resnet_torch import layers as ours
from shared_specs import ResNetSpec, SpecError, check_weights
from shared_specs.graph import (
    Node,
    conv_padding,
    drop_nodes,
    fold_padding,
    merge_cat_of_pools,
    symmetric_padding,
)
from shared_specs.graph_spec import spec_from_graph
from shared_specs.plan import IGNORED_SUFFIXES
from shared_specs.spec import decay_from_torch_momentum

# Modules read as one op rather than traced into (torch.nn's own are leaves already).
_LEAVES: tuple[type, ...] = (ours.PaddedMaxPool2d, ours.Subsample, ours.ChannelPad, ours.GlobalAvgPool, ours.GlobalPool,
                             ours.SameConv2d, ours.BiasedBatchNorm2d, ours.BiasedBatchNorm1d)
# F.max_pool2d dispatches on return_indices; fx records whichever of these it reached (the average last)
_FUNCTIONAL_POOLS = (F.max_pool2d, F._max_pool2d, torch.max_pool2d, F.avg_pool2d)
_TIMM_POOL = "SelectAdaptivePool2d"  # timm's global pool (avg, max, avgmax, catavgmax), read by its pool_type


def read_graph(model: nn.Module) -> list[Node]:
    """The normalised graph of `model`, traced with torch.fx; nodes are named by module path
    (functional ops by their fx node name). Ops no spec has become "unknown ..." nodes."""

    class Tracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, _LEAVES) or type(m).__name__ == _TIMM_POOL or super().is_leaf_module(m, qualname)

    try:
        graph = Tracer().trace(model)
    except Exception as err:  # fx raises TraceError, TypeError, ... for code it cannot follow
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SpecError(f"cannot read {type(model).__name__} with torch.fx ({first}): a model is read by tracing "
                        "its forward, which must not branch on tensor values") from None
    modules = dict(model.named_modules())
    nodes = [Node("input", "input", layer_type="input")]
    where: dict[fx.Node, int] = {}  # fx node -> index of the normalised node carrying its value

    def emit(node: Node) -> int:
        nodes.append(node)
        return len(nodes) - 1

    placeholders = 0
    for n in graph.nodes:
        tensors = [where[a] for a in n.all_input_nodes if a in where]
        if n.op == "placeholder":
            placeholders += 1
            if placeholders == 1:
                where[n] = 0
        elif n.op == "call_module":
            where[n] = _module(modules[n.target], n.target, tensors, emit)
        elif n.op in ("call_function", "call_method"):
            index = _function(n, tensors, emit, nodes)
            if index is not None:
                where[n] = index
        elif n.op == "output":
            outputs = [a for a in n.all_input_nodes if a in where]
            if len(outputs) != 1:
                raise SpecError(f"{type(model).__name__} returns {len(outputs)} tensors; a ResNet returns one")
            if where[outputs[0]] != len(nodes) - 1:
                raise SpecError(f"{nodes[-1].describe()} does not lead to the output of {type(model).__name__}")
    return fold_padding(drop_nodes(nodes, "dropped"))


def _module(m: nn.Module, name: str, inputs: list[int], emit: Any) -> int:
    kind = type(m).__name__
    if isinstance(m, nn.Conv2d):
        if m.dilation != (1, 1) or m.padding_mode != "zeros" or len({*m.kernel_size}) != 1 or len({*m.stride}) != 1 \
                or (not isinstance(m.padding, str) and len({*m.padding}) != 1):
            details = (f"kernel {m.kernel_size}, stride {m.stride}, padding {m.padding}, dilation {m.dilation}, "
                       f"padding_mode {m.padding_mode!r}")
            return emit(Node(f"unknown {kind}", name, {"why": details}, inputs, kind))
        padding = "same" if isinstance(m, ours.SameConv2d) or m.padding == "same" else m.padding[0]
        padding = conv_padding(padding, m.kernel_size[0], m.stride[0])
        return emit(Node("conv", name, {"kernel": m.kernel_size[0], "stride": m.stride[0], "padding": padding,
                                        "in": m.in_channels, "out": m.out_channels, "groups": m.groups,
                                        "bias": m.bias is not None}, inputs, kind))
    if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
        if not (m.affine and m.track_running_stats):
            return emit(Node(f"unknown {kind}", name, {"why": "affine and track_running_stats must be True"}, inputs,
                             kind))
        decay = None if m.momentum is None else decay_from_torch_momentum(m.momentum)
        biased = isinstance(m, (ours.BiasedBatchNorm2d, ours.BiasedBatchNorm1d))
        return emit(Node("bn", name, {"channels": m.num_features, "epsilon": m.eps, "decay": decay,
                                      "running_var": "biased" if biased else "unbiased"}, inputs, kind))
    if isinstance(m, ours.PaddedMaxPool2d):
        return emit(Node("maxpool", name, {"kernel": m.kernel_size, "stride": m.stride, "padding": m.pad,
                                           "pad_value": "zero" if m.value == 0 else "-inf"}, inputs, kind))
    if isinstance(m, nn.MaxPool2d):
        if _pair(m.dilation) != 1 or m.ceil_mode or None in (_pair(m.kernel_size), _pair(m.stride), _pair(m.padding)):
            return emit(Node(f"unknown {kind}", name, {"why": "dilation, ceil_mode or a non-square window"}, inputs,
                             kind))
        return emit(Node("maxpool", name, {"kernel": _pair(m.kernel_size), "stride": _pair(m.stride),
                                           "padding": _pair(m.padding), "pad_value": "-inf"}, inputs, kind))
    if isinstance(m, nn.AvgPool2d):
        if _pair(m.padding) != 0 or m.divisor_override or None in (_pair(m.kernel_size), _pair(m.stride)):
            return emit(Node(f"unknown {kind}", name, {"why": "padding, divisor_override or a non-square window"},
                             inputs, kind))
        return emit(Node("avgpool", name, {"kernel": _pair(m.kernel_size), "stride": _pair(m.stride),
                                           "ceil_mode": m.ceil_mode}, inputs, kind))
    if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        if m.output_size not in (1, (1, 1), [1, 1]):
            return emit(Node(f"unknown {kind}", name, {"why": f"pools to {m.output_size}, not 1x1"}, inputs, kind))
        return emit(Node("gap", name, {"mode": "avg" if isinstance(m, nn.AdaptiveAvgPool2d) else "max"}, inputs, kind))
    if isinstance(m, ours.GlobalAvgPool):
        return emit(Node("gap", name, {"mode": "avg"}, inputs, kind))
    if isinstance(m, ours.GlobalPool):
        return emit(Node("gap", name, {"mode": m.mode}, inputs, kind))
    if kind == _TIMM_POOL:
        mode = m.pool_type.removeprefix("fast")
        if not mode:  # global_pool='': no pooling
            return inputs[0]
        return emit(Node("gap", name, {"mode": mode}, inputs, kind))
    if isinstance(m, nn.ZeroPad2d):
        return emit(Node("pad", name, {"padding": symmetric_padding(m.padding), "value": "zero"}, inputs, kind))
    if isinstance(m, ours.Subsample):
        return emit(Node("subsample", name, {"stride": m.stride}, inputs, kind))
    if isinstance(m, nn.Linear):
        return emit(Node("linear", name, {"in": m.in_features, "out": m.out_features, "bias": m.bias is not None},
                         inputs, kind))
    if type(m) is nn.Dropout:
        return emit(Node("dropout", name, {"rate": float(m.p)}, inputs, kind))
    if isinstance(m, nn.Softmax) and m.dim in (1, -1):
        return emit(Node("softmax", name, {}, inputs, kind))
    if type(m) is nn.ReLU or isinstance(m, ours.ChannelPad):
        return emit(Node("relu" if type(m) is nn.ReLU else "channel_pad", name, {}, inputs, kind))
    if type(m) in (nn.Identity, nn.Flatten):
        return inputs[0]
    return emit(Node(f"unknown {kind}", name, {}, inputs, kind))


def _function(n: fx.Node, inputs: list[int], emit: Any, nodes: list[Node]) -> int | None:
    target = n.target
    kind = getattr(target, "__name__", str(target))
    if target in (F.relu, torch.relu, torch.relu_, "relu", "relu_"):
        return emit(Node("relu", n.name, {}, inputs, f"{kind}()"))
    if target in (operator.add, operator.iadd, torch.add, "add", "add_") and len(inputs) == 2 and not n.kwargs:
        return emit(Node("add", n.name, {}, inputs, f"{kind}()"))
    if target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d) and _arg(n, 1, "output_size") in (1, (1, 1), [1, 1]):
        return emit(Node("gap", n.name, {"mode": "avg" if target is F.adaptive_avg_pool2d else "max"}, inputs,
                         f"{kind}()"))
    if target in _FUNCTIONAL_POOLS:
        return _functional_pool(n, inputs, emit, kind)
    if target in (torch.mean, "mean") and _spatial_dims(_arg(n, 1, "dim")):
        return emit(Node("gap", n.name, {"mode": "avg"}, inputs, f"{kind}()"))
    if target in (F.dropout, torch.dropout) and not _arg(n, 3, "inplace"):
        return emit(Node("dropout", n.name, {"rate": float(_arg(n, 1, "p", 0.5))}, inputs, f"{kind}()"))
    if target in (F.softmax, torch.softmax, "softmax") and _arg(n, 1, "dim") in (1, -1):
        return emit(Node("softmax", n.name, {}, inputs, f"{kind}()"))
    if (target is torch.cat and _arg(n, 1, "dim", 0) in (1, -1)
            and merge_cat_of_pools(inputs, nodes, "torch.cat([avg, max])")):
        return inputs[0]
    if target in (torch.flatten, "view", "reshape", "flatten", "contiguous", "squeeze") and inputs:
        return inputs[0]
    if target in ("size", getattr, "dim") or not inputs:
        return None
    if target is operator.getitem and isinstance(n.args[1], tuple):
        steps = {s.step for s in n.args[1] if isinstance(s, slice) and s.step not in (None, 1)}
        if len(steps) == 1:
            return emit(Node("subsample", n.name, {"stride": steps.pop()}, inputs, "x[..., ::s, ::s]"))
    if target is operator.getitem and not isinstance(n.args[1], (slice, tuple)):
        return None  # an element of a shape or of a tuple of sizes
    return emit(Node(f"unknown {kind}", n.name, {}, inputs, f"{kind}()"))


def _functional_pool(n: fx.Node, inputs: list[int], emit: Any, kind: str) -> int:
    """F.max_pool2d / F.avg_pool2d, read as their modules are."""
    maximum = n.target in _FUNCTIONAL_POOLS[:-1]
    k = _pair(_arg(n, 1, "kernel_size"))
    stride = _pair(_arg(n, 2, "stride") or _arg(n, 1, "kernel_size"))  # stride=None: the window
    padding = _pair(_arg(n, 3, "padding", 0))
    ceil = bool(_arg(n, 5 if maximum else 4, "ceil_mode", False))
    if None in (k, stride, padding) or (maximum and (_pair(_arg(n, 4, "dilation", 1)) != 1 or ceil)) or (
            not maximum and (padding or _arg(n, 6, "divisor_override"))):
        return emit(Node(f"unknown {kind}", n.name, {"why": "dilation, ceil_mode, padding or a non-square window"},
                         inputs, f"{kind}()"))
    if maximum:
        return emit(Node("maxpool", n.name, {"kernel": k, "stride": stride, "padding": padding, "pad_value": "-inf"},
                         inputs, f"{kind}()"))
    return emit(Node("avgpool", n.name, {"kernel": k, "stride": stride, "ceil_mode": ceil}, inputs, f"{kind}()"))


def _arg(n: fx.Node, index: int, name: str, default: Any = None) -> Any:
    return n.args[index] if len(n.args) > index else n.kwargs.get(name, default)


def _spatial_dims(dim: Any) -> bool:
    return isinstance(dim, (tuple, list)) and {d % 4 for d in dim} == {2, 3} and len(dim) == 2


def _pair(value: Any) -> int | None:
    """One int for a square window, None for a non-square one."""
    if isinstance(value, int):
        return value
    return value[0] if len(set(value)) == 1 else None


def from_module(model: nn.Module, **hints: Any) -> tuple[ResNetSpec, dict[str, np.ndarray], dict[str, str]]:
    """(spec, canonical weights, names) of any nn.Module whose computation is a ResNet the spec
    can express, whatever its attribute names; `names` maps each of the model's own
    state_dict keys to its canonical name.

    The model is read by tracing its forward with torch.fx (nothing is run): nn.Conv2d and
    F.relu, in-place ops, blocks in an nn.ModuleList or nested nn.Sequential, flatten or
    view before a classifier that may be a fine-tuned nn.Sequential (Linear, ReLU,
    Dropout, BatchNorm1d). `hints` are ResNetSpec fields the model cannot show
    (`zero_init_last_bn`, `name`). Anything else raises one SpecError naming the first
    layer the spec cannot hold, what the spec expected there and the closest preset.

    >>> spec, weights, names = from_module(my_model)
    """
    if not isinstance(model, nn.Module):
        raise SpecError(f"expected a torch.nn.Module, got {type(model).__name__}")
    nodes = read_graph(model)
    spec, layers = spec_from_graph(nodes, default_name=type(model).__name__, **hints)
    weights: dict[str, np.ndarray] = {}
    names: dict[str, str] = {}
    for key, value in model.state_dict().items():
        owner, _, suffix = key.rpartition(".")
        if suffix in IGNORED_SUFFIXES:
            continue
        if owner not in layers:
            raise SpecError(f"{key} belongs to no layer the forward of {type(model).__name__} calls as a ResNet "
                            "layer (a module it never calls, or a tensor it uses outside a module)")
        names[key] = f"{layers[owner]}.{suffix}"
        weights[names[key]] = value.detach().cpu().numpy().copy()  # never a view of the model (trap 17)
    return spec, check_weights(spec, weights, source=f"the state_dict of {type(model).__name__}"), names
