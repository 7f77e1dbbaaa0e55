"""What a ResNet computes, read from the model itself and compared with a spec.

A model of either framework (a `torch.nn.Module`, traced with torch.fx, or a Keras
functional model, walked through its graph) or a spec's plan becomes the same list
of normalised ops: conv (kernel, stride, padding, channels, groups, bias), bn,
relu, max-pool, ... with their inputs. Padding layers are folded into the conv or
pool they feed; flatten/view/identity disappear. The graph is then cut at its
additions into stem, residual blocks (main branch, shortcut, what follows the
addition) and head, and two such architectures are compared segment by segment.

Nothing here knows any particular model: the same reading of a tutorial's code,
of our builders' output and of a preset's plan is what makes the comparison fair.
"""

from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from resnet_rosetta.frameworks import import_frameworks
from shared_specs import ResNetSpec, make_plan
from shared_specs import plan as P
from shared_specs.spec import decay_from_torch_momentum

WEIGHTED = ("conv", "bn", "linear")


@dataclass
class Node:
    """One normalised op: its kind, the model's own name for it, attributes, inputs (indices)."""

    kind: str
    name: str
    attrs: dict[str, Any] = field(default_factory=dict)
    inputs: list[int] = field(default_factory=list)

    def label(self) -> str:
        a = self.attrs
        if self.kind == "conv":
            k = a["kernel"]
            text = f"conv{k}x{k}" + (f"/{a['stride']}" if a["stride"] != 1 else "")
            if a["padding"] != k // 2:
                text += f" pad {a['padding']}"
            text += f" g{a['groups']}" if a["groups"] != 1 else ""
            return text + (" +bias" if a["bias"] else "")
        if self.kind in ("maxpool", "avgpool"):
            k = a["kernel"]
            text = f"{self.kind}{k}x{k}/{a['stride']}"
            return text + (f" pad {a['padding']}" if a.get("padding", k // 2) != k // 2 else "")
        if self.kind == "subsample":
            return f"subsample/{a['stride']}"
        return {"bn": "bn", "relu": "relu", "gap": "avgpool", "linear": "fc", "softmax": "softmax",
                "channel_pad": "zero channels"}.get(self.kind, self.kind)


# -- reading a plan --------------------------------------------------------------


def from_plan(spec: ResNetSpec) -> list[Node]:
    """The normalised graph of `spec`, nodes named by canonical name."""
    plan = make_plan(spec)
    nodes = [Node("input", "input")]

    def add(op: P.Op, source: int) -> int:
        nodes.append(_plan_node(op, source))
        return len(nodes) - 1

    def chain(ops: tuple[P.Op, ...], source: int) -> int:
        for op in ops:
            source = add(op, source)
        return source

    x = chain(plan.stem, 0)
    for block in plan.blocks():
        pre = chain(block.pre, x)
        main = chain(block.main, pre)
        short = chain(block.shortcut, pre if block.shortcut_reads_pre else x)
        nodes.append(Node("add", block.name, {}, [main, short]))
        x = chain(block.post, len(nodes) - 1)
    chain(plan.post + plan.head, x)
    return nodes


def _plan_node(op: P.Op, source: int) -> Node:
    if isinstance(op, P.Conv):
        attrs = {"kernel": op.kernel_size, "stride": op.stride,
                 "padding": conv_padding(op.padding, op.kernel_size, op.stride), "in": op.in_channels,
                 "out": op.out_channels, "groups": op.groups, "bias": op.bias}
        return Node("conv", op.name, attrs, [source])
    if isinstance(op, P.BatchNorm):
        return Node("bn", op.name, {"channels": op.channels, "epsilon": op.epsilon,
                                    "decay": op.running_stats_decay}, [source])
    if isinstance(op, P.MaxPool):
        return Node("maxpool", op.name, {"kernel": op.size, "stride": op.stride, "padding": op.padding,
                                         "pad_value": op.pad_value}, [source])
    if isinstance(op, P.AvgPool):
        return Node("avgpool", op.name, {"kernel": op.size, "stride": op.stride}, [source])
    if isinstance(op, P.Subsample):
        return Node("subsample", op.name, {"stride": op.stride}, [source])
    if isinstance(op, P.Linear):
        return Node("linear", op.name, {"in": op.in_features}, [source])
    kind = {P.ReLU: "relu", P.GlobalAvgPool: "gap", P.Softmax: "softmax", P.ChannelPad: "channel_pad"}[type(op)]
    return Node(kind, op.name, {}, [source])


# -- reading a PyTorch module ------------------------------------------------------


def from_torch(model: Any) -> list[Node]:
    """The normalised graph of a PyTorch module, traced with torch.fx; nodes are named by module path."""
    torch, _ = import_frameworks()
    import torch.fx as fx
    import torch.nn.functional as F

    from resnet_torch import layers as ours

    leaves = (ours.PaddedMaxPool2d, ours.Subsample, ours.ChannelPad, ours.GlobalAvgPool, ours.SameConv2d,
              ours.BiasedBatchNorm2d)

    class Tracer(fx.Tracer):
        def is_leaf_module(self, m: Any, qualname: str) -> bool:
            return isinstance(m, leaves) or super().is_leaf_module(m, qualname)

    graph = Tracer().trace(model)
    modules = dict(model.named_modules())
    nodes = [Node("input", "input")]
    where: dict[Any, int] = {}  # fx node -> index of the normalised node carrying its value

    def emit(node: Node) -> int:
        nodes.append(node)
        return len(nodes) - 1

    for n in graph.nodes:
        tensors = [where[a] for a in n.args if isinstance(a, fx.Node) and a in where]
        if n.op == "placeholder":
            where[n] = 0
        elif n.op == "call_module":
            where[n] = _torch_module(modules[n.target], n.target, tensors, emit, torch)
        elif n.op in ("call_function", "call_method"):
            index = _torch_function(n, tensors, emit, torch, F)
            if index is not None:
                where[n] = index
    return _fold_padding(nodes)


def _torch_module(m: Any, name: str, inputs: list[int], emit: Any, torch: Any) -> int:
    from resnet_torch import layers as ours

    nn = torch.nn
    if isinstance(m, nn.Conv2d):
        padding = "same" if isinstance(m, ours.SameConv2d) or m.padding == "same" else m.padding[0]
        padding = conv_padding(padding, m.kernel_size[0], m.stride[0])
        return emit(Node("conv", name, {"kernel": m.kernel_size[0], "stride": m.stride[0], "padding": padding,
                                        "in": m.in_channels, "out": m.out_channels, "groups": m.groups,
                                        "bias": m.bias is not None}, inputs))
    if isinstance(m, nn.BatchNorm2d):
        decay = None if m.momentum is None else decay_from_torch_momentum(m.momentum)
        return emit(Node("bn", name, {"channels": m.num_features, "epsilon": m.eps, "decay": decay}, inputs))
    if isinstance(m, ours.PaddedMaxPool2d):
        return emit(Node("maxpool", name, {"kernel": m.kernel_size, "stride": m.stride, "padding": m.pad,
                                           "pad_value": "zero" if m.value == 0 else "-inf"}, inputs))
    if isinstance(m, nn.MaxPool2d):
        return emit(Node("maxpool", name, {"kernel": _int(m.kernel_size), "stride": _int(m.stride),
                                           "padding": _int(m.padding), "pad_value": "-inf"}, inputs))
    if isinstance(m, nn.AvgPool2d):
        return emit(Node("avgpool", name, {"kernel": _int(m.kernel_size), "stride": _int(m.stride)}, inputs))
    if isinstance(m, (nn.AdaptiveAvgPool2d, ours.GlobalAvgPool)):
        return emit(Node("gap", name, {}, inputs))
    if isinstance(m, nn.ZeroPad2d):
        return emit(Node("pad", name, {"padding": _symmetric(m.padding), "value": "zero"}, inputs))
    if isinstance(m, ours.Subsample):
        return emit(Node("subsample", name, {"stride": m.stride}, inputs))
    simple = {nn.ReLU: "relu", nn.Linear: "linear", nn.Softmax: "softmax", ours.ChannelPad: "channel_pad"}
    for cls, kind in simple.items():
        if isinstance(m, cls):
            return emit(Node(kind, name, {"in": m.in_features} if kind == "linear" else {}, inputs))
    if isinstance(m, (nn.Identity, nn.Flatten, nn.Dropout)):
        return inputs[0]
    return emit(Node(f"unknown {type(m).__name__}", name, {}, inputs))


def _torch_function(n: Any, inputs: list[int], emit: Any, torch: Any, F: Any) -> int | None:
    target = n.target
    if target in (F.relu, torch.relu, "relu", "relu_"):
        return emit(Node("relu", n.name, {}, inputs))
    if target in (operator.add, operator.iadd, torch.add, "add", "add_"):
        return emit(Node("add", n.name, {}, inputs))
    if target in (F.adaptive_avg_pool2d,):
        return emit(Node("gap", n.name, {}, inputs))
    if target in (torch.flatten, "view", "reshape", "flatten", "contiguous"):
        return inputs[0]
    if target in ("size", getattr) or not inputs:
        return None
    if target is operator.getitem and isinstance(n.args[1], tuple):
        steps = {s.step for s in n.args[1] if isinstance(s, slice) and s.step not in (None, 1)}
        if len(steps) == 1:
            return emit(Node("subsample", n.name, {"stride": steps.pop()}, inputs))
    return emit(Node(f"unknown {getattr(target, '__name__', target)}", n.name, {}, inputs))


def conv_padding(padding: Any, kernel: int, stride: int) -> Any:
    """'same' where it is the symmetric k // 2 (stride 1, odd kernel; any 1x1) becomes that
    number: only strided 'same' windows are asymmetric (trap 4)."""
    if padding == "same" and (kernel == 1 or (stride == 1 and kernel % 2)):
        return kernel // 2
    return padding


def _int(v: Any) -> int:
    return v[0] if isinstance(v, tuple) else v


def _symmetric(padding: Any) -> Any:
    """One int for equal padding on every side, else the tuple as given."""
    flat = [p for pair in padding for p in (pair if isinstance(pair, (tuple, list)) else (pair,))] \
        if isinstance(padding, (tuple, list)) else [padding]
    return flat[0] if len(set(flat)) == 1 else tuple(flat)


# -- reading a Keras model -----------------------------------------------------------


def from_keras(model: Any) -> list[Node]:
    """The normalised graph of a Keras functional model; nodes are named by layer name."""
    _, keras = import_frameworks()
    L = keras.layers
    nodes: list[Node] = []
    where: dict[int, int] = {}  # id(layer) -> normalised node index

    def emit(node: Node) -> int:
        nodes.append(node)
        return len(nodes) - 1

    for layer in model.layers:
        if isinstance(layer, L.InputLayer):
            where[id(layer)] = emit(Node("input", layer.name))
            continue
        inbound = keras.tree.flatten(layer._inbound_nodes[0].input_tensors)
        parents = [where[id(t._keras_history.operation)] for t in inbound]
        where[id(layer)] = _keras_layer(layer, parents, emit, keras)
    return _fold_padding(nodes)


def _keras_layer(layer: Any, inputs: list[int], emit: Any, keras: Any) -> int:
    from resnet_keras.layers import ChannelPad, ConstantPadding2D

    L = keras.layers
    name = layer.name
    if isinstance(layer, L.Conv2D):
        k = layer.kernel_size[0]
        index = emit(Node("conv", name, {
            "kernel": k, "stride": layer.strides[0],
            "padding": conv_padding("same", k, layer.strides[0]) if layer.padding == "same" else 0,
            "in": layer.kernel.shape[-2] * layer.groups, "out": layer.filters, "groups": layer.groups,
            "bias": layer.use_bias}, inputs))
        return _activation(layer, index, emit)
    if isinstance(layer, L.BatchNormalization):
        return emit(Node("bn", name, {"channels": layer.gamma.shape[0] if layer.gamma is not None else None,
                                      "epsilon": layer.epsilon, "decay": layer.momentum}, inputs))
    if isinstance(layer, L.MaxPooling2D):
        k, s = layer.pool_size[0], layer.strides[0]
        if k == 1:
            return emit(Node("subsample", name, {"stride": s}, inputs))
        padding = "same" if layer.padding == "same" else 0
        return emit(Node("maxpool", name, {"kernel": k, "stride": s, "padding": padding, "pad_value": "-inf"}, inputs))
    if isinstance(layer, L.AveragePooling2D):
        return emit(Node("avgpool", name, {"kernel": layer.pool_size[0], "stride": layer.strides[0]}, inputs))
    if isinstance(layer, L.ZeroPadding2D):
        return emit(Node("pad", name, {"padding": _symmetric(layer.padding), "value": "zero"}, inputs))
    if isinstance(layer, ConstantPadding2D):
        value = "zero" if layer.value == 0 else "-inf"
        return emit(Node("pad", name, {"padding": layer.padding, "value": value}, inputs))
    if isinstance(layer, L.Dense):
        return _activation(layer, emit(Node("linear", name, {"in": layer.kernel.shape[0]}, inputs)), emit)
    if isinstance(layer, L.Activation):
        kind = getattr(layer.activation, "__name__", "")
        return emit(Node(kind if kind in ("relu", "softmax") else f"unknown activation {kind}", name, {}, inputs))
    simple = {L.ReLU: "relu", L.Add: "add", L.GlobalAveragePooling2D: "gap", L.Softmax: "softmax",
              ChannelPad: "channel_pad"}
    for cls, kind in simple.items():
        if isinstance(layer, cls):
            return emit(Node(kind, name, {}, inputs))
    if isinstance(layer, (L.Flatten, L.Dropout)):
        return inputs[0]
    return emit(Node(f"unknown {type(layer).__name__}", name, {}, inputs))


def _activation(layer: Any, index: int, emit: Any) -> int:
    """A Conv2D/Dense with activation='relu' is the layer followed by a ReLU."""
    kind = getattr(layer.activation, "__name__", "linear")
    if kind == "linear":
        return index
    return emit(Node(kind if kind in ("relu", "softmax") else f"unknown activation {kind}",
                     f"{layer.name} (activation)", {}, [index]))


def _fold_padding(nodes: list[Node]) -> list[Node]:
    """Fold every explicit padding op into the conv or max-pool it feeds."""
    users = Counter(i for n in nodes for i in n.inputs)
    keep: list[int] = []
    for i, n in enumerate(nodes):
        if n.kind == "pad" and users[i] == 1:
            target = next(m for m in nodes if i in m.inputs)
            if target.kind in ("conv", "maxpool") and target.attrs["padding"] == 0:
                target.attrs["padding"] = n.attrs["padding"]
                if target.kind == "maxpool":
                    target.attrs["pad_value"] = n.attrs["value"]
                target.inputs = [n.inputs[0] if j == i else j for j in target.inputs]
                continue
        keep.append(i)
    renumber = {old: new for new, old in enumerate(keep)}
    out = []
    for old in keep:
        n = nodes[old]
        out.append(Node(n.kind, n.name, n.attrs, [renumber[j] for j in n.inputs]))
    return out


# -- cutting a graph into stem, blocks and head -----------------------------------------


@dataclass
class BlockArch:
    """One residual block as read from a graph: both branches and what follows the addition."""

    name: str  # the addition's name: the canonical block name when read from a plan
    main: list[Node]
    shortcut: list[Node]
    after: list[Node]  # after the addition, up to where the next block forks

    @property
    def out_channels(self) -> int | None:
        convs = [n for n in self.main if n.kind == "conv"]
        return convs[-1].attrs["out"] if convs else None


@dataclass
class Arch:
    """A whole network as read from a graph: stem, residual blocks, head."""

    stem: list[Node]
    blocks: list[BlockArch]
    head: list[Node]

    def stages(self) -> list[list[int]]:
        """Block indices grouped into stages: consecutive blocks with the same output width."""
        groups: list[list[int]] = []
        for i, block in enumerate(self.blocks):
            if groups and self.blocks[groups[-1][-1]].out_channels == block.out_channels:
                groups[-1].append(i)
            else:
                groups.append([i])
        return groups


def segment(nodes: list[Node]) -> Arch:
    """Cut a normalised graph at its additions: each addition closes a residual block whose
    branches start at the latest op both of its inputs depend on."""
    ancestors: list[set[int]] = []
    for n in nodes:
        ancestors.append(set().union(*(ancestors[j] | {j} for j in n.inputs)) if n.inputs else set())
    adds = [i for i, n in enumerate(nodes) if n.kind == "add" and len(n.inputs) == 2]
    forks = []
    for i in adds:
        a, b = nodes[i].inputs
        forks.append(max((ancestors[a] | {a}) & (ancestors[b] | {b})))
    if not adds:
        return Arch([n for n in nodes if n.kind != "input"], [], [])
    stem = [nodes[j] for j in range(1, forks[0] + 1)]
    blocks = []
    for k, (i, fork) in enumerate(zip(adds, forks)):
        branches = []
        for start in nodes[i].inputs:
            members = (ancestors[start] | {start}) - ancestors[fork] - {fork} if start != fork else set()
            branches.append([nodes[j] for j in sorted(members)])
        branches.sort(key=lambda br: (sum(n.kind == "conv" for n in br), len(br)), reverse=True)
        end = forks[k + 1] if k + 1 < len(adds) else len(nodes) - 1
        blocks.append(BlockArch(nodes[i].name, branches[0], branches[1], [nodes[j] for j in range(i + 1, end + 1)]))
    last = blocks[-1].after
    cut = next((j for j, n in enumerate(last) if n.kind in ("gap", "linear", "softmax")), len(last))
    blocks[-1].after, head = last[:cut], last[cut:]
    return Arch(stem, blocks, head)


# -- comparing two architectures ----------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One difference: a stable code (for tests), where, what, whether it changes the
    architecture or only a numeric/convention detail, and both op sequences there."""

    code: str
    where: str
    message: str
    architectural: bool
    seen: str
    expected: str


def _sequence(nodes: list[Node]) -> str:
    return " -> ".join(n.label() for n in nodes) or "nothing"


def _compare_segment(segment_name: str, seed: list[Node], ref: list[Node]) -> list[tuple[str, str, bool]]:
    """(code, message, architectural) differences between two op sequences."""
    out: list[tuple[str, str, bool]] = []
    s_kinds, r_kinds = [n.kind for n in seed], [n.kind for n in ref]
    if s_kinds != r_kinds:
        have, want = Counter(s_kinds), Counter(r_kinds)
        for kind in sorted(set(have) | set(want)):
            extra = have[kind] - want[kind]
            if extra:
                word = "extra" if extra > 0 else "missing"
                out.append((f"{segment_name}.{word}.{kind}", f"{abs(extra)} {word} {kind}", kind != "softmax"))
        if not _is_subsequence(r_kinds, s_kinds) and not _is_subsequence(s_kinds, r_kinds):
            out.append((f"{segment_name}.order", "layers in another order", True))
        if _has_pair(s_kinds, "relu", "bn") and not _has_pair(r_kinds, "relu", "bn"):
            out.append((f"{segment_name}.relu_before_bn",
                        "ReLU before BatchNorm (the reference normalises first)", True))
        if segment_name == "main" and s_kinds and r_kinds and s_kinds[-1] == "relu" and r_kinds[-1] != "relu":
            out.append(("main.ends_with_relu", "the branch ends in a ReLU: it can only add to the shortcut, "
                        "never subtract", True))
    for kind in sorted(set(s_kinds) & set(r_kinds)):
        for s, r in zip([n for n in seed if n.kind == kind], [n for n in ref if n.kind == kind]):
            for attr, value in s.attrs.items():
                expected = r.attrs.get(attr)
                if attr not in r.attrs or value == expected or (kind == "linear" and attr == "out"):
                    continue
                architectural = attr in ("kernel", "stride", "in", "out", "groups", "channels") or (
                    attr == "padding" and "same" not in (value, expected))
                out.append((f"{segment_name}.{kind}.{attr}", f"{kind} {attr} {value!r} (reference {expected!r})",
                            architectural))
    return list(dict.fromkeys(out))


def _has_pair(kinds: list[str], first: str, second: str) -> bool:
    return any(a == first and b == second for a, b in zip(kinds, kinds[1:]))


def _is_subsequence(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(k in it for k in short)


SEGMENTS = {"stem": "stem", "main": "residual branch", "shortcut": "shortcut", "after": "after the addition",
            "head": "head"}


def compare(seed: Arch, reference: Arch) -> list[Finding]:
    """How `seed` differs from `reference`. Blocks are paired stage by stage; a difference
    found in several blocks is reported once, naming the blocks (reference names)."""
    findings: list[Finding] = []
    for code, message, arch in _compare_segment("stem", seed.stem, reference.stem):
        findings.append(Finding(code, "stem", message, arch, _sequence(seed.stem), _sequence(reference.stem)))
    s_stages, r_stages = seed.stages(), reference.stages()
    depths, ref_depths = [len(s) for s in s_stages], [len(s) for s in r_stages]
    if depths != ref_depths:
        findings.append(Finding("stages.depth", "stages", f"blocks per stage {tuple(depths)} "
                                f"(reference {tuple(ref_depths)})", True, str(tuple(depths)), str(tuple(ref_depths))))
    seen: dict[tuple[str, str, bool], list[tuple[str, str, str]]] = {}
    last, ref_last = len(seed.blocks) - 1, len(reference.blocks) - 1
    for s_stage, r_stage in zip(s_stages, r_stages):
        for s_i, r_i in zip(s_stage, r_stage):
            s_block, r_block = seed.blocks[s_i], reference.blocks[r_i]
            for part in ("main", "shortcut", "after"):
                if part == "after" and (s_i == last) != (r_i == ref_last):
                    continue  # the last block's "after" ends at the head, the others' at the next fork
                s_ops, r_ops = getattr(s_block, part), getattr(r_block, part)
                for key in _compare_segment(part, s_ops, r_ops):
                    seen.setdefault(key, []).append((r_block.name, _sequence(s_ops), _sequence(r_ops)))
    total = len(reference.blocks)
    for (code, message, arch), where in seen.items():
        names = [w[0] for w in where]
        count = f"all {total} blocks" if len(names) == total else (
            names[0] if len(names) == 1 else f"{len(names)} of {total} blocks: {', '.join(names)}" if len(names) <= 4
            else f"{len(names)} of {total} blocks")
        s_seq, r_seq = Counter((w[1], w[2]) for w in where).most_common(1)[0][0]
        findings.append(Finding(code, f"{SEGMENTS[code.split('.')[0]]} ({count})", message, arch, s_seq, r_seq))
    for code, message, arch in _compare_segment("head", seed.head, reference.head):
        findings.append(Finding(code, "head", message, arch, _sequence(seed.head), _sequence(reference.head)))
    return findings


def match_layers(seed: Arch, reference: Arch) -> dict[str, str]:
    """Weighted layers of `seed` paired with `reference`'s, segment by segment and in order
    (the k-th conv with the k-th conv ...); meaningful when `compare` finds no architectural
    difference. Returns seed name -> reference name."""
    pairs: dict[str, str] = {}

    def pair(a: list[Node], b: list[Node]) -> None:
        for kind in WEIGHTED:
            for s, r in zip([n for n in a if n.kind == kind], [n for n in b if n.kind == kind]):
                pairs[s.name] = r.name

    pair(seed.stem, reference.stem)
    for s, r in zip(seed.blocks, reference.blocks):
        for part in ("main", "shortcut", "after"):
            pair(getattr(s, part), getattr(r, part))
    pair(seed.head, reference.head)
    return pairs


def describe_sequences(arch: Arch) -> list[str]:
    """Human-readable lines: stem, each distinct block layout with its count, head."""
    lines = [f"stem: {_sequence(arch.stem)}"]
    layouts = Counter((_sequence(b.main), _sequence(b.shortcut), _sequence(b.after)) for b in arch.blocks)
    for (main, short, after), n in layouts.items():
        lines.append(f"{n} block(s): branch {main} | shortcut {short} | then {after}")
    lines.append(f"head: {_sequence(arch.head)}")
    return lines

