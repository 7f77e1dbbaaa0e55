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
from shared_specs.spec import AttentionSpec, ResNetSpec, differences

Shape = tuple[int, ...]

_BLOCK_KEY = re.compile(r"layer(\d+)\.(\d+)\.")
_STAGE_KEY = re.compile(r"layer(\d+)\.")
_TOP_LEVEL = re.compile(r"conv1|bn1|maxpool|layer\d+|post_bn|fc")

# The conventions for what weights cannot show (see infer_spec's docstring).
_TORCHVISION_STEM = {"stride": 2, "padding": None, "pool": "max", "pool_size": 3, "pool_stride": 2,
                     "pool_padding": None, "pool_pad_value": "-inf"}
_CIFAR_STEM = {**_TORCHVISION_STEM, "stride": 1, "pool": "none"}
_TORCH_BN = {"epsilon": 1e-5, "running_stats_decay": 0.9, "running_var": "unbiased"}
_KERAS_BN = {"epsilon": 1.001e-5, "running_stats_decay": 0.99, "running_var": "biased"}
_TIMM_GROUPS = 32  # timm's GroupNorm, GroupNormAct and EvoNorm2dS0 default
# squeeze-excitation (rd_ratio, rd_divisor) tried in order: timm's default, ResNet-RS's, then others
_SE_SETTINGS = ((1 / 16, 8), (1 / 4, 8), (1 / 8, 8), (1 / 16, 1), (1 / 4, 1), (1 / 8, 1))
_BIT_STD_CONV_EPSILON = 1e-8  # timm's _create_resnetv2_bit: StdConv2d(eps=1e-8)


@dataclass(frozen=True)
class _Block:
    """What one residual block's weights show."""

    name: str
    kind: str  # "basic" or "bottleneck"
    in_channels: int
    widths: tuple[int, ...]  # output widths of conv1, conv2 (, conv3)
    groups: int
    shortcut: str | None  # None, "projection" (downsample.0) or "avg" (timm's downsample.1)
    shortcut_kernel: int  # kernel size of the projection (SENet-154's strided ones: 3)
    se_reduced: int | None  # squeeze-excitation's reduced width (se.fc1), if any
    eca_kernel: int | None  # efficient channel attention's kernel size (se.conv), if any

    @property
    def out_channels(self) -> int:
        return self.widths[-1]


@dataclass(frozen=True)
class _Facts:
    """Everything the weights determine."""

    stem_widths: tuple[int, ...]
    stem_kernel: int
    stem_norm: bool
    stem_pool_conv: bool  # ResNet-RS: a strided conv at maxpool.0 in the max-pool's place
    in_channels: int
    preactivation: bool
    norm: str  # running statistics: batchnorm; `v`: evonorm_s0; `tau`: frn; else groupnorm
    stages: tuple[tuple[_Block, ...], ...]
    num_classes: int | None
    biased_convs: frozenset[str]
    head: dict[str, Any]  # HeadSpec fields of a fine-tuned classifier (fc.0, fc.3, ...); {} for torchvision's fc


