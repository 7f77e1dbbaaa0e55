"""Infer a ResNetSpec from canonical weights alone: tensor names and shapes.

A torchvision or timm state_dict (or keras.applications weights renamed to canonical
names) says most of its architecture through its shapes; `infer_spec` reads that,
fills in what shapes cannot say from documented conventions, and proves the result by
checking that the spec's canonical tensors are exactly the ones given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from shared_specs.canonical import canonical_shapes
from shared_specs.errors import SpecError
from shared_specs.plan import IGNORED_SUFFIXES, Conv, make_plan
from shared_specs.presets import find_preset
from shared_specs.spec import ResNetSpec, width_per_group_of

Shape = tuple[int, ...]

_BLOCK_KEY = re.compile(r"layer(\d+)\.(\d+)\.")
_STAGE_KEY = re.compile(r"layer(\d+)\.")
_TOP_LEVEL = re.compile(r"conv1|bn1|layer\d+|post_bn|fc")

# The conventions for what weights cannot show (see infer_spec's docstring).
_TORCHVISION_STEM = {"stride": 2, "padding": None, "pool": "max", "pool_size": 3, "pool_stride": 2,
                     "pool_padding": None, "pool_pad_value": "-inf"}
_CIFAR_STEM = {**_TORCHVISION_STEM, "stride": 1, "pool": "none"}
_TORCH_BN = {"epsilon": 1e-5, "running_stats_decay": 0.9, "running_var": "unbiased"}
_KERAS_BN = {"epsilon": 1.001e-5, "running_stats_decay": 0.99, "running_var": "biased"}


@dataclass(frozen=True)
class _Block:
    """What one residual block's weights show."""

    name: str
    in_channels: int
    out_channels: int
    mid_channels: int  # bottleneck inner width; == out_channels in a basic block
    groups: int
    shortcut: str | None  # None, "projection" (downsample.0) or "avg" (timm's downsample.1)


@dataclass(frozen=True)
class _Facts:
    """Everything the weights determine."""

    stem_widths: tuple[int, ...]
    stem_kernel: int
    stem_norm: bool
    in_channels: int
    block: str
    preactivation: bool
    stages: tuple[tuple[_Block, ...], ...]
    num_classes: int | None
    biased_convs: frozenset[str]


