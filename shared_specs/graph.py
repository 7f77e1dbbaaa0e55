"""What a ResNet computes, as a graph of normalised ops that any model or plan can be read into.

A model of either framework (read by resnet_torch.reading with torch.fx, or by
resnet_keras.reading from the Keras layer graph) or a spec's plan (`from_plan`) becomes
the same list of `Node`s: conv (kernel, stride, padding, channels, groups, bias), bn,
relu, max-pool, global pool, linear, dropout ... with their inputs. Padding layers are
folded into the conv or pool they feed; flatten/view/identity disappear. `segment` cuts
the graph at its additions into stem, residual blocks (main branch, shortcut, what
follows the addition) and head; `compare` lists how two such architectures differ (the
seed checker), and `match_layers` pairs their weighted layers (the porter,
shared_specs.graph_spec). Nothing here knows any particular model or framework: the
same reading of a tutorial's code, of our builders' output and of a preset's plan is
what makes the comparison fair.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from shared_specs import plan as P
from shared_specs.plan import make_plan
from shared_specs.spec import ResNetSpec

WEIGHTED = ("conv", "bn", "linear")


@dataclass
class Node:
    """One normalised op: its kind, the model's own name for it, attributes, inputs (indices),
    and what it was in the model (`layer_type`: a module or layer class, a function), for messages."""

    kind: str
    name: str
    attrs: dict[str, Any] = field(default_factory=dict)
    inputs: list[int] = field(default_factory=list)
    layer_type: str = ""

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
        if self.kind == "gap":
            return "avgpool" if a.get("mode", "avg") == "avg" else f"global {a['mode']} pool"
        if self.kind == "dropout":
            return f"dropout {a['rate']:g}"
        return {"bn": "bn", "relu": "relu", "linear": "fc", "softmax": "softmax",
                "channel_pad": "zero channels"}.get(self.kind, self.kind)

    def describe(self) -> str:
        """`layer3.0.conv1 (Conv2d)`: the model's own name and type, for messages."""
        return f"{self.name} ({self.layer_type or self.label()})"


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
    kind = type(op).__name__
    if isinstance(op, P.Conv):
        attrs = {"kernel": op.kernel_size, "stride": op.stride,
                 "padding": conv_padding(op.padding, op.kernel_size, op.stride), "in": op.in_channels,
                 "out": op.out_channels, "groups": op.groups, "bias": op.bias}
        return Node("conv", op.name, attrs, [source], kind)
    if isinstance(op, P.BatchNorm):
        return Node("bn", op.name, {"channels": op.channels, "epsilon": op.epsilon, "decay": op.running_stats_decay,
                                    "running_var": op.running_var}, [source], kind)
    if isinstance(op, P.MaxPool):
        return Node("maxpool", op.name, {"kernel": op.size, "stride": op.stride, "padding": op.padding,
                                         "pad_value": op.pad_value}, [source], kind)
    if isinstance(op, P.AvgPool):
        return Node("avgpool", op.name, {"kernel": op.size, "stride": op.stride, "ceil_mode": op.ceil_mode},
                    [source], kind)
    if isinstance(op, P.Subsample):
        return Node("subsample", op.name, {"stride": op.stride}, [source], kind)
    if isinstance(op, P.Linear):
        return Node("linear", op.name, {"in": op.in_features, "out": op.out_features, "bias": op.bias}, [source],
                    kind)
    if isinstance(op, (P.GlobalAvgPool, P.GlobalPool)):
        return Node("gap", op.name, {"mode": getattr(op, "mode", "avg")}, [source], kind)
    if isinstance(op, P.Dropout):
        return Node("dropout", op.name, {"rate": op.rate}, [source], kind)
    simple = {P.ReLU: "relu", P.Softmax: "softmax", P.ChannelPad: "channel_pad"}
    # ops no model reader produces (GroupNorm, attention, ...) keep their plan type as kind
    return Node(simple.get(type(op), kind.lower()), op.name, {}, [source], kind)


def conv_padding(padding: Any, kernel: int, stride: int) -> Any:
    """'same' where it is the symmetric k // 2 (stride 1, odd kernel; any 1x1) becomes that
    number: only strided 'same' windows are asymmetric (trap 4)."""
    if padding == "same" and (kernel == 1 or (stride == 1 and kernel % 2)):
        return kernel // 2
    return padding