def infer_spec(weights: Mapping[str, Any], **hints: Any) -> ResNetSpec:
    """The ResNetSpec whose canonical tensors are exactly `weights` (name -> array with .shape).

    Read from the weights (a hint may restate these, never contradict them):
    block type per stage (`conv3` present: bottleneck; the first stage's is the spec's
    `block`), per-stage depth and width, groups, width_per_group and reduce_first (from
    the convs' grouped shapes), or, where no such formula gives every block's widths
    (timm's *_pruned models), each block's widths (`block_widths`); the stem (`conv1`
    single conv and its kernel size, or timm's deep stem `conv1.0`/`conv1.3`/`conv1.6`
    widths; `bn1` present: stem norm; `maxpool.0` a conv: ResNet-RS's conv stem pool),
    in_channels, preactivation (`post_bn` present), shortcut (no `downsample` tensors
    where a block reshapes: A; `downsample.0` where the shape changes: B; in every block:
    C; where only the channels change while strided blocks keep an identity:
    B-subsample; timm's avg-pool shortcut with its conv at `downsample.1`: D) and its
    kernel (SENet-154's 3x3), the norm kind (running statistics: BatchNorm; `v`:
    EvoNorm-S0; `tau`: FRN; weight and bias alone: GroupNorm), attention (`se.fc1`:
    squeeze-excitation, its (reduction, divisor) the first of timm's (1/16, 8),
    ResNet-RS's (1/4, 8), then (1/8, 8), (1/16, 1), (1/4, 1), (1/8, 1) that gives every
    block's reduced width; `se.conv`: ECA), conv_bias (which convs carry `.bias`),
    num_classes (`fc.weight`, or the last Linear of a fine-tuned nn.Sequential `fc.0`,
    `fc.3`, ...; None without `fc`) and that head's Linear and BatchNorm1d entries, and
    catavgmax pooling where the first Linear takes twice the channels. Where two values
    give the same network the first-listed wins: C over B when every block projects, "none" over "unnormalized"
    when every conv is followed by BatchNorm.

    Not in the weights, so taken from conventions, each overridable by a hint. For each
    group of fields the first row that matches applies:

    =========================================  ============================================
    weights show                               convention (whose)
    =========================================  ============================================
    *stem stride and pool, stage strides*
    a single 3x3 stem conv and 3 stages        stem stride 1, no max-pool; strides 1, 2, 2
                                               (He et al. 2015's CIFAR nets)
    post_bn and conv biases (pre-activation)   stem stride 2, max-pool 3/2/1; strides 2,
                                               ..., 2, 1 in each stage's LAST block
                                               (keras.applications ResNetV2)
    anything else (7x7, deep stem, post_bn     stem stride 2, pad k // 2, max-pool 3/2/1;
    without conv biases, ...)                  strides 1, 2, 2, ... in each stage's first
                                               block (torchvision; timm's ResNet and
                                               ResNetV2 alike)
    *numerics, outside the CIFAR row*
    post_bn and conv biases                    BN epsilon 1.001e-5, decay 0.99, biased
                                               running variance; max-pool pads zeros
                                               (keras.applications ResNetV2)
    a bias on every conv, post-activation      the same, and the bottleneck stride on the
                                               first 1x1 (keras.applications ResNet: the
                                               one published biased v1 layout)
    post_bn, no conv bias, GroupNorm and a     weight-standardised convs (epsilon 1e-8),
    single stem conv                           max-pool pads zeros (timm's BiT ResNetV2)
    a stage's first block projects a shortcut  always_project; biased running variance,
    that keeps its shape                       max-pool pads zeros, no zero-init
                                               (keras-hub's PaddleClas vd)
    anything else                              BN epsilon 1e-5, decay 0.9, unbiased
                                               running variance; max-pool pads
                                               -inf; stride on the 3x3 (torchvision v1.5)
    *norms other than BatchNorm*               GroupNorm and EvoNorm-S0 in 32 groups,
                                               epsilon 1e-5 (timm's defaults); a
                                               BatchNorm state_dict without its running
                                               statistics reads as GroupNorm
    *pruned block widths*                      stage widths 64, 128, 256, ... (timm's
                                               nominal channels, which size ECA's kernel)
    *anti-aliasing*                            none (BlurPool and timm's 2x2 avg-pool hold
                                               no tensors: hint anti_alias="blur"/"avg")
    *initialisation*
    post-activation with a deep stem, the      zero_init_last_bn=True (timm's ResNet
    avg-pool shortcut, attention, a conv stem  default; timm's ResNetV2: False)
    pool, a norm other than BatchNorm,
    reduce_first, a 3x3 shortcut, mixed
    block types or pruned widths
    *classifier*                               global average pooling (max and avgmax hold
                                               no tensors); in a fine-tuned fc.N, entries
                                               without tensors are a Dropout(0.5) before
                                               the first layer, and after a Linear or
                                               BatchNorm1d a ReLU (one entry) or ReLU,
                                               Dropout(0.5) (two); no dropout outside it
    *always*                                   padding "symmetric", head_activation "none"
    =========================================  ============================================

    The shortcut type is read under the stage strides in force, so a network strided
    elsewhere needs its strides as a hint. Hints are ResNetSpec fields; `stem`,
    `batchnorm`, `norm` and `attention` may be partial dicts, `stages` a list of partial
    dicts (e.g. `stages=[{"stride": 1}, {"stride": 2}, ...]`; a pruned stage's width may
    be hinted too). `name` defaults to the registered preset equal to the result, else
    "resnet".

    Anything that is not such a ResNet raises SpecError naming the tensor and why.

    >>> spec = infer_spec({k: v.numpy() for k, v in torchvision_model.state_dict().items()})
    """
    shapes = _shapes(weights)
    facts = _read_facts(shapes, head_hinted="layers" in _plain(hints.get("head", {}), "head"))
    data = _conventions(facts)
    _apply_hints(data, hints)
    if data["norm"].get("kind") in ("groupnorm", "evonorm_s0") and "norm" not in hints:
        _check_groups(shapes, data["norm"].get("groups", _TIMM_GROUPS))
    if "shortcut" not in hints:
        data["shortcut"] = _infer_shortcut(facts, data)
        if any(stage.get("always_project") for stage in data["stages"]):
            _keras_hub_vd_conventions(data, hints)
    if "conv_bias" not in hints:
        data["conv_bias"] = _infer_conv_bias(facts, data)
    spec = ResNetSpec.from_dict(data)
    _check_fits(spec, shapes, hints)
    if "name" not in hints:
        spec = spec.replace(name=find_preset(spec) or "resnet")
    return spec