def infer_spec(weights: Mapping[str, Any], **hints: Any) -> ResNetSpec:
    """The ResNetSpec whose canonical tensors are exactly `weights` (name -> array with .shape).

    Read from the weights (a hint may restate these, never contradict them):
    block type (`conv3` present: bottleneck), per-stage depth and width, groups and
    width_per_group (from the 3x3 conv's grouped shape), the stem (`conv1` single conv
    and its kernel size, or timm's deep stem `conv1.0`/`conv1.3`/`conv1.6` widths;
    `bn1` present: stem norm), in_channels, preactivation (`post_bn` present),
    shortcut (no `downsample` tensors where a block reshapes: A; `downsample.0` where
    the shape changes: B; in every block: C; where only the channels change while
    strided blocks keep an identity: B-subsample; timm's avg-pool shortcut with its
    conv at `downsample.1`: D), conv_bias (which convs carry `.bias`) and num_classes
    (`fc.weight`; None without `fc`). Where two values give the same network the
    first-listed wins: C over B when every block projects, "none" over
    "unnormalized" when every conv is followed by BatchNorm.

    Not in the weights, so taken from conventions, each overridable by a hint. For each
    group of fields the first row that matches applies:

    =========================================  ============================================
    weights show                               convention (whose)
    =========================================  ============================================
    *stem stride and pool, stage strides*
    a single 3x3 stem conv and 3 stages        stem stride 1, no max-pool; strides 1, 2, 2
                                               (He et al. 2015's CIFAR nets)
    post_bn (pre-activation)                   stem stride 2, max-pool 3/2/1; strides 2,
                                               ..., 2, 1 in each stage's LAST block
                                               (keras.applications ResNetV2)
    anything else (7x7, deep stem, ...)        stem stride 2, pad k // 2, max-pool 3/2/1;
                                               strides 1, 2, 2, ... in each stage's first
                                               block (torchvision; timm alike)
    *numerics, outside the CIFAR row*
    post_bn (pre-activation)                   BN epsilon 1.001e-5, decay 0.99, biased
                                               running variance; max-pool pads zeros
                                               (keras.applications ResNetV2)
    a bias on every conv, post-activation      the same, and the bottleneck stride on the
                                               first 1x1 (keras.applications ResNet: the
                                               one published biased v1 layout)
    anything else                              BN epsilon 1e-5, decay 0.9, unbiased
                                               running variance; max-pool pads
                                               -inf; stride on the 3x3 (torchvision v1.5)
    *initialisation*
    deep stem, or the avg-pool shortcut        zero_init_last_bn=True (timm's default)
    *always*                                   padding "symmetric", head_activation "none"
    =========================================  ============================================

    The shortcut type is read under the stage strides in force, so a network strided
    elsewhere needs its strides as a hint. Hints are ResNetSpec fields; `stem` and
    `batchnorm` may be partial dicts, `stages` a list of partial dicts (e.g.
    `stages=[{"stride": 1}, {"stride": 2}, ...]`). `name` defaults to the registered
    preset equal to the result, else "resnet".

    Anything that is not such a ResNet raises SpecError naming the tensor and why.

    >>> spec = infer_spec({k: v.numpy() for k, v in torchvision_model.state_dict().items()})
    """
    shapes = _shapes(weights)
    facts = _read_facts(shapes)
    data = _conventions(facts)
    _apply_hints(data, hints)
    if "shortcut" not in hints:
        data["shortcut"] = _infer_shortcut(facts, data)
    if "conv_bias" not in hints:
        data["conv_bias"] = _infer_conv_bias(facts, data)
    spec = ResNetSpec.from_dict(data)
    _check_fits(spec, shapes, hints)
    if "name" not in hints:
        spec = spec.replace(name=find_preset(spec) or "resnet")
    return spec


# -- reading the weights --------------------------------------------------------


def _shapes(weights: Mapping[str, Any]) -> dict[str, Shape]:
    if not isinstance(weights, Mapping):
        raise SpecError(f"weights must be a mapping of tensor name -> array, got {type(weights).__name__}")
    shapes: dict[str, Shape] = {}
    for name, value in weights.items():
        if not isinstance(name, str):
            raise SpecError(f"tensor names must be strings, got {name!r}")
        if name.endswith(IGNORED_SUFFIXES):
            continue
        shape = getattr(value, "shape", None)
        if shape is None:
            raise SpecError(f"{name} is a {type(value).__name__}, not an array with a .shape")
        shapes[name] = tuple(int(d) for d in shape)
    if not shapes:
        raise SpecError("no tensors given")
    prefixes = {name.split(".", 1)[0] for name in shapes}
    if len(prefixes) == 1 and not _TOP_LEVEL.fullmatch(prefix := prefixes.pop()):
        raise SpecError(f"every tensor name starts with {prefix + '.'!r} (a wrapper such as DataParallel's "
                        f"'module.'): strip it so names read 'conv1.weight', 'layer1.0.conv1.weight', ...")
    return shapes


def _conv(shapes: dict[str, Shape], layer: str, why: str) -> Shape:
    """The kernel shape (out, in/groups, k, k) of conv `layer`, which must exist and be square."""
    name = f"{layer}.weight"
    if name not in shapes:
        raise SpecError(f"{name} is missing: {why}")
    shape = shapes[name]
    if len(shape) != 4 or shape[2] != shape[3]:
        raise SpecError(f"{name} has shape {shape}: a conv kernel (out, in/groups, k, k) with a square k x k "
                        "was expected")
    return shape


