"""timm's ResNets (timm.models.resnet.ResNet and timm.models.resnetv2.ResNetV2) to and from
(spec, canonical weights).

Reading a model: what its modules say that weights cannot (strides, pools and their padding,
anti-aliasing, norm epsilons and groups, weight standardisation) is read off the modules and
given to `shared_specs.infer_spec` as hints; the weights say the rest (widths, blocks, SE or
ECA, norm kinds). Then every module is checked against the resulting spec's layer plan, so
whatever the spec has no counterpart for (dilation, stochastic depth, dropout, other
activations, ...) is refused naming the module. timm's ResNet uses torchvision's names;
ResNetV2's are renamed through one table, `shared_specs.timm_names`.

Building a model: the spec is translated into timm's constructor arguments, the model is
built on the meta device and read back; where the read-back spec is another network, the
spec is refused naming each field that differs (`shortcut='C' (timm: 'B')`). So whatever
`to_timm` builds is, by construction, the spec's network.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from resnet_torch.ecosystem import (
    Weights,
    _build_loaded,
    _check_kinds,
    _differences,
    _int_padding,
    _no_hints,
    _numpy_state,
    _same_network,
    _square,
    _verify_modules,
)
from resnet_torch.layers import classifier
from resnet_torch.reading import from_module, read_graph
from shared_specs import ResNetSpec, SpecError, canonical_shapes, check_weights, find_preset, infer_spec
from shared_specs.graph_spec import spec_from_graph
from shared_specs.spec import decay_from_torch_momentum, torch_momentum
from shared_specs.timm_names import (
    canonical_module,
    is_timm_v2_state,
    v2_shortcut_convention,
    weights_from_timm_v2,
    weights_to_timm_v2,
)

if TYPE_CHECKING:
    import timm.models.resnet

_STAGES = 4  # both classes' forward runs exactly four stages


def from_timm(model_or_state_dict: nn.Module | Mapping[str, Any], **hints: Any) -> tuple[ResNetSpec, Weights]:
    """(spec, canonical numpy weights) of any timm ResNet or ResNetV2 (all 101 registrations).

    From a model, the spec is `timm_spec(model)`. A bare state_dict, in either class's
    names, goes through `shared_specs.infer_spec` (`hints` are its overrides; ResNetV2 names
    are renamed first, its shortcut conv read as D after a deep stem, else B, unless
    `shortcut` is hinted) and must then be a network timm builds. What weights cannot show
    takes infer_spec's conventions: among them, BlurPool or avg-pool anti-aliasing is
    invisible (hint anti_alias), and `zero_init_last_bn` is timm's default (True for
    ResNet, False for ResNetV2) unless hinted.
    """
    if isinstance(model_or_state_dict, nn.Module):
        _no_hints(hints, "timm")
        model = model_or_state_dict
        if _fine_tuned_head(model):  # drop_rate, another global pool or a new fc: read off the graph, names paired
            spec, weights, _ = from_module(model, zero_init_last_bn=True)
            architecture = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
            return spec.replace(name=find_preset(spec) or architecture or "resnet"), weights
        spec = timm_spec(model)
        state = _numpy_state(model.state_dict())
        if spec.preactivation:
            state = weights_from_timm_v2(state, spec.shortcut)
        return spec, check_weights(spec, state, source="the timm model")
    state = _numpy_state(model_or_state_dict)
    v2 = is_timm_v2_state(state)
    hints = dict(hints)
    if v2:
        hints.setdefault("shortcut", v2_shortcut_convention(state))
        state = weights_from_timm_v2(state, hints["shortcut"])
    spec = infer_spec(state, **{k: v for k, v in hints.items() if k != "zero_init_last_bn"})
    if spec.shortcut == "C" and "shortcut" not in hints and _same_network(spec, spec.replace(shortcut="B")):
        spec = spec.replace(shortcut="B")  # every block projects (one per stage): timm's spelling, B
    problems = _timm_problems(spec)
    if problems:
        raise SpecError(f"not a timm {'ResNetV2' if v2 else 'ResNet'} state_dict (" + "; ".join(problems) + "); "
                        "shared_specs.infer_spec reads other layouts")
    spec = spec.replace(zero_init_last_bn=hints.get("zero_init_last_bn", not spec.preactivation))
    if "name" not in hints:
        spec = spec.replace(name=find_preset(spec) or spec.name)
    return spec, check_weights(spec, state, source="the timm state_dict")


def to_timm(spec: ResNetSpec, weights: Mapping[str, np.ndarray]) -> nn.Module:
    """timm's own model computing `spec` (a `timm.models.resnet.ResNet`, or a
    `timm.models.resnetv2.ResNetV2` for pre-activation specs), `weights` loaded, in eval mode.

    Every spec timm's constructors can express is built, pruned block widths included (through
    timm's own `adapt_model_from_string`); SpecError names every field of any other spec, and
    WeightsError every tensor that does not fit, before anything is built.
    """
    problems = _timm_problems(spec)
    if problems:
        raise SpecError(f"spec {spec.name!r} is not expressible as timm's {_class_name(spec)}: " + "; ".join(problems))
    checked = check_weights(spec, weights, source="weights for timm")
    state = weights_to_timm_v2(checked, spec.shortcut) if spec.preactivation else checked
    return _build_loaded(functools.partial(_timm_model, spec), state)


def timm_spec(model: nn.Module) -> ResNetSpec:
    """The spec of a timm ResNet or ResNetV2, read off its modules and the shapes of its
    state_dict; needs no weights, so a model on the meta device reads as well."""
    from timm.models import resnet as tm
    from timm.models import resnetv2 as tv2

    if isinstance(model, tm.ResNet) and _fine_tuned_head(model):  # the head (with the body) read off the graph
        spec, _ = spec_from_graph(read_graph(model), default_name="resnet", zero_init_last_bn=True)
        return spec.replace(name=find_preset(spec) or (getattr(model, "pretrained_cfg", None) or {}).get(
            "architecture") or spec.name)
    if isinstance(model, tm.ResNet):
        return _read(model, _ResNetReader(model))
    if isinstance(model, tv2.ResNetV2):
        return _read(model, _ResNetV2Reader(model))
    raise SpecError(f"expected a timm.models.resnet.ResNet or timm.models.resnetv2.ResNetV2, got "
                    f"{type(model).__name__}")


# -- reading a model ------------------------------------------------------------------------


class _Reader:
    """What one timm class's modules say that weights cannot; the two classes differ only here."""

    canonical: Callable[[str], str | None] | None = None
    allowed: tuple[type, ...] = ()

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def state(self) -> Mapping[str, Any]:
        return self.model.state_dict()

    def hints(self) -> dict[str, Any]:
        raise NotImplementedError

    def norm_hints(self) -> dict[str, Any]:
        """`batchnorm`, `norm` and `std_conv_epsilon` from the first norm and conv modules."""
        lib = _library()
        hints: dict[str, Any] = {}
        for name, m in self.model.named_modules():
            if isinstance(m, nn.BatchNorm2d):
                if m.momentum is None:
                    raise SpecError(f"{name} has momentum=None (a cumulative average), which the spec's "
                                    "running_stats_decay cannot express")
                hints["batchnorm"] = {"epsilon": m.eps, "running_stats_decay": decay_from_torch_momentum(m.momentum)}
                hints["norm"] = {"kind": "batchnorm"}
            elif isinstance(m, nn.GroupNorm):
                hints["norm"] = {"kind": "groupnorm", "groups": m.num_groups, "epsilon": m.eps}
            elif type(m) is lib["evonorm_s0"]:
                hints["norm"] = {"kind": "evonorm_s0", "groups": m.groups, "epsilon": m.eps}
            elif type(m) is lib["frn"]:
                hints["norm"] = {"kind": "frn", "epsilon": m.eps}
            else:
                continue
            break
        convs = [m for m in self.model.modules() if isinstance(m, nn.Conv2d)]
        hints["std_conv_epsilon"] = convs[0].eps if convs and type(convs[0]) is lib["std_conv"] else None
        return hints