# Fields infer_spec takes from conventions, not from the weights (its table).
_ASSUMED = re.compile(r"stem\.(stride|padding|pool\w*)|stages\[\d+\]\.stride|bottleneck_stride|stride_position|padding"
                      r"|batchnorm\.\w+|norm\.(groups|epsilon)|std_conv_epsilon|anti_alias|zero_init_last_bn"
                      r"|head_activation|head\.dropout|head\.layers\[\d+\]\.rate|name")


# Fields always listed; the others only where they differ from a plain ResNetSpec's.
_CORE = re.compile(r"block|preactivation|stages\[\d+\]\.(depth|width|stride)|stem\.\w+|in_channels|num_classes"
                   r"|shortcut|conv_bias|batchnorm\.\w+|padding|bottleneck_stride|stride_position|head\.pool"
                   r"|head_activation|groups|width_per_group")


def inference_sources(spec: ResNetSpec, hints: Mapping[str, Any] | None = None) -> tuple[list[str], list[str]]:
    """A spec from `infer_spec` as `field=value` items: (read from the weights, assumed from
    conventions); fields given as `hints` are in neither. Per-stage fields are gathered
    (`stages[].stride=[1, 2, 2, 2]`), for people reading what a bare checkpoint turned into."""
    read: dict[str, list[Any]] = {}
    assumed: dict[str, list[Any]] = {}
    given = set(hints or ())
    plain = {d.path: d.mine for d in differences(ResNetSpec(stages=spec.stages).to_dict(), {})}
    for d in differences(spec.to_dict(), {}):  # every field's dotted path with its value, None left out
        layer = re.fullmatch(r"head\.layers\[(\d+)\]\.bias", d.path)
        if d.path.split(".")[0].split("[")[0] in given or d.path == "name" or (
                layer and spec.head.layers[int(layer[1])].kind != "linear") or (
                not _CORE.fullmatch(d.path) and plain.get(d.path) == d.mine):
            continue  # given, meaningless here, or a rarely used field at its default
        kind_free = re.fullmatch(r"head\.layers\[\d+\]\.kind", d.path) and d.mine in ("relu", "dropout")
        if d.path == "head.pool":
            guess = d.mine != "catavgmax"  # the one pooling the weights show: twice the channels
        else:
            guess = bool(_ASSUMED.fullmatch(d.path) or kind_free)
        key = re.sub(r"^stages\[\d+\]", "stages[]", d.path)
        (assumed if guess else read).setdefault(key, []).append(d.mine)
    return [_item(k, v) for k, v in read.items()], [_item(k, v) for k, v in assumed.items()]