def _read_facts(shapes: dict[str, Shape]) -> _Facts:
    stem_widths, stem_kernel, in_channels = _read_stem(shapes)
    stages = _stage_indices(shapes)
    preactivation = "post_bn.weight" in shapes
    bottleneck = "layer1.0.conv3.weight" in shapes
    block = "bottleneck" if bottleneck else "basic"
    channels = stem_widths[-1]
    read: list[tuple[_Block, ...]] = []
    for i, depth in enumerate(stages, start=1):
        blocks = []
        for j in range(depth):
            b = _read_block(shapes, f"layer{i}.{j}", bottleneck)
            if b.in_channels != channels:
                before = f"layer{i}.{j - 1}" if j else (f"layer{i - 1}.{stages[i - 2] - 1}" if i > 1 else "the stem")
                raise SpecError(f"{b.name}.conv1.weight takes {b.in_channels} input channels but {before} "
                                f"outputs {channels}: consecutive layers do not connect")
            channels = b.out_channels
            blocks.append(b)
        read.append(tuple(blocks))
    fc = shapes.get("fc.weight")
    if fc is not None and (len(fc) != 2 or fc[1] != channels):
        raise SpecError(f"fc.weight has shape {fc}: a classifier over the last stage's {channels} channels "
                        f"must be ({fc[0] if fc else '?'}, {channels})")
    biased = frozenset(n[: -len(".bias")] for n in shapes
                       if n.endswith(".bias") and len(shapes.get(n[: -len("bias")] + "weight", ())) == 4)
    return _Facts(stem_widths, stem_kernel, "bn1.weight" in shapes, in_channels, block, preactivation,
                  tuple(read), None if fc is None else fc[0], biased)


def _read_stem(shapes: dict[str, Shape]) -> tuple[tuple[int, ...], int, int]:
    if "conv1.weight" in shapes:
        out, cin, k, _ = _conv(shapes, "conv1", "")
        return (out,), k, cin
    if "conv1.0.weight" not in shapes:
        raise SpecError("no stem: a ResNet's weights hold conv1.weight (a single stem conv) or conv1.0.weight "
                        "(timm's deep stem)")
    widths: list[int] = []
    kernel = cin = 0
    i = 0
    while f"conv1.{3 * i}.weight" in shapes:
        out, ci, k, _ = _conv(shapes, f"conv1.{3 * i}", "")
        if i == 0:
            kernel, cin = k, ci
        elif k != kernel:
            raise SpecError(f"conv1.{3 * i}.weight is {k}x{k} but conv1.0.weight is {kernel}x{kernel}: "
                            "a deep stem's convs share one kernel size")
        elif ci != widths[-1]:
            raise SpecError(f"conv1.{3 * i}.weight takes {ci} input channels but conv1.{3 * i - 3} "
                            f"outputs {widths[-1]}")
        widths.append(out)
        i += 1
    # timm's deep stem is nn.Sequential(conv, bn, act, conv, bn, act, conv): only 3i and 3i+1 hold tensors
    for name in shapes:
        if name.startswith("conv1."):
            index = name.split(".")[1]
            if not index.isdigit() or int(index) >= 3 * len(widths) - 2 or int(index) % 3 == 2:
                raise SpecError(f"{name} does not belong to a deep stem of {len(widths)} convs "
                                f"(conv1.0, conv1.3, ... with BatchNorm at conv1.1, conv1.4, ...)")
    return tuple(widths), kernel, cin


def _stage_indices(shapes: dict[str, Shape]) -> list[int]:
    """Depth of each stage; stages and blocks must be numbered without gaps."""
    blocks: dict[int, set[int]] = {}
    for name in shapes:
        if m := _BLOCK_KEY.match(name):
            blocks.setdefault(int(m[1]), set()).add(int(m[2]))
        elif _STAGE_KEY.match(name):
            raise SpecError(f"{name} is not inside a residual block: stage tensors are named layerI.J.<layer>.<param>")
    if not blocks:
        raise SpecError("no layer1.* tensors: a ResNet's stages are named layer1, layer2, ...")
    depths = []
    for i in range(1, max(blocks) + 1):
        if i not in blocks:
            raise SpecError(f"layer{max(blocks)}.* tensors are present but no layer{i}.*: stages are numbered from 1 "
                            "without gaps")
        for j in range(max(blocks[i]) + 1):
            if j not in blocks[i]:
                raise SpecError(f"layer{i}.{max(blocks[i])}.* tensors are present but no layer{i}.{j}.*: "
                                "blocks are numbered from 0 without gaps")
        depths.append(len(blocks[i]))
    return depths