def _read(model: nn.Module, reader: _Reader) -> ResNetSpec:
    _check_kinds(model, reader.allowed, _library())
    hints = reader.hints()
    spec = infer_spec(reader.state(), **hints)
    _verify_modules(model, spec, reader.allowed, reader.canonical, _library())
    if spec.name == "resnet":  # no preset is this network: timm's own name for it, if it has one
        architecture = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
        spec = spec.replace(name=architecture or spec.name)
    return spec


class _ResNetReader(_Reader):
    """timm.models.resnet.ResNet: torchvision's names, timm's stems, pools and blocks."""

    def __init__(self, model: nn.Module) -> None:
        from timm.layers import SelectAdaptivePool2d
        from timm.models import resnet as tm

        super().__init__(model)
        self.allowed = (tm.ResNet, tm.BasicBlock, tm.Bottleneck, SelectAdaptivePool2d)

    def hints(self) -> dict[str, Any]:
        m = self.model
        if m.drop_rate:
            raise SpecError(f"the timm model has drop_rate={m.drop_rate} (dropout before fc), which the spec has no "
                            "counterpart for: convert model.state_dict() instead, or create it with drop_rate=0")
        _timm_v1_head(m)
        lib = _library()
        conv = m.conv1[0] if isinstance(m.conv1, nn.Sequential) else m.conv1
        stem = _stem_conv(conv, "conv1.0" if isinstance(m.conv1, nn.Sequential) else "conv1")
        pool, anti_alias = m.maxpool, "none"
        parts = list(pool) if isinstance(pool, nn.Sequential) else [pool]
        if isinstance(pool, nn.Identity):
            stem["pool"] = "none"
        elif isinstance(parts[0], nn.Conv2d):
            stem["pool"] = "conv"  # ResNet-RS's replace_stem_pool
        elif isinstance(parts[0], nn.MaxPool2d):
            stem.update(_max_pool(parts[0], "maxpool.0" if len(parts) > 1 else "maxpool"))
        elif not isinstance(parts[0], nn.AvgPool2d):  # aa_layer=nn.AvgPool2d replaces the pool: _verify_modules
            raise SpecError(f"maxpool is a {type(parts[0]).__name__}; the spec's stem pool is nn.MaxPool2d, timm's "
                            "anti-aliased or ResNet-RS pool, or none (nn.Identity)")
        for part in [*parts, *(getattr(b, "aa", None) for b in _blocks(m))]:
            if type(part) is lib["blur"]:
                anti_alias = "blur"
            elif type(part) is nn.AvgPool2d and part is not None:
                anti_alias = "avg"
        if anti_alias == "blur" and stem.get("pool", "max") == "max":
            stem["pool_stride"] = _square(parts[-1].stride)  # the blur strides, the max-pool before it does not
        avg = any(b.downsample is not None and not isinstance(b.downsample[0], nn.Conv2d) for b in _blocks(m))
        strides = []
        for i in range(1, _STAGES + 1):
            block = getattr(m, f"layer{i}")[0]
            strided = block.conv2 if hasattr(block, "conv3") else block.conv1
            aa = getattr(block, "aa", None)
            strides.append({"stride": _square(aa.stride) if type(aa) in (lib["blur"], nn.AvgPool2d)
                            else _square(strided.stride)})
        return {"stem": stem, "stages": strides, "anti_alias": anti_alias, "zero_init_last_bn": True,
                "shortcut": "D" if avg else "B", **self.norm_hints()}  # avg_down: a pool first, else a conv