def _item(path: str, values: list[Any]) -> str:
    return f"{path}={values if path.startswith('stages[]') else values[0]!r}"


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


def _read_facts(shapes: dict[str, Shape], head_hinted: bool = False) -> _Facts:
    stem_widths, stem_kernel, in_channels = _read_stem(shapes)
    stages = _stage_indices(shapes)
    preactivation = "post_bn.weight" in shapes
    channels = stem_widths[-1]
    read: list[tuple[_Block, ...]] = []
    for i, depth in enumerate(stages, start=1):
        kind = "bottleneck" if f"layer{i}.0.conv3.weight" in shapes else "basic"  # each stage its own (test_resnet)
        blocks = []
        for j in range(depth):
            b = _read_block(shapes, f"layer{i}.{j}", kind)
            if b.in_channels != channels:
                before = f"layer{i}.{j - 1}" if j else (f"layer{i - 1}.{stages[i - 2] - 1}" if i > 1 else "the stem")
                raise SpecError(f"{b.name}.conv1.weight takes {b.in_channels} input channels but {before} "
                                f"outputs {channels}: consecutive layers do not connect")
            channels = b.out_channels
            blocks.append(b)
        read.append(tuple(blocks))
    num_classes, head = _read_head(shapes, channels, head_hinted)
    biased = frozenset(n[: -len(".bias")] for n in shapes if n.endswith(".bias") and ".se." not in n
                       and len(shapes.get(n[: -len("bias")] + "weight", ())) == 4)  # SE's 1x1 convs always have one
    return _Facts(stem_widths, stem_kernel, "bn1.weight" in shapes, "maxpool.0.weight" in shapes, in_channels,
                  preactivation, _read_norm(shapes), tuple(read), num_classes, biased, head)


def _read_head(shapes: dict[str, Shape], channels: int, hinted: bool) -> tuple[int | None, dict[str, Any]]:
    """num_classes and HeadSpec fields: torchvision's one Linear `fc`, or a fine-tuned
    nn.Sequential whose Linear and BatchNorm1d entries hold tensors (`fc.0`, `fc.3`, ...).
    Its entries without tensors are ReLU or Dropout by convention (see infer_spec), unless
    the layers are `hinted`."""
    indices = sorted({int(m[1]) for name in shapes if (m := re.match(r"fc\.(\d+)\.", name))})
    if "fc.weight" in shapes and indices:
        raise SpecError(f"fc.weight (one Linear) and fc.{indices[0]}.* (an nn.Sequential) cannot both be the "
                        "classifier")
    if "fc.weight" in shapes:
        entries: list[tuple[str, dict[str, Any], Shape]] = [("fc", {}, shapes["fc.weight"])]
    elif indices:
        entries, gap = [], []
        for i in range(indices[-1] + 1):
            w = shapes.get(f"fc.{i}.weight")
            if w is None:
                gap.append(i)
                continue
            free = [{"kind": "relu"}] * len(gap) if hinted else _parameter_free(gap, bool(entries))
            entries += [(f"fc.{j}", layer, ()) for j, layer in zip(gap, free)]
            gap = []
            if len(w) == 2:
                entries.append((f"fc.{i}", {"kind": "linear", "features": w[0], "bias": f"fc.{i}.bias" in shapes}, w))
            elif len(w) == 1 and f"fc.{i}.running_mean" in shapes:
                entries.append((f"fc.{i}", {"kind": "batchnorm"}, w))
            else:
                raise SpecError(f"fc.{i}.weight has shape {w}: a classifier's nn.Sequential holds Linear (out, in) "
                                "and BatchNorm1d layers")
    else:
        return None, {}
    final_name, final, shape = entries[-1]
    if final_name != "fc" and (final.get("kind") != "linear" or not final["bias"]):
        raise SpecError(f"{final_name} is the last entry of the classifier's nn.Sequential; it must be the final "
                        "Linear, with a bias")
    first_name, _, first = next((e for e in entries if len(e[2]) == 2), entries[-1])
    pools = {channels: "avg", 2 * channels: "catavgmax"}  # timm's catavgmax concatenates avg and max
    if len(first) != 2 or first[1] not in pools:
        raise SpecError(f"{first_name}.weight has shape {first}: a classifier over the last stage's {channels} "
                        f"channels takes {channels} features ({2 * channels} after timm's catavgmax pooling)")
    head: dict[str, Any] = {"pool": pools[first[1]]}
    if final_name != "fc":
        head.update(sequential=True, layers=[layer for _, layer, _ in entries[:-1]])
    return shape[0], head