def _read_block(shapes: dict[str, Shape], n: str, bottleneck: bool) -> _Block:
    kind = "bottleneck" if bottleneck else "basic"
    c1 = _conv(shapes, f"{n}.conv1", f"every residual block has a conv1 ({kind} blocks, from layer1.0)")
    c2 = _conv(shapes, f"{n}.conv2", f"every residual block has a conv2 ({kind} blocks, from layer1.0)")
    has_conv3 = f"{n}.conv3.weight" in shapes
    if has_conv3 != bottleneck:
        raise SpecError(f"{n}.conv3.weight is {'present' if has_conv3 else 'missing'} but layer1.0 is a {kind} "
                        "block: one network has one block type")
    if bottleneck:
        c3 = _conv(shapes, f"{n}.conv3", "")
        expected = ((1, f"{n}.conv1", c1), (3, f"{n}.conv2", c2), (1, f"{n}.conv3", c3))
        mid, out = c1[0], c3[0]
        if c2[1] == 0 or c2[0] != mid or mid % c2[1]:
            raise SpecError(f"{n}.conv2.weight has shape {c2}: the 3x3 conv of a bottleneck maps the {mid} channels "
                            f"of conv1 to {mid}, in groups")
        if c3[1] != mid:
            raise SpecError(f"{n}.conv3.weight takes {c3[1]} input channels but {n}.conv2 outputs {mid}")
        groups = mid // c2[1]
    else:
        expected = ((3, f"{n}.conv1", c1), (3, f"{n}.conv2", c2))
        mid = out = c2[0]
        if c2[1] != c1[0]:
            raise SpecError(f"{n}.conv2.weight takes {c2[1]} input channels but {n}.conv1 outputs {c1[0]}")
        if c1[0] != out:
            raise SpecError(f"{n}.conv1.weight outputs {c1[0]} channels but {n}.conv2 {out}: a basic block keeps "
                            "one width")
        groups = 1
    for k, name, shape in expected:
        if shape[2] != k:
            conv = name.rsplit(".", 1)[1]
            raise SpecError(f"{name}.weight is {shape[2]}x{shape[2]}; a {kind} block's {conv} is {k}x{k}")
    if bottleneck and out % 4:
        raise SpecError(f"{n}.conv3.weight outputs {out} channels, not 4 x the stage width (bottleneck expansion 4)")
    d0, d1 = shapes.get(f"{n}.downsample.0.weight"), shapes.get(f"{n}.downsample.1.weight")
    if d0 is not None:
        shortcut: str | None = "projection"
    elif d1 is not None and len(d1) == 4:
        shortcut = "avg"  # timm's avg_down: downsample.0 is the (parameter-free) pool
    else:
        shortcut = None
    return _Block(n, c1[1], out, mid, groups, shortcut)


# -- conventions and hints ------------------------------------------------------