class _ResNetV2Reader(_Reader):
    """timm.models.resnetv2.ResNetV2 (pre-activation): its names through shared_specs.timm_names."""

    def __init__(self, model: nn.Module) -> None:
        from timm.layers import ClassifierHead, SelectAdaptivePool2d
        from timm.models import resnetv2 as tv2

        super().__init__(model)
        self.allowed = (tv2.ResNetV2, tv2.ResNetStage, tv2.PreActBasic, tv2.PreActBottleneck, tv2.DownsampleConv,
                        tv2.DownsampleAvg, ClassifierHead, SelectAdaptivePool2d, nn.Dropout)  # p=0: _timm_v2_head
        blocks = [(f"stages.{i}.blocks.{j}", b) for i, s in enumerate(model.stages) for j, b in enumerate(s.blocks)]
        for name, block in blocks:
            if not isinstance(block, (tv2.PreActBasic, tv2.PreActBottleneck)):
                raise SpecError(f"{name} is a {type(block).__name__}: timm's ResNetV2(preact=False) (the ViT hybrid "
                                "backbone) has no counterpart in the spec's pre-activation layout")
        avg = any(isinstance(b.downsample, tv2.DownsampleAvg) for _, b in blocks)
        self.shortcut = "D" if avg else "B"
        self.canonical = functools.partial(canonical_module, shortcut=self.shortcut)

    def state(self) -> Mapping[str, Any]:
        return weights_from_timm_v2(self.model.state_dict(), self.shortcut)

    def hints(self) -> dict[str, Any]:
        m = self.model
        _timm_v2_head(m)
        stem_modules = dict(m.stem.named_children())
        first = stem_modules.get("conv", stem_modules.get("conv1"))
        stem = _stem_conv(first, "stem.conv" if "conv" in stem_modules else "stem.conv1")
        stem.update(_max_pool(stem_modules["pool"], "stem.pool"))
        pad = stem_modules.get("pad")
        if isinstance(pad, nn.ConstantPad2d):  # BiT's 'fixed' stem: zeros, then an unpadded pool
            stem.update(pool_pad_value="zero" if pad.value == 0 else "-inf", pool_padding=_square(pad.padding))
            if stem["pool_padding"] == stem["pool_size"] // 2:
                stem["pool_padding"] = None
        strides = []
        for stage in m.stages:
            block = stage.blocks[0]
            strided = block.conv2 if hasattr(block, "conv3") else block.conv1
            strides.append({"stride": _square(strided.stride)})
        return {"stem": stem, "stages": strides, "shortcut": self.shortcut, "zero_init_last_bn": False,
                **self.norm_hints()}