def _parameter_free(gap: list[int], after_layer: bool) -> list[dict[str, Any]]:
    """What the tensor-less entries `gap` of a classifier nn.Sequential are, by convention:
    before its first layer a Dropout; after a Linear or BatchNorm1d a ReLU, or ReLU and
    Dropout (the fine-tuning recipe Linear, ReLU, Dropout, Linear)."""
    if not gap:
        return []
    known = {(False, 1): [{"kind": "dropout", "rate": 0.5}],
             (True, 1): [{"kind": "relu"}], (True, 2): [{"kind": "relu"}, {"kind": "dropout", "rate": 0.5}]}
    layers = known.get((after_layer, len(gap)))
    if layers is None:
        raise SpecError(f"fc.{gap[0]} ... fc.{gap[-1]} hold no tensors and no convention says which "
                        "parameter-free layers they are: pass them as a hint, e.g. head={'layers': [...]}")
    return layers


def _read_norm(shapes: dict[str, Shape]) -> str:
    """The norm kind, by the tensors only it has: BatchNorm's running statistics, EvoNorm-S0's
    `v`, FRN's `tau`; a norm with only weight and bias is GroupNorm."""
    suffixes = {name.rsplit(".", 1)[-1] for name, shape in shapes.items() if len(shape) == 1}
    for suffix, kind in (("running_mean", "batchnorm"), ("v", "evonorm_s0"), ("tau", "frn")):
        if suffix in suffixes:
            return kind
    return "groupnorm"


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