def symmetric_padding(padding: Any) -> Any:
    """One int for equal padding on every side, else the tuple as given."""
    flat = [p for pair in padding for p in (pair if isinstance(pair, (tuple, list)) else (pair,))] \
        if isinstance(padding, (tuple, list)) else [padding]
    return flat[0] if len(set(flat)) == 1 else tuple(flat)


def fold_padding(nodes: list[Node]) -> list[Node]:
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
        out.append(Node(n.kind, n.name, n.attrs, [renumber[j] for j in n.inputs], n.layer_type))
    return out


def merge_cat_of_pools(inputs: list[int], nodes: list[Node], layer_type: str) -> bool:
    """Whether the concatenation of `nodes[i] for i in inputs` is an average and a max pool of one
    tensor, timm's catavgmax written out; if so the average pool's node becomes the catavgmax
    pool (its layer shown as `layer_type`) and the max pool's is dropped."""
    if len(inputs) != 2:
        return False
    avg, peak = (nodes[i] for i in inputs)
    if not (avg.kind == peak.kind == "gap" and (avg.attrs["mode"], peak.attrs["mode"]) == ("avg", "max")
            and avg.inputs == peak.inputs):
        return False
    avg.attrs["mode"], avg.layer_type = "catavgmax", layer_type
    peak.kind = "dropped"
    return True


def drop_nodes(nodes: list[Node], kind: str) -> list[Node]:
    """The graph without its nodes of `kind` (ops a reader merged into another, unused)."""
    keep = [i for i, n in enumerate(nodes) if n.kind != kind]
    renumber = {old: new for new, old in enumerate(keep)}
    return [Node(nodes[i].kind, nodes[i].name, nodes[i].attrs, [renumber[j] for j in nodes[i].inputs],
                 nodes[i].layer_type) for i in keep]


# -- cutting a graph into stem, blocks and head -----------------------------------------


@dataclass
class BlockArch:
    """One residual block as read from a graph: both branches and what follows the addition."""

    name: str  # the addition's name: the canonical block name when read from a plan
    main: list[Node]
    shortcut: list[Node]
    after: list[Node]  # after the addition, up to where the next block forks
    add: Node | None = None

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

    def nodes(self) -> list[Node]:
        """Every node of the architecture, in segment order (additions included)."""
        out = list(self.stem)
        for b in self.blocks:
            out += b.main + b.shortcut + ([b.add] if b.add else []) + b.after
        return out + self.head


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
        blocks.append(BlockArch(nodes[i].name, branches[0], branches[1], [nodes[j] for j in range(i + 1, end + 1)],
                                nodes[i]))
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


def sequence(nodes: list[Node]) -> str:
    """`conv3x3 -> bn -> relu`: the labels of a run of nodes."""
    return " -> ".join(n.label() for n in nodes) or "nothing"


ARCHITECTURAL_ATTRS = ("kernel", "stride", "in", "out", "groups", "channels", "mode", "ceil_mode")


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
                out.append((f"{segment_name}.{word}.{kind}", f"{abs(extra)} {word} {kind}",
                            kind not in ("softmax", "dropout")))
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
                architectural = attr in ARCHITECTURAL_ATTRS or (
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
        findings.append(Finding(code, "stem", message, arch, sequence(seed.stem), sequence(reference.stem)))
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
                    seen.setdefault(key, []).append((r_block.name, sequence(s_ops), sequence(r_ops)))
    total = len(reference.blocks)
    for (code, message, arch), where in seen.items():
        names = [w[0] for w in where]
        count = f"all {total} blocks" if len(names) == total else (
            names[0] if len(names) == 1 else f"{len(names)} of {total} blocks: {', '.join(names)}" if len(names) <= 4
            else f"{len(names)} of {total} blocks")
        s_seq, r_seq = Counter((w[1], w[2]) for w in where).most_common(1)[0][0]
        findings.append(Finding(code, f"{SEGMENTS[code.split('.')[0]]} ({count})", message, arch, s_seq, r_seq))
    for code, message, arch in _compare_segment("head", seed.head, reference.head):
        findings.append(Finding(code, "head", message, arch, sequence(seed.head), sequence(reference.head)))
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
    lines = [f"stem: {sequence(arch.stem)}"]
    layouts = Counter((sequence(b.main), sequence(b.shortcut), sequence(b.after)) for b in arch.blocks)
    for (main, short, after), n in layouts.items():
        lines.append(f"{n} block(s): branch {main} | shortcut {short} | then {after}")
    lines.append(f"head: {sequence(arch.head)}")
    return lines