def _stem_conv(conv: nn.Module, name: str) -> dict[str, Any]:
    if not isinstance(conv, nn.Conv2d):
        raise SpecError(f"{name} is a {type(conv).__name__}, not an nn.Conv2d")
    k, padding = _square(conv.kernel_size), _int_padding(conv.padding, name)
    return {"stride": _square(conv.stride), "padding": None if padding == k // 2 else padding}


def _max_pool(pool: nn.Module, name: str) -> dict[str, Any]:
    if not isinstance(pool, nn.MaxPool2d):
        raise SpecError(f"{name} is a {type(pool).__name__}; the spec's stem pool is a max-pool")
    size, padding = _square(pool.kernel_size), _int_padding(pool.padding, name)
    return {"pool": "max", "pool_size": size, "pool_stride": _square(pool.stride), "pool_pad_value": "-inf",
            "pool_padding": None if padding == size // 2 else padding}


def _fine_tuned_head(model: nn.Module) -> bool:
    """Whether a timm ResNet's head is not its default avg pool + Linear (or none): timm's
    drop_rate, a max/avgmax/catavgmax pool, or an nn.Sequential in fc's place (spec.head)."""
    from timm.models import resnet as tm

    return isinstance(model, tm.ResNet) and bool(
        model.drop_rate or model.global_pool.pool_type not in ("avg", "")
        or not isinstance(model.fc, (nn.Linear, nn.Identity)))


def _timm_v1_head(model: nn.Module) -> None:
    if isinstance(model.fc, nn.Linear):
        if model.global_pool.pool_type != "avg":
            raise SpecError(f"the timm model's global_pool is {model.global_pool.pool_type!r}; the spec's head is "
                            "'avg'")
    elif not (model.global_pool.pool_type == "" and isinstance(model.fc, nn.Identity)):
        raise SpecError(f"the timm model's head (global_pool={model.global_pool.pool_type!r}, fc="
                        f"{type(model.fc).__name__}) is neither avg-pool + Linear nor absent "
                        "(num_classes=0, global_pool='')")


def _timm_v2_head(model: nn.Module) -> None:
    head = model.head
    pool = head.global_pool.pool_type
    drop = getattr(head, "drop", None)
    if isinstance(drop, nn.Dropout) and drop.p:
        raise SpecError(f"head.drop is a Dropout(p={drop.p}) (timm's drop_rate), which the spec has no counterpart "
                        "for: convert model.state_dict() instead, or create it with drop_rate=0")
    if isinstance(head.fc, nn.Conv2d):
        if pool != "avg":
            raise SpecError(f"head.global_pool is {pool!r}; the spec's head is 'avg'")
    elif not (pool == "" and isinstance(head.fc, nn.Identity)):
        raise SpecError(f"the timm model's head (global_pool={pool!r}, fc={type(head.fc).__name__}) is neither "
                        "avg-pool + classifier nor absent (num_classes=0, global_pool='')")


def _blocks(model: nn.Module) -> list[nn.Module]:
    return [b for i in range(1, _STAGES + 1) for b in getattr(model, f"layer{i}")]


@functools.cache
def _library() -> dict[str, type]:
    """timm's classes for the ops torch.nn has no module for (see ecosystem._verify_modules)."""
    from timm import layers
    from timm.layers import norm

    return {"std_conv": layers.StdConv2d, "batchnorm_act": layers.BatchNormAct2d, "groupnorm": norm.GroupNorm,
            "groupnorm_act": layers.GroupNormAct, "evonorm_s0": layers.EvoNorm2dS0,
            "frn": layers.FilterResponseNormTlu2d, "se": layers.SEModule, "eca": layers.EcaModule,
            "blur": layers.BlurPool2d}


# -- building a model -----------------------------------------------------------------------


def _class_name(spec: ResNetSpec) -> str:
    return "ResNetV2" if spec.preactivation else "ResNet"


def _timm_problems(spec: ResNetSpec) -> list[str]:
    """Why timm cannot build `spec` (empty when it can): its constructor is given the spec's
    settings, and the model it builds is read back and compared."""
    if len(spec.stages) != _STAGES:
        return [f"stages has {len(spec.stages)} stages (timm: {_STAGES})"]
    try:
        with torch.device("meta"):
            built = timm_spec(_timm_model(spec))
    except SpecError as err:
        return [str(err)]
    except (AssertionError, TypeError, ValueError, KeyError) as err:  # timm's constructor refuses the arguments
        return [f"timm's {_class_name(spec)} cannot be built with these settings ({type(err).__name__}: {err})"]
    if not spec.preactivation:  # ResNet(zero_init_last=...) takes the spec's; ResNetV2's blocks end in a conv
        built = built.replace(zero_init_last_bn=spec.zero_init_last_bn)
    return _differences(spec, built, "timm")


def _timm_model(spec: ResNetSpec) -> nn.Module:
    """timm's model for `spec`'s settings (what it cannot express, it builds its own way)."""
    return _resnet_v2(spec) if spec.preactivation else _resnet(spec)


def _resnet(spec: ResNetSpec) -> timm.models.resnet.ResNet:
    from timm.layers import BlurPool2d, EcaModule, SEModule
    from timm.layers.norm import GroupNorm
    from timm.models import resnet as tm

    stem_type, stem_width = _stem_type(spec.stem.widths, preact=False)
    blocks = tuple(tm.Bottleneck if spec.block_of(s) == "bottleneck" else tm.BasicBlock for s in spec.stages)
    attention = spec.attention
    block_args: dict[str, Any] = {}
    if attention is not None and attention.kind == "se":
        block_args["attn_layer"] = functools.partial(SEModule, rd_ratio=attention.reduction,
                                                     rd_divisor=attention.divisor)
    elif attention is not None:
        block_args["attn_layer"] = functools.partial(EcaModule, gamma=attention.gamma, beta=attention.beta)
    if spec.norm.kind == "groupnorm":
        norm_layer: Any = functools.partial(GroupNorm, num_groups=spec.norm.groups, eps=spec.norm.epsilon)
    else:  # EvoNorm and FRN carry their activation: timm's ResNet adds a ReLU after them, read back as a difference
        norm_layer = _batchnorm(spec, nn.BatchNorm2d)
    model = tm.ResNet(
        block=blocks if len(set(blocks)) > 1 else blocks[0],
        layers=tuple(s.depth for s in spec.stages),
        channels=tuple(s.width for s in spec.stages),
        num_classes=spec.num_classes or 0,
        global_pool=spec.head.pool if spec.num_classes is not None else "",
        drop_rate=spec.head.dropout,
        in_chans=spec.in_channels,
        cardinality=spec.groups,
        base_width=spec.width_per_group,
        stem_type=stem_type,
        stem_width=stem_width,
        replace_stem_pool=spec.stem.pool == "conv",
        block_reduce_first=spec.reduce_first,
        down_kernel_size=spec.shortcut_kernel_size,
        avg_down=spec.shortcut == "D",
        norm_layer=norm_layer,
        aa_layer={"blur": BlurPool2d, "avg": nn.AvgPool2d}.get(spec.anti_alias),
        zero_init_last=spec.zero_init_last_bn,
        block_args=block_args,
    )
    if any(s.block_widths for s in spec.stages):  # pruned widths: timm's own way to its pruned models
        from timm.models._prune import adapt_model_from_string

        shapes = canonical_shapes(spec)
        names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))]
        model = adapt_model_from_string(model, "***".join(
            f"{n}.weight:{list(shapes.get(f'{n}.weight', ()))}" for n in names))
    if spec.head.sequential:  # a fine-tuned classifier, where fine-tuning puts it
        model.fc = classifier(spec)
    return model