def _read_block(shapes: dict[str, Shape], n: str, kind: str) -> _Block:
    bottleneck = kind == "bottleneck"
    stage = n.rsplit(".", 1)[0]
    c1 = _conv(shapes, f"{n}.conv1", f"every residual block has a conv1 ({kind} blocks, from {stage}.0)")
    c2 = _conv(shapes, f"{n}.conv2", f"every residual block has a conv2 ({kind} blocks, from {stage}.0)")
    has_conv3 = f"{n}.conv3.weight" in shapes
    if has_conv3 != bottleneck:
        raise SpecError(f"{n}.conv3.weight is {'present' if has_conv3 else 'missing'} but {stage}.0 is a {kind} "
                        "block: one stage has one block type")
    if bottleneck:
        c3 = _conv(shapes, f"{n}.conv3", "")
        expected = ((1, f"{n}.conv1", c1), (3, f"{n}.conv2", c2), (1, f"{n}.conv3", c3))
        first, mid = c1[0], c2[0]
        if c2[1] == 0 or first % c2[1] or mid % (first // c2[1]):
            raise SpecError(f"{n}.conv2.weight has shape {c2}: the 3x3 conv of a bottleneck maps the {first} channels "
                            "of conv1 to its output, in groups that divide both")
        if c3[1] != mid:
            raise SpecError(f"{n}.conv3.weight takes {c3[1]} input channels but {n}.conv2 outputs {mid}")
        groups, widths = first // c2[1], (first, mid, c3[0])
    else:
        expected = ((3, f"{n}.conv1", c1), (3, f"{n}.conv2", c2))
        if c2[1] != c1[0]:
            raise SpecError(f"{n}.conv2.weight takes {c2[1]} input channels but {n}.conv1 outputs {c1[0]}")
        groups, widths = 1, (c1[0], c2[0])
    for k, name, shape in expected:
        if shape[2] != k:
            conv = name.rsplit(".", 1)[1]
            raise SpecError(f"{name}.weight is {shape[2]}x{shape[2]}; a {kind} block's {conv} is {k}x{k}")
    d0, d1 = shapes.get(f"{n}.downsample.0.weight"), shapes.get(f"{n}.downsample.1.weight")
    kernel = 1
    if d0 is not None:
        shortcut: str | None = "projection"
        kernel = _conv(shapes, f"{n}.downsample.0", "")[2]
    elif d1 is not None and len(d1) == 4:
        shortcut = "avg"  # timm's avg_down: downsample.0 is the (parameter-free) pool
    else:
        shortcut = None
    fc1, eca = shapes.get(f"{n}.se.fc1.weight"), shapes.get(f"{n}.se.conv.weight")
    se_reduced = fc1[0] if fc1 is not None and len(fc1) == 4 else None
    eca_kernel = eca[-1] if eca is not None and len(eca) == 3 else None
    return _Block(n, kind, c1[1], widths, groups, shortcut, kernel, se_reduced, eca_kernel)


# -- conventions and hints ------------------------------------------------------


def _conventions(f: _Facts) -> dict[str, Any]:
    """A plain spec dict: the facts, plus the documented conventions for the rest."""
    n = len(f.stages)
    blocks = [b for s in f.stages for b in s]
    cifar = len(f.stem_widths) == 1 and f.stem_kernel == 3 and n == 3
    keras_v1 = not cifar and not f.preactivation and _every_conv_biased(f)
    timm_v2 = f.preactivation and not cifar and not f.biased_convs  # keras.applications' V2 has conv biases
    keras = keras_v1 or (f.preactivation and not cifar and not timm_v2)
    bit = timm_v2 and f.norm == "groupnorm" and len(f.stem_widths) == 1
    groups, width_per_group, reduce_first, stages = _layout(f)
    projections = [b.shortcut_kernel for b in blocks if b.shortcut == "projection"]
    timm = not f.preactivation and (
        len(f.stem_widths) > 1 or f.stem_pool_conv or any(b.shortcut == "avg" for b in blocks)
        or f.norm != "batchnorm" or reduce_first > 1 or max(projections, default=1) > 1
        or any("block_widths" in st or "block" in st for st in stages)
        or any(b.se_reduced or b.eca_kernel for b in blocks))
    if cifar:
        stem, strides = dict(_CIFAR_STEM), [1] + [2] * (n - 1)
    elif f.preactivation and not timm_v2:  # keras.applications ResNetV2: stack2(stride1=2) ..., the last stride1=1
        stem, strides = dict(_TORCHVISION_STEM), [2] * (n - 1) + [1]
    else:
        stem, strides = dict(_TORCHVISION_STEM), [1] + [2] * (n - 1)
    if keras or bit:  # keras.applications' ZeroPadding2D before MaxPooling2D; BiT's ConstantPad2d(1, 0)
        stem["pool_pad_value"] = "zero"
    if f.stem_pool_conv:
        stem["pool"] = "conv"
    stem.update(widths=list(f.stem_widths), kernel_size=f.stem_kernel, norm=f.stem_norm)
    for stage, stride in zip(stages, strides, strict=True):
        stage["stride"] = stride
    norm: dict[str, Any] = {"kind": f.norm}
    if f.norm in ("groupnorm", "evonorm_s0"):
        norm["groups"] = _TIMM_GROUPS
    return {
        "stages": stages,
        "block": f.stages[0][0].kind,
        "preactivation": f.preactivation,
        "bottleneck_stride": "1x1" if keras_v1 and f.stages[0][0].kind == "bottleneck" else "3x3",
        "stride_position": "last" if f.preactivation and not cifar and not timm_v2 else "first",
        "stem": stem,
        "groups": groups,
        "width_per_group": width_per_group,
        "reduce_first": reduce_first,
        "shortcut_kernel_size": max(projections, default=1),
        "attention": _attention(blocks),
        "padding": "symmetric",
        "batchnorm": dict(_KERAS_BN if keras else _TORCH_BN),
        "norm": norm,
        "std_conv_epsilon": _BIT_STD_CONV_EPSILON if bit else None,
        "zero_init_last_bn": timm,
        "in_channels": f.in_channels,
        "num_classes": f.num_classes,
        "head_activation": "none",
        "head": f.head,
    }


def _layout(f: _Facts) -> tuple[int, int, int, list[dict[str, Any]]]:
    """(groups, width_per_group, reduce_first, stages): the block widths as the spec's formula,
    read off layer1.0 and holding for every block, or else each block's widths outright (a
    pruned network) under the nominal stage widths 64, 128, 256, ... (timm's channels)."""
    first = f.stages[0][0]
    for b in (b for s in f.stages for b in s):
        if b.groups != first.groups:
            raise SpecError(f"{b.name}.conv2.weight implies groups={b.groups} but layer1.0.conv2.weight groups="
                            f"{first.groups}: one network has one setting")
    groups = first.groups
    setting = _setting(first)
    stages: list[dict[str, Any]] = []
    for s in f.stages:
        width = s[0].out_channels // (4 if s[0].kind == "bottleneck" else 1)
        stage: dict[str, Any] = {"depth": len(s), "width": width}
        if s[0].kind != first.kind:
            stage["block"] = s[0].kind
        stages.append(stage)
    if setting is not None and all(b.widths == _formula(b.kind, st["width"], groups, *setting)
                                   for s, st in zip(f.stages, stages) for b in s):
        return groups, setting[0], setting[1], stages
    for i, (s, stage) in enumerate(zip(f.stages, stages)):  # no formula fits: each block's widths outright
        stage.update(width=64 * 2**i, block_widths=[list(b.widths) for b in s])
    return groups, 64, 1, stages


def _setting(b: _Block) -> tuple[int, int] | None:
    """(width_per_group, reduce_first) that give block `b` its widths, if any do."""
    if b.kind == "basic":
        first, width = b.widths
        return (64, width // first) if width % first == 0 else None
    first, mid, out = b.widths
    if out % 4 or mid % first or (mid * 64) % (out // 4 * b.groups):
        return None
    return mid * 64 // (out // 4 * b.groups), mid // first


def _formula(kind: str, width: int, groups: int, width_per_group: int, reduce_first: int) -> tuple[int, ...]:
    """A block's conv widths under the spec's formula (its plan's, restated: basic (w / r, w),
    bottleneck (mid / r, mid, 4w) with mid = w * width_per_group / 64 * groups)."""
    if kind == "basic":
        return (width // reduce_first, width)
    mid = width * width_per_group // 64 * groups
    return (mid // reduce_first, mid, 4 * width)


def _attention(blocks: list[_Block]) -> dict[str, Any] | None:
    """Squeeze-excitation (se.fc1) or ECA (se.conv) in every block, or none. SE's reduced width
    is make_divisible(C * ratio, divisor): the first of _SE_SETTINGS reproducing every block's wins."""
    se = [b for b in blocks if b.se_reduced is not None]
    eca = [b for b in blocks if b.eca_kernel is not None]
    if not se and not eca:
        return None
    if se and eca:
        raise SpecError(f"{se[0].name}.se.fc1.weight is squeeze-excitation but {eca[0].name}.se.conv.weight ECA: "
                        "one network has one attention kind")
    have = se or eca
    if len(have) != len(blocks):
        lacking = next(b for b in blocks if b not in have)
        raise SpecError(f"{have[0].name}.se holds attention but {lacking.name}.se does not: attention is in every "
                        "block or in none")
    if eca:
        return {"kind": "eca"}  # its kernel sizes follow from the widths; _check_fits proves them
    for reduction, divisor in _SE_SETTINGS:
        if all(AttentionSpec("se", reduction, divisor).se_width(b.out_channels) == b.se_reduced for b in se):
            return {"kind": "se", "reduction": reduction, "divisor": divisor}
    b = se[0]
    raise SpecError(f"{b.name}.se.fc1.weight reduces {b.out_channels} channels to {b.se_reduced}, which no "
                    "(reduction, divisor) among timm's (1/16, 8), ResNet-RS's (1/4, 8) and (1/8, 8), (1/16, 1), "
                    "(1/4, 1), (1/8, 1) gives in every block: pass attention={'kind': 'se', 'reduction': ..., "
                    "'divisor': ...}")


def _every_conv_biased(f: _Facts) -> bool:
    convs = len(f.stem_widths) + f.stem_pool_conv + sum(
        len(b.widths) + (b.shortcut is not None) for s in f.stages for b in s)
    return len(f.biased_convs) == convs


def _apply_hints(data: dict[str, Any], hints: dict[str, Any]) -> None:
    known = set(ResNetSpec.__dataclass_fields__)
    unknown = sorted(set(hints) - known)
    if unknown:
        raise SpecError(f"unknown hint(s) {unknown}: hints are ResNetSpec fields {sorted(known)}")
    for key, value in hints.items():
        if key in ("stem", "batchnorm", "norm", "head") or (key == "attention" and value is not None and data[key]):
            data[key] = {**data[key], **_plain(value, key)}
        elif key == "stages":
            if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != len(data["stages"]):
                raise SpecError(f"hint stages must list one entry per stage: the weights have {len(data['stages'])} "
                                f"(layer1 ... layer{len(data['stages'])})")
            merged = [{**inferred, **_plain(v, f"stages[{i}]")}
                      for i, (inferred, v) in enumerate(zip(data["stages"], value))]
            for i, (old, new) in enumerate(zip(data["stages"], merged), start=1):
                for field in ("depth", "width") if "block_widths" not in old else ("depth",):  # pruned: nominal
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


def _check_groups(shapes: dict[str, Shape], groups: int) -> None:
    """GroupNorm's (EvoNorm's) groups are not in the weights; the convention must at least divide every norm."""
    for name, shape in shapes.items():
        if name.endswith(".weight") and len(shape) == 1 and shape[0] % groups:
            raise SpecError(f"{name} normalises {shape[0]} channels, which the {groups} groups of timm's default do "
                            "not divide; the weights do not show the groups: pass norm={'groups': ...}")


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
            return _with_first_block_projections(data, avg, reshape, "D") or \
                _shortcut_mismatch(avg, reshape, "downsample.1", assumed)
        return "D"
    if not proj:
        return "A" if reshape else "B"
    if len(proj) == len(blocks):
        return "C"
    if proj == reshape:
        return "B"
    if proj == widen:
        return "B-subsample"
    return _with_first_block_projections(data, proj, reshape, "B") or \
        _shortcut_mismatch(proj, reshape, "downsample.0", assumed)


def _keras_hub_vd_conventions(data: dict[str, Any], hints: dict[str, Any]) -> None:
    """keras-hub's vd (the one published layout whose first blocks always project) builds
    Keras BatchNormalization (biased running variance) and pads its max-pool with zeros."""
    if "batchnorm" not in hints:
        data["batchnorm"]["running_var"] = "biased"
    if "pool_pad_value" not in _plain(hints.get("stem", {}), "stem"):
        data["stem"]["pool_pad_value"] = "zero"
    if "zero_init_last_bn" not in hints:
        data["zero_init_last_bn"] = False


def _with_first_block_projections(data: dict[str, Any], have: set[str], need: set[str], kind: str) -> str | None:
    """`kind` if the only projections beyond the reshaping blocks are stages' first blocks:
    those stages get `always_project` (PaddleClas/keras-hub vd); else None."""
    extra = have - need
    if need - have or not all(name.endswith(".0") for name in extra):
        return None
    for name in extra:
        data["stages"][int(name[len("layer"):].split(".")[0]) - 1]["always_project"] = True
    return kind


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

