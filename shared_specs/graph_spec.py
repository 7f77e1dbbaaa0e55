"""A ResNetSpec, and the canonical name of each weighted layer, read off a normalised graph.

resnet_torch.from_module and resnet_keras.from_model read a model into
shared_specs.graph's nodes; `spec_from_graph` turns those into the spec they compute,
whatever the model calls its layers. It reads the stem, each block's branch and
shortcut, the stage boundaries and the head, assembles the spec, then proves it: the
spec's own plan, read the same way, must match the model op for op, attribute for
attribute. Only then are the model's weighted layers paired with canonical names (in
order, segment by segment: graph.match_layers). Whatever the spec cannot express is
refused with one message naming the first such layer, what the spec expected there
and the closest preset.
"""

from __future__ import annotations

import re
from itertools import zip_longest
from typing import Any

from shared_specs.errors import SpecError
from shared_specs.graph import Arch, BlockArch, Node, from_plan, match_layers, segment, sequence
from shared_specs.presets import find_preset, get_spec, list_presets
from shared_specs.spec import ResNetSpec, width_per_group_of

# What each part of a ResNet spec may hold, for refusals.
_EXPECTED = {
    "stem": "convs with BatchNorm + ReLU, then a max-pool or none",
    "branch": "a basic (3x3, 3x3) or bottleneck (1x1, 3x3, 1x1) branch of convs, BatchNorms and ReLUs",
    "shortcut": "the identity, a 1x1 conv + BatchNorm projection (after a 2x2 average pool in shortcut 'D'), "
                "a strided identity, or zero channels appended (shortcut 'A')",
    "after": "a ReLU after the addition (or BatchNorm + ReLU in pre-activation nets)",
    "head": "global pooling (avg, max, avgmax, catavgmax), then Linear / ReLU / Dropout / BatchNorm1d, then an "
            "optional softmax",
}


class _Misfit(Exception):
    def __init__(self, node: Node | None, expected: str, why: str = "") -> None:
        super().__init__(expected)
        self.node, self.expected, self.why = node, expected, why


def spec_from_graph(nodes: list[Node], *, default_name: str = "resnet", **hints: Any
                    ) -> tuple[ResNetSpec, dict[str, str]]:
    """(spec, own layer name -> canonical op name for every weighted layer) of a model's graph.

    `hints` are ResNetSpec fields the graph cannot show (`zero_init_last_bn`, `name`); a
    hint that changes the network fails the proof like any misreading. The name is
    `hints["name"]`, else the registered preset equal to the spec, else `default_name`.
    """
    arch = segment(nodes)
    try:
        _check_coverage(nodes, arch)
        unknown = next((n for n in arch.nodes() if n.kind.startswith("unknown")), None)
        if unknown is not None:
            raise _Misfit(unknown, _expected_at(arch, unknown), "has no counterpart in a ResNet spec" +
                          (f" ({unknown.attrs['why']})" if "why" in unknown.attrs else ""))
        if not arch.blocks:
            raise _Misfit(None, "residual blocks (an addition of a branch and a shortcut)",
                          "the model has no residual additions")
        data = _read(arch)
    except _Misfit as misfit:
        raise _refusal(misfit, arch) from None
    try:
        spec = ResNetSpec.from_dict(data)
    except SpecError as err:
        raise SpecError(f"the model reads as a ResNet the spec cannot hold: {err}; closest preset: "
                        f"{closest_preset(arch)}") from None
    name = hints.pop("name", None)
    spec = spec.replace(**hints) if hints else spec
    reference = segment(from_plan(spec))
    difference = _first_difference(arch, reference)
    if difference is not None:
        raise _refusal(difference, arch)
    names = match_layers(arch, reference)
    return spec.replace(name=name or find_preset(spec) or default_name), names


# -- reading each part --------------------------------------------------------------------