def _resnet_v2(spec: ResNetSpec) -> nn.Module:
    from timm.layers import (
        BatchNormAct2d,
        EvoNorm2dS0,
        FilterResponseNormTlu2d,
        GroupNormAct,
        StdConv2d,
        create_conv2d,
    )
    from timm.models import resnetv2 as tv2

    stem_type, stem_width = _stem_type(spec.stem.widths, preact=True)
    if spec.stem.pool_pad_value == "zero" and stem_type in ("", "deep"):
        stem_type = f"{stem_type}_fixed".strip("_")  # 'fixed', 'deep_fixed': ConstantPad2d(1, 0) + MaxPool2d(3, 2)
    n = spec.norm
    norm_layer: Any = {
        "batchnorm": _batchnorm(spec, BatchNormAct2d),
        "groupnorm": functools.partial(GroupNormAct, num_groups=n.groups, eps=n.epsilon),
        "evonorm_s0": functools.partial(EvoNorm2dS0, groups=n.groups, eps=n.epsilon),
        "frn": functools.partial(FilterResponseNormTlu2d, eps=n.epsilon),
    }[n.kind]
    basic = spec.block == "basic"
    return tv2.ResNetV2(
        layers=[s.depth for s in spec.stages],
        channels=tuple(s.width * (1 if basic else 4) for s in spec.stages),
        num_classes=spec.num_classes or 0,
        in_chans=spec.in_channels,
        global_pool="avg" if spec.num_classes is not None else "",
        stem_chs=stem_width,
        stem_type=stem_type,
        avg_down=spec.shortcut == "D",
        basic=basic,
        bottle_ratio=1.0 if basic else 0.25,
        norm_layer=norm_layer,
        conv_layer=functools.partial(StdConv2d, eps=spec.std_conv_epsilon) if spec.std_conv_epsilon else create_conv2d,
        zero_init_last=False,
    )


def _batchnorm(spec: ResNetSpec, cls: type) -> Any:
    b = spec.batchnorm
    return functools.partial(cls, eps=b.epsilon, momentum=torch_momentum(b.running_stats_decay))


def _stem_type(widths: tuple[int, ...], preact: bool) -> tuple[str, int]:
    """timm's (stem_type, stem_width) for the spec's stem widths (the inverse of the table's
    stems in shared_specs.presets_timm); ("", 64) for a single conv or any other widths."""
    if len(widths) == 1:
        return "", widths[0]
    if len(widths) == 3 and preact:
        w = widths[2]
        if widths[:2] == (w // 2, w // 2):
            return "deep", w
        if widths[:2] == (3 * w // 8, w // 2):
            return "tiered", w
    elif len(widths) == 3 and widths[2] == 2 * widths[1]:
        if widths[0] == widths[1]:
            return "deep", widths[1]
        if widths[0] == 3 * (widths[1] // 4):
            return "deep_tiered", widths[1]
    return "", 64