def _conventions(f: _Facts) -> dict[str, Any]:
    """A plain spec dict: the facts, plus the documented conventions for the rest."""
    n = len(f.stages)
    cifar = len(f.stem_widths) == 1 and f.stem_kernel == 3 and n == 3
    keras_v1 = not cifar and not f.preactivation and _every_conv_biased(f)
    keras = keras_v1 or (f.preactivation and not cifar)
    timm = len(f.stem_widths) > 1 or any(b.shortcut == "avg" for s in f.stages for b in s)
    if cifar:
        stem, strides = dict(_CIFAR_STEM), [1] + [2] * (n - 1)
    elif f.preactivation:  # keras.applications ResNetV2: stack2(stride1=2) ..., the last stride1=1
        stem, strides = dict(_TORCHVISION_STEM), [2] * (n - 1) + [1]
    else:
        stem, strides = dict(_TORCHVISION_STEM), [1] + [2] * (n - 1)
    if keras:
        stem["pool_pad_value"] = "zero"  # keras.applications' ZeroPadding2D before MaxPooling2D
    stem.update(widths=list(f.stem_widths), kernel_size=f.stem_kernel, norm=f.stem_norm)
    first = f.stages[0][0]
    width_per_group = 64
    if f.block == "bottleneck":
        width_per_group = _width_per_group(first)
        for b in (s[0] for s in f.stages[1:]):
            if (b.groups, _width_per_group(b)) != (first.groups, width_per_group):
                raise SpecError(f"{b.name}.conv2.weight implies groups={b.groups}, width_per_group="
                                f"{_width_per_group(b)} but layer1.0.conv2.weight groups={first.groups}, "
                                f"width_per_group={width_per_group}: one network has one setting")
    return {
        "stages": [{"depth": len(s), "width": s[0].out_channels // (4 if f.block == "bottleneck" else 1), "stride": st}
                   for s, st in zip(f.stages, strides, strict=True)],
        "block": f.block,
        "preactivation": f.preactivation,
        "bottleneck_stride": "1x1" if keras_v1 and f.block == "bottleneck" else "3x3",
        "stride_position": "last" if f.preactivation and not cifar else "first",
        "stem": stem,
        "groups": first.groups,
        "width_per_group": width_per_group,
        "padding": "symmetric",
        "batchnorm": dict(_KERAS_BN if keras else _TORCH_BN),
        "zero_init_last_bn": timm and not f.preactivation,
        "in_channels": f.in_channels,
        "num_classes": f.num_classes,
        "head_activation": "none",
    }


def _width_per_group(b: _Block) -> int:
    return width_per_group_of(b.mid_channels, b.out_channels // 4, b.groups, f"{b.name}.conv1.weight")


def _every_conv_biased(f: _Facts) -> bool:
    convs = len(f.stem_widths) + sum((3 if f.block == "bottleneck" else 2) + (b.shortcut is not None)
                                     for s in f.stages for b in s)
    return len(f.biased_convs) == convs


def _apply_hints(data: dict[str, Any], hints: dict[str, Any]) -> None:
    known = set(ResNetSpec.__dataclass_fields__)
    unknown = sorted(set(hints) - known)
    if unknown:
        raise SpecError(f"unknown hint(s) {unknown}: hints are ResNetSpec fields {sorted(known)}")
    for key, value in hints.items():
        if key in ("stem", "batchnorm"):
            data[key] = {**data[key], **_plain(value, key)}
        elif key == "stages":
            if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != len(data["stages"]):
                raise SpecError(f"hint stages must list one entry per stage: the weights have {len(data['stages'])} "
                                f"(layer1 ... layer{len(data['stages'])})")
            merged = [{**inferred, **_plain(v, f"stages[{i}]")}
                      for i, (inferred, v) in enumerate(zip(data["stages"], value))]
            for i, (old, new) in enumerate(zip(data["stages"], merged), start=1):
                for field in ("depth", "width"):
                    if new[field] != old[field]:
                        raise SpecError(f"hint stages[{i - 1}].{field}={new[field]} contradicts the weights: "
                                        f"layer{i} has {field} {old[field]}")
            data["stages"] = merged
        else:
            data[key] = value


def _plain(value: Any, where: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    try:
        plain = asdict(value)
    except TypeError:
        raise SpecError(f"hint {where} must be a dict of its fields or its spec object, "
                        f"got {type(value).__name__}") from None
    return {k: list(v) if isinstance(v, tuple) else v for k, v in plain.items()}


# -- shortcut and conv bias ---------------------------------------------------------


def _infer_shortcut(f: _Facts, data: dict[str, Any]) -> str:
    """The shortcut type, given the stage strides in force (hinted or conventional)."""
    blocks = [b for s in f.stages for b in s]
    strided: set[str] = set()
    for i, (stage, st) in enumerate(zip(f.stages, data["stages"]), start=1):
        j = 0 if data["stride_position"] == "first" else len(stage) - 1
        if st["stride"] != 1:
            strided.add(f"layer{i}.{j}")
    widen = {b.name for b in blocks if b.in_channels != b.out_channels}
    reshape = widen | strided
    proj = {b.name for b in blocks if b.shortcut == "projection"}
    avg = {b.name for b in blocks if b.shortcut == "avg"}
    assumed = (f"under the stage strides {[s['stride'] for s in data['stages']]} in each stage's "
               f"{data['stride_position']} block (pass the real ones as hints, e.g. stages=[{{'stride': 1}}, ...])")
    if avg:
        if proj:
            raise SpecError(f"{min(proj)}.downsample.0.weight is a projection shortcut but "
                            f"{min(avg)}.downsample.1.weight timm's avg-pool shortcut: one network uses one kind")
        if avg != reshape:
            return _shortcut_mismatch(avg, reshape, "downsample.1", assumed)
        return "D"
    if not proj:
        return "A" if reshape else "B"
    if len(proj) == len(blocks):
        return "C"
    if proj == reshape:
        return "B"
    if proj == widen:
        return "B-subsample"
    return _shortcut_mismatch(proj, reshape, "downsample.0", assumed)


def _shortcut_mismatch(have: set[str], need: set[str], where: str, assumed: str) -> str:
    """Raise the error for projections that fit no shortcut type."""
    lacking, extra = sorted(need - have), sorted(have - need)
    if lacking:
        raise SpecError(f"{lacking[0]} changes shape {assumed} but has no {lacking[0]}.{where}.weight, while "
                        f"{min(have)} has one: no shortcut type projects only some reshaping blocks")
    raise SpecError(f"{extra[0]}.{where}.weight projects the shortcut of a block that keeps its shape {assumed}, "
                    "while other such blocks have none: only shortcut C projects in blocks that keep their shape, "
                    "and then in every block")


def _infer_conv_bias(f: _Facts, data: dict[str, Any]) -> str:
    candidates = ("none", "unnormalized", "all")
    layouts = {}
    for choice in candidates:
        plan = make_plan(ResNetSpec.from_dict({**data, "conv_bias": choice}))
        layouts[choice] = {op.name for op in plan.ops() if isinstance(op, Conv) and op.bias}
    convs = layouts["all"]
    biased = f.biased_convs & convs  # a bias on a conv the network lacks: _check_fits names it
    for choice in candidates:
        if layouts[choice] == biased:
            return choice
    with_bias, without = sorted(biased), sorted(convs - biased)
    raise SpecError(f"{with_bias[0]}.bias is present but {without[0]}.bias is not: conv biases must be on no conv, "
                    "every conv, or exactly the convs not followed by BatchNorm (conv_bias none/all/unnormalized)")


# -- the proof ---------------------------------------------------------------------


def _check_fits(spec: ResNetSpec, shapes: dict[str, Shape], hints: dict[str, Any]) -> None:
    expected = canonical_shapes(spec)
    layers = {name.rsplit(".", 1)[0] for name in expected}
    problems = []
    for name, shape in shapes.items():
        if name not in expected:
            layer = name.rsplit(".", 1)[0]
            why = "that layer has no such tensor here" if layer in layers else "no layer of this ResNet has that name"
            problems.append(f"unexpected tensor {name} ({why})")
        elif shape != expected[name]:
            problems.append(f"{name} has shape {shape}, the network needs {expected[name]}")
    problems += [f"{name} {expected[name]} is missing" for name in expected if name not in shapes]
    if problems:
        given = f" with hints {hints}" if hints else ""
        more = f"; ... ({len(problems) - 5} more)" if len(problems) > 5 else ""
        raise SpecError(f"the weights do not fit the inferred spec{given}: " + "; ".join(problems[:5]) + more)