def _read(arch: Arch) -> dict[str, Any]:
    same = any(n.kind in ("conv", "maxpool") and n.attrs["padding"] == "same" for n in arch.nodes())
    blocks = [_block(b) for b in arch.blocks]
    preact = any(b.main and b.main[0].kind == "bn" for b in arch.blocks) or any(
        n.kind == "bn" for n in arch.blocks[-1].after)
    stages, position = _stages(blocks)
    first = next((b for b in blocks if b["type"] == "bottleneck"), None)
    groups = first["groups"] if first else 1
    width_per_group = 64
    if first is not None:
        try:
            width_per_group = width_per_group_of(first["widths"][1], first["out"] // 4, groups, first["name"])
        except SpecError:
            pass  # widths that follow no formula: that stage gives them outright
    data: dict[str, Any] = {
        "block": blocks[0]["type"],
        "preactivation": preact,
        "stages": [_stage(group, blocks[0]["type"], width_per_group, groups) for group in stages],
        "bottleneck_stride": next((b["stride_at"] for b in blocks if b["stride_at"]), "3x3"),
        "stride_position": position,
        "shortcut": _shortcut(arch.blocks, blocks),
        "groups": groups,
        "width_per_group": width_per_group,
        "stem": _stem(arch, same),
        "padding": "same" if same else "symmetric",
        "conv_bias": _conv_bias(arch),
        "batchnorm": _batchnorm(arch),
        "in_channels": next(n for n in arch.nodes() if n.kind == "conv").attrs["in"],
        **_head(arch),
    }
    return data


def _stem(arch: Arch, same: bool) -> dict[str, Any]:
    convs = [n for n in arch.stem if n.kind == "conv"]
    if not convs:
        raise _Misfit(arch.stem[0] if arch.stem else arch.blocks[0].main[0], _EXPECTED["stem"],
                      "comes before any stem conv")
    first = convs[0]
    k, padding = first.attrs["kernel"], first.attrs["padding"]
    if not isinstance(padding, int) and padding != "same":
        raise _Misfit(first, "symmetric padding or Keras 'same'", f"pads {padding} (asymmetric)")
    stem: dict[str, Any] = {
        "widths": [c.attrs["out"] for c in convs], "kernel_size": k, "stride": first.attrs["stride"],
        "padding": None if padding == "same" or (padding == k // 2 and not same) else padding,
        "norm": arch.stem.index(convs[-1]) + 1 < len(arch.stem) and arch.stem[arch.stem.index(convs[-1]) + 1].kind
        == "bn",
    }
    pool = next((n for n in arch.stem if n.kind == "maxpool"), None)
    if pool is None:
        return {**stem, "pool": "none"}
    size, pad = pool.attrs["kernel"], pool.attrs["padding"]
    if not isinstance(pad, int) and pad != "same":
        raise _Misfit(pool, "symmetric padding or Keras 'same'", f"pads {pad} (asymmetric)")
    default = pad == "same" if same else pad == size // 2
    return {**stem, "pool": "max", "pool_size": size, "pool_stride": pool.attrs["stride"],
            "pool_padding": None if default else pad, "pool_pad_value": pool.attrs["pad_value"]}


def _block(b: BlockArch) -> dict[str, Any]:
    convs = [n for n in b.main if n.kind == "conv"]
    kernels = [c.attrs["kernel"] for c in convs]
    if kernels not in ([3, 3], [1, 3, 1]):
        expected = [1, 3, 1] if len(convs) >= 3 else [3, 3]
        bad = next((c for c, k in zip(convs, expected) if c.attrs["kernel"] != k),
                   convs[len(expected)] if len(convs) > len(expected) else convs[-1] if convs else b.add)
        raise _Misfit(bad, _EXPECTED["branch"], f"is in a residual branch of {len(convs)} convs "
                      f"{'x'.join(map(str, kernels))}".rstrip())
    strided = [i for i, c in enumerate(convs) if c.attrs["stride"] != 1]
    short_stride = next((n.attrs["stride"] for n in b.shortcut if n.kind in ("conv", "subsample", "avgpool")
                         and n.attrs["stride"] != 1), 1)
    stride = convs[strided[0]].attrs["stride"] if strided else short_stride
    bottleneck = len(convs) == 3
    return {"name": convs[0].name, "type": "bottleneck" if bottleneck else "basic", "in": convs[0].attrs["in"],
            "out": convs[-1].attrs["out"], "stride": stride, "widths": tuple(c.attrs["out"] for c in convs),
            "groups": convs[1].attrs["groups"] if bottleneck else 1,
            "stride_at": ("1x1" if strided[0] == 0 else "3x3") if bottleneck and strided else None}


def _stages(blocks: list[dict[str, Any]]) -> tuple[list[list[dict[str, Any]]], str]:
    """Blocks grouped into stages and the spec's stride_position. A stage starts where a block
    changes the width or the block type; its one strided block sits first (torchvision) or
    last (keras.applications V2); other groupings split at strided blocks."""
    groups: list[list[dict[str, Any]]] = []
    for b in blocks:
        if not groups or b["in"] != b["out"] or b["type"] != groups[-1][-1]["type"]:
            groups.append([b])
        else:
            groups[-1].append(b)

    def strided(group: list[dict[str, Any]]) -> list[int]:
        return [i for i, b in enumerate(group) if b["stride"] != 1]

    lasts = any(len(g) > 1 and strided(g) == [len(g) - 1] for g in groups)
    firsts = any(len(g) > 1 and strided(g) == [0] for g in groups)
    position = "last" if lasts and not firsts else "first"
    out: list[list[dict[str, Any]]] = []
    for group in groups:
        current: list[dict[str, Any]] = []
        for b in group:
            if position == "first" and b["stride"] != 1 and current:
                out.append(current)
                current = []
            current.append(b)
            if position == "last" and b["stride"] != 1:
                out.append(current)
                current = []
        if current:
            out.append(current)
    return out, position


def _stage(group: list[dict[str, Any]], block: str, width_per_group: int, groups: int) -> dict[str, Any]:
    kind = group[0]["type"]
    stride = next((b["stride"] for b in group if b["stride"] != 1), 1)
    out = group[0]["out"]
    if kind == "basic":
        width, formula = out, (out, out)
    else:
        width = max(out // 4, 1)
        mid = width * width_per_group // 64 * groups
        formula = (mid, mid, width * 4) if (width * width_per_group) % 64 == 0 else None
    stage: dict[str, Any] = {"depth": len(group), "width": width, "stride": stride}
    if kind != block:
        stage["block"] = kind
    if any(b["widths"] != formula for b in group):  # pruned or hand-picked widths: given outright
        stage["block_widths"] = [list(b["widths"]) for b in group]
    return stage


def _shortcut(arch_blocks: list[BlockArch], blocks: list[dict[str, Any]]) -> str:
    kinds = []
    for arch_block in arch_blocks:
        # what kind of shortcut it is; the proof then checks it op for op, in execution order
        seq = [n.kind for n in arch_block.shortcut]
        kind = "identity" if not seq else "pad" if "channel_pad" in seq else (
            ("avg" if seq[0] == "avgpool" else "projection") if "conv" in seq else
            "subsample" if seq == ["subsample"] else None)
        if kind is None:
            raise _Misfit(arch_block.shortcut[0], _EXPECTED["shortcut"],
                          f"starts a shortcut {sequence(arch_block.shortcut)}")
        kinds.append(kind)
    reshape = [b["in"] != b["out"] or b["stride"] != 1 for b in blocks]
    widen = [b["in"] != b["out"] for b in blocks]
    projects = [k in ("projection", "avg") for k in kinds]
    if "pad" in kinds:
        return "A"
    if "avg" in kinds:
        return "D"
    if all(projects) and len(projects) > 1:
        return "C"
    if projects == reshape:
        return "B"
    if projects == widen:
        return "B-subsample"
    i = next(i for i, (p, r) in enumerate(zip(projects, reshape)) if p != r)
    b = arch_blocks[i]
    node = b.shortcut[0] if b.shortcut else b.add
    expected = "a projection shortcut, as the blocks that change shape have here" if reshape[i] else \
        "the identity, as the blocks that keep their shape have here (only shortcut 'C' projects everywhere)"
    raise _Misfit(node, expected, "is a shortcut of a kind no single shortcut type gives together with the others")


def _conv_bias(arch: Arch) -> str:
    biases = {n.attrs["bias"] for n in arch.nodes() if n.kind == "conv"}
    return "all" if biases == {True} else "none" if biases == {False} else "unnormalized"


def _batchnorm(arch: Arch) -> dict[str, Any]:
    norms = [n for n in arch.nodes() if n.kind == "bn"]
    if not norms:
        return {}
    first = norms[0]
    for n in norms:
        if n.attrs["decay"] is None:
            raise _Misfit(n, "a BatchNorm with a momentum (the spec's running_stats_decay)",
                          "has momentum=None, a cumulative average")
        if (n.attrs["epsilon"], n.attrs["decay"], n.attrs["running_var"]) != (
                first.attrs["epsilon"], first.attrs["decay"], first.attrs["running_var"]):
            raise _Misfit(n, f"BatchNorm as {first.name}'s: epsilon {first.attrs['epsilon']}, decay "
                             f"{first.attrs['decay']}, {first.attrs['running_var']} running variance (one spec has "
                             "one BatchNorm setting)",
                          f"has epsilon {n.attrs['epsilon']}, decay {n.attrs['decay']}, {n.attrs['running_var']} "
                          "running variance")
    return {"epsilon": first.attrs["epsilon"], "running_stats_decay": first.attrs["decay"],
            "running_var": first.attrs["running_var"]}


def _head(arch: Arch) -> dict[str, Any]:
    nodes = arch.head
    if not nodes:
        return {"num_classes": None}
    if nodes[0].kind != "gap":
        raise _Misfit(nodes[0], _EXPECTED["head"], "comes before any global pooling")
    rest = nodes[1:]
    activation = "none"
    if rest and rest[-1].kind == "softmax":
        activation, rest = "softmax", rest[:-1]
    linears = [n for n in rest if n.kind == "linear"]
    if not linears:
        raise _Misfit(rest[0] if rest else nodes[0], "a Linear classifier after the global pool (a spec without "
                      "one, num_classes=None, returns the feature map unpooled)", "ends the network without one")
    final = linears[-1]
    if rest[-1] is not final:
        raise _Misfit(rest[-1], "nothing after the classifier's final Linear but a softmax", "follows it")
    if not final.attrs["bias"]:
        raise _Misfit(final, "a final Linear with a bias", "has none")
    before = rest[:-1]
    container = re.fullmatch(r"(.+)\.\d+", final.name)  # the final Linear is an entry of an nn.Sequential
    if container:
        inside = [n for n in before if n.name.startswith(container[1] + ".")]
    else:  # one Linear, perhaps after a dropout (timm's drop_rate), or a classifier of several layers
        inside = [] if len(before) <= 1 and all(n.kind == "dropout" for n in before) else list(before)
    outside = [n for n in before if all(n is not m for m in inside)]
    if outside and (len(outside) > 1 or outside[0].kind != "dropout" or outside[0] is not before[0]):
        raise _Misfit(outside[-1], _EXPECTED["head"], "sits between the pool and the classifier's nn.Sequential")
    layers = []
    for n in inside:
        if n.kind == "linear":
            layers.append({"kind": "linear", "features": n.attrs["out"], "bias": n.attrs["bias"]})
        elif n.kind in ("relu", "bn"):
            layers.append({"kind": "relu" if n.kind == "relu" else "batchnorm"})
        elif n.kind == "dropout":
            layers.append({"kind": "dropout", "rate": n.attrs["rate"]})
        else:
            raise _Misfit(n, _EXPECTED["head"], "is in the classifier")
    head = {"pool": nodes[0].attrs["mode"], "dropout": outside[0].attrs["rate"] if outside else 0.0,
            "layers": layers, "sequential": bool(container or layers)}
    return {"num_classes": final.attrs["out"], "head_activation": activation, "head": head}


# -- proof and refusals --------------------------------------------------------------------


def _check_coverage(nodes: list[Node], arch: Arch) -> None:
    covered = {id(n) for n in arch.nodes()}
    for n in nodes[1:]:
        if id(n) not in covered:
            raise _Misfit(n, "every op on the one path from the input through the blocks to the output",
                          "is off that path")


def _first_difference(seen: Arch, ref: Arch) -> _Misfit | None:
    """The first op where the model and the spec's plan differ, in execution order."""
    parts: list[tuple[str, list[Node], list[Node]]] = [("the stem", seen.stem, ref.stem)]
    for i, (s, r) in enumerate(zip_longest(seen.blocks, ref.blocks)):
        if s is None or r is None:
            node = s.main[0] if s is not None else None
            return _Misfit(node, f"{len(ref.blocks)} residual blocks", f"is in residual block {i + 1}")
        parts += [(f"{r.name}'s residual branch", s.main, r.main), (f"{r.name}'s shortcut", s.shortcut, r.shortcut),
                  (f"what follows {r.name}'s addition", s.after, r.after)]
    parts.append(("the head", seen.head, ref.head))
    for where, mine, theirs in parts:
        for a, b in zip_longest(mine, theirs):
            if a is not None and b is not None and a.kind == b.kind and all(
                    a.attrs.get(k) == v for k, v in b.attrs.items() if k in a.attrs):
                continue
            expected = f"{b.label() if b else 'nothing more'} ({where}: {sequence(theirs)})"
            if a is None:
                return _Misfit(mine[-1] if mine else None, expected, f"is followed by nothing in {where}")
            wrong = [f"{k} {a.attrs[k]!r} (spec: {v!r})" for k, v in b.attrs.items()
                     if k in a.attrs and a.attrs[k] != v] if b is not None and a.kind == b.kind else []
            return _Misfit(a, expected, f"is {a.label()}" + (f": {', '.join(wrong)}" if wrong else ""))
    return None


def _expected_at(arch: Arch, node: Node) -> str:
    if any(n is node for n in arch.stem):
        return _EXPECTED["stem"]
    for b in arch.blocks:
        for part, key in ((b.main, "branch"), (b.shortcut, "shortcut"), (b.after, "after")):
            if any(n is node for n in part):
                return _EXPECTED[key]
    return _EXPECTED["head"]


def _refusal(misfit: _Misfit, arch: Arch) -> SpecError:
    what = misfit.node.describe() if misfit.node is not None else "the model"
    why = f" {misfit.why}" if misfit.why else ""
    return SpecError(f"{what}{why}; a ResNet spec has {misfit.expected} there; closest preset: "
                     f"{closest_preset(arch)}")


def closest_preset(arch: Arch) -> str:
    """The preset nearest in shape to `arch`: same block type and stem kernel first, then
    the fewest blocks per stage apart."""
    convs = [sum(n.kind == "conv" for n in b.main) for b in arch.blocks]
    block = "bottleneck" if convs.count(3) > convs.count(2) else "basic"
    depths = [len(s) for s in arch.stages()]
    stem = next((n.attrs["kernel"] for n in arch.stem if n.kind == "conv"), 7)
    preact = any(b.main and b.main[0].kind == "bn" for b in arch.blocks)

    def score(name: str) -> int:
        spec = get_spec(name)
        theirs = [s.depth for s in spec.stages]
        return (100 * (spec.block != block) + 10 * abs(len(theirs) - len(depths))
                + sum(abs(a - b) for a, b in zip_longest(depths, theirs, fillvalue=0))
                + 3 * (spec.stem.kernel_size != stem) + 3 * (spec.preactivation != preact)
                + 2 * (spec.attention is not None or spec.norm.kind != "batchnorm" or spec.anti_alias != "none"))

    return min(list_presets(), key=score)
