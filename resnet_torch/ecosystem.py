"""torchvision and timm ResNets to and from (spec, canonical weights).

Canonical names are torchvision's state_dict keys, and timm's for the deep stem and
the avg-pool shortcut, so weights cross without renaming. What these converters do is
read each library's configuration off a model (never guess it from the class name),
build that library's model from a spec, and refuse, naming the fields, any spec the
library cannot express. torchvision and timm are imported on first use: neither is
needed to build our own models.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from resnet_torch.layers import classifier
from resnet_torch.reading import from_module
from shared_specs import (
    BatchNormSpec,
    ResNetSpec,
    SpecError,
    StageSpec,
    StemSpec,
    WeightsError,
    check_weights,
    find_preset,
    infer_spec,
    make_plan,
)
from shared_specs import plan as P
from shared_specs.plan import IGNORED_SUFFIXES
from shared_specs.spec import HeadSpec, decay_from_torch_momentum, torch_momentum, width_per_group_of

if TYPE_CHECKING:
    import timm.models.resnet
    import torchvision.models

Weights = dict[str, np.ndarray]
_TORCHVISION_WIDTHS = (64, 128, 256, 512)  # torchvision's ResNet hard-codes its stage widths
_FOUR_STAGE_STRIDES = (1, 2, 2, 2)  # both libraries: layer1 unstrided, then stride 2 (output stride 32)


# -- torchvision ----------------------------------------------------------------------


def from_torchvision(model_or_state_dict: nn.Module | Mapping[str, Any], **hints: Any) -> tuple[ResNetSpec, Weights]:
    """(spec, canonical numpy weights) of a torchvision ResNet, ResNeXt or Wide ResNet.

    From a `torchvision.models.ResNet`, the spec is read off its modules: block class,
    blocks per stage, groups, base width, stem conv and pool, BatchNorm eps/momentum,
    classifier; a CIFAR-style model whose conv1/maxpool were replaced is read as it
    is, and one whose fc was replaced (an MLP with dropout, ...) through
    `resnet_torch.from_module`. A bare state_dict says less: it goes through `infer_spec` (`hints` are its
    overrides) and must then be a layout torchvision's constructor builds.
    """
    import torchvision.models.resnet as tv

    if isinstance(model_or_state_dict, nn.Module):
        model = model_or_state_dict
        _no_hints(hints, "torchvision")
        if not isinstance(model, tv.ResNet):
            raise SpecError(f"expected a torchvision.models.ResNet, got {type(model).__name__}")
        if not isinstance(model.fc, nn.Linear):  # a fine-tuned classifier: read off the graph, as any model's
            spec, weights, _ = from_module(model)
            return spec, weights
        spec = _torchvision_spec(model, tv)
        _verify_modules(model, spec, allowed=(tv.ResNet, tv.BasicBlock, tv.Bottleneck))
        return spec, _model_weights(model, spec, "the torchvision model")
    state = _numpy_state(model_or_state_dict)
    spec = infer_spec(state, **hints)
    problems = _torchvision_problems(spec)
    if problems:
        raise SpecError("not a torchvision ResNet state_dict (" + "; ".join(problems) + "); shared_specs.infer_spec "
                        "reads other layouts")
    return spec, check_weights(spec, state, source="the torchvision state_dict")


def to_torchvision(spec: ResNetSpec, weights: Mapping[str, np.ndarray]) -> torchvision.models.ResNet:
    """A `torchvision.models.ResNet` computing `spec`, `weights` loaded, in eval mode.

    Raises SpecError naming every field torchvision's constructor cannot express
    (pre-activation, conv biases, a non-torchvision stem or pool, stage widths or
    strides, shortcuts other than B, the stride on the bottleneck's 1x1, ...), and
    WeightsError listing every tensor that does not fit, before building anything. As
    fine-tuning does, a classifier (`head.layers`) becomes an nn.Sequential in `fc`'s
    place and other `in_channels` a new `conv1`.
    """
    import torchvision.models.resnet as tv

    problems = _torchvision_problems(spec)
    if problems:
        raise SpecError(f"spec {spec.name!r} is not expressible as torchvision.models.ResNet: " + "; ".join(problems))
    checked = check_weights(spec, weights, source="weights for torchvision")

    def build() -> nn.Module:
        model = tv.ResNet(
            tv.Bottleneck if spec.block == "bottleneck" else tv.BasicBlock,
            [s.depth for s in spec.stages],
            num_classes=spec.num_classes,  # _torchvision_problems refused None
            zero_init_residual=spec.zero_init_last_bn,
            groups=spec.groups,
            width_per_group=spec.width_per_group,
            norm_layer=_norm_layer(spec.batchnorm),
        )
        if spec.head.sequential:  # a fine-tuned classifier, where fine-tuning puts it
            model.fc = classifier(spec)
        if spec.in_channels != 3:  # torchvision's constructor takes 3; a gray or multispectral model swaps conv1
            model.conv1 = nn.Conv2d(spec.in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        return model

    return _build_loaded(build, checked)


def _torchvision_problems(spec: ResNetSpec) -> list[str]:
    """Why torchvision's ResNet constructor cannot build `spec` (empty when it can).

    Each entry names a field, its value and torchvision's; fields that do not change
    the network (e.g. `stem.padding=3` vs None) are no problem.
    """
    template = ResNetSpec(
        name=spec.name,
        stages=tuple(StageSpec(s.depth, w, st)
                     for s, w, st in zip(spec.stages, _TORCHVISION_WIDTHS, _FOUR_STAGE_STRIDES)),
        block=spec.block,
        groups=spec.groups,
        width_per_group=spec.width_per_group,
        batchnorm=_torch_bn(spec.batchnorm),
        zero_init_last_bn=spec.zero_init_last_bn,
        num_classes=spec.num_classes if spec.num_classes is not None else 1000,
        in_channels=spec.in_channels,  # conv1 replaced, as for one-channel images
        # a classifier in fc's place is torchvision's model fine-tuned; pooling and dropout are its own
        head=dataclasses.replace(spec.head, pool="avg", dropout=0.0) if spec.num_classes is not None else HeadSpec(),
    )
    problems = [] if len(spec.stages) == 4 else [f"stages has {len(spec.stages)} stages (torchvision: 4)"]
    return problems + _differences(spec, template, "torchvision")


# -- timm -------------------------------------------------------------------------------


def from_timm(model_or_state_dict: nn.Module | Mapping[str, Any], **hints: Any) -> tuple[ResNetSpec, Weights]:
    """(spec, canonical numpy weights) of a timm ResNet (resnet18 ... 152, resnet18d ... 101d, ResNeXt).

    From a `timm.models.resnet.ResNet` the spec is read off its modules (stem type and
    widths, avg-pool or conv shortcut, blocks, BatchNorm eps/momentum, head); parts
    the spec has no counterpart for (attention, anti-aliasing, dilation, stochastic
    depth, dropout, other activations) are refused by name. A bare state_dict goes
    through `infer_spec` and must then be a layout timm's constructor builds.
    `zero_init_last_bn` is timm's default True unless hinted (init only; a model
    does not record it).
    """
    if isinstance(model_or_state_dict, nn.Module):
        model = model_or_state_dict
        _no_hints(hints, "timm")
        from timm.layers import SelectAdaptivePool2d
        from timm.models import resnet as tm

        if not isinstance(model, tm.ResNet):
            raise SpecError(f"expected a timm.models.resnet.ResNet, got {type(model).__name__}")
        spec = _timm_spec(model, tm)
        _verify_modules(model, spec, allowed=(tm.ResNet, tm.BasicBlock, tm.Bottleneck, SelectAdaptivePool2d))
        return spec, _model_weights(model, spec, "the timm model")
    state = _numpy_state(model_or_state_dict)
    spec = infer_spec(state, **{k: v for k, v in hints.items() if k != "zero_init_last_bn"})
    problems = _timm_problems(spec)
    if problems:
        raise SpecError("not a timm ResNet state_dict (" + "; ".join(problems) + "); shared_specs.infer_spec reads "
                        "other layouts")
    spec = spec.replace(zero_init_last_bn=hints.get("zero_init_last_bn", True))
    if "name" not in hints:
        spec = spec.replace(name=find_preset(spec) or spec.name)
    return spec, check_weights(spec, state, source="the timm state_dict")


def to_timm(spec: ResNetSpec, weights: Mapping[str, np.ndarray]) -> timm.models.resnet.ResNet:
    """A `timm.models.resnet.ResNet` computing `spec`, `weights` loaded, in eval mode.

    timm expresses any stage widths, groups, base width, input channels and
    BatchNorm settings, its 7x7 or deep 3x3 stems, shortcuts B and D, and
    `num_classes=None` (as num_classes=0, global_pool=''); SpecError names every
    other field that differs, before anything is built.
    """
    from timm.models import resnet as tm

    problems = _timm_problems(spec)
    if problems:
        raise SpecError(f"spec {spec.name!r} is not expressible as timm's ResNet: " + "; ".join(problems))
    checked = check_weights(spec, weights, source="weights for timm")
    stem_type, stem_width = _timm_stem_type(spec.stem)
    return _build_loaded(functools.partial(
        tm.ResNet,
        block=tm.Bottleneck if spec.block == "bottleneck" else tm.BasicBlock,
        layers=tuple(s.depth for s in spec.stages),
        channels=tuple(s.width for s in spec.stages),
        num_classes=spec.num_classes or 0,
        global_pool="avg" if spec.num_classes is not None else "",
        in_chans=spec.in_channels,
        cardinality=spec.groups,
        base_width=spec.width_per_group,
        stem_type=stem_type,
        stem_width=stem_width,
        avg_down=spec.shortcut == "D",
        norm_layer=_norm_layer(spec.batchnorm),
        zero_init_last=spec.zero_init_last_bn,
    ), checked)


def _timm_problems(spec: ResNetSpec) -> list[str]:
    """Why timm's ResNet constructor cannot build `spec` (empty when it can)."""
    stem_type, _ = _timm_stem_type(spec.stem)
    template = ResNetSpec(
        name=spec.name,
        stages=tuple(StageSpec(s.depth, s.width, st) for s, st in zip(spec.stages, _FOUR_STAGE_STRIDES)),
        block=spec.block,
        shortcut=spec.shortcut if spec.shortcut in ("B", "D") else "B",
        stem=StemSpec(widths=spec.stem.widths, kernel_size=3) if stem_type else StemSpec(),
        groups=spec.groups,
        width_per_group=spec.width_per_group,
        batchnorm=_torch_bn(spec.batchnorm),
        zero_init_last_bn=spec.zero_init_last_bn,
        in_channels=spec.in_channels,
        num_classes=spec.num_classes,
    )
    problems = [] if len(spec.stages) == 4 else [f"stages has {len(spec.stages)} stages (timm: 4)"]
    return problems + _differences(spec, template, "timm")


def _timm_stem_type(stem: StemSpec) -> tuple[str, int]:
    """timm's (stem_type, stem_width) for a stem's widths; ("", 64) when not a deep stem."""
    w = stem.widths
    if len(w) == 3 and w[2] == 2 * w[1]:
        if w[0] == w[1]:
            return "deep", w[1]
        if w[0] == 3 * (w[1] // 4):
            return "deep_tiered", w[1]
    return "", 64


def _timm_spec(model: nn.Module, tm: Any) -> ResNetSpec:
    if model.drop_rate:
        raise SpecError(f"the timm model has drop_rate={model.drop_rate} (dropout before fc), which the spec has no "
                        "counterpart for: convert model.state_dict() instead, or create it with drop_rate=0")
    first = model.layer1[0]
    bottleneck = isinstance(first, tm.Bottleneck)
    stages = _stages(model, "conv2" if bottleneck else "conv1", "conv3" if bottleneck else "conv2")
    if isinstance(model.conv1, nn.Sequential):
        convs = [m for m in model.conv1 if isinstance(m, nn.Conv2d)]
        stem = _stem_from(convs[0], model.maxpool, widths=tuple(c.out_channels for c in convs))
    else:
        stem = _stem_from(model.conv1, model.maxpool)
    shortcut = "B"
    for block in _blocks(model):
        if block.downsample is not None and not isinstance(block.downsample[0], nn.Conv2d):
            shortcut = "D"  # timm's avg_down: AvgPool2d (or Identity) first, conv at downsample.1
    if isinstance(model.fc, nn.Linear):
        num_classes: int | None = model.fc.out_features
        if model.global_pool.pool_type != "avg":
            raise SpecError(f"the timm model's global_pool is {model.global_pool.pool_type!r}; "
                            "the spec's head is 'avg'")
    elif model.global_pool.pool_type == "" and isinstance(model.fc, nn.Identity):
        num_classes = None  # num_classes=0, global_pool='': the last feature map, as the spec's None
    else:
        raise SpecError(f"the timm model's head (global_pool={model.global_pool.pool_type!r}, fc="
                        f"{type(model.fc).__name__}) is neither avg-pool + Linear nor absent "
                        "(num_classes=0, global_pool='')")
    groups = first.conv2.groups if bottleneck else 1
    spec = ResNetSpec(
        stages=stages,
        block="bottleneck" if bottleneck else "basic",
        shortcut=shortcut,
        stem=stem,
        groups=groups,
        width_per_group=width_per_group_of(first.conv2.out_channels, stages[0].width, groups, "layer1.0.conv2")
        if bottleneck else 64,
        batchnorm=_bn_spec(model.bn1),
        zero_init_last_bn=True,  # timm's ResNet(zero_init_last=True) default; the model does not record it
        in_channels=_stem_in_channels(model),
        num_classes=num_classes,
    )
    architecture = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    return spec.replace(name=find_preset(spec) or architecture or spec.name)


# -- reading a model ----------------------------------------------------------------------


def _torchvision_spec(model: nn.Module, tv: Any) -> ResNetSpec:
    bottleneck = isinstance(model.layer1[0], tv.Bottleneck)
    stages = _stages(model, "conv2" if bottleneck else "conv1", "conv3" if bottleneck else "conv2")
    if not isinstance(model.fc, nn.Linear):
        raise SpecError(f"the model's fc is a {type(model.fc).__name__}; the spec's classifier is one nn.Linear "
                        "(torchvision's) or none")
    spec = ResNetSpec(
        stages=stages,
        block="bottleneck" if bottleneck else "basic",
        stem=_stem_from(model.conv1, model.maxpool),
        groups=model.groups,
        width_per_group=model.base_width,
        batchnorm=_bn_spec(model.bn1),
        in_channels=model.conv1.in_channels,
        num_classes=model.fc.out_features,
    )
    return spec.replace(name=find_preset(spec) or spec.name)


def _stem_in_channels(model: nn.Module) -> int:
    conv = model.conv1[0] if isinstance(model.conv1, nn.Sequential) else model.conv1
    return conv.in_channels


def _stages(model: nn.Module, strided: str, last: str) -> tuple[StageSpec, ...]:
    """Depth, width and stride of layer1 ... layer4 (both libraries' forward calls exactly
    these four), read off their first blocks; `strided` names the conv holding the stride."""
    stages = []
    for i in range(1, 5):
        layer = getattr(model, f"layer{i}", None)
        if not isinstance(layer, nn.Sequential) or len(layer) == 0:
            raise SpecError(f"layer{i} is missing or empty")
        conv = getattr(layer[0], strided)
        out = getattr(layer[0], last).out_channels
        stages.append(StageSpec(len(layer), out // 4 if last == "conv3" else out, conv.stride[0]))
    return tuple(stages)


def _stem_from(conv: nn.Conv2d, pool: nn.Module, widths: tuple[int, ...] | None = None) -> StemSpec:
    if not isinstance(conv, nn.Conv2d):
        raise SpecError(f"the stem conv is a {type(conv).__name__}, not an nn.Conv2d")
    k = conv.kernel_size[0]
    padding = _int_padding(conv.padding, "conv1")
    fields: dict[str, Any] = {"widths": widths or (conv.out_channels,), "kernel_size": k, "stride": conv.stride[0],
                              "padding": None if padding == k // 2 else padding}  # None: the default k // 2
    if isinstance(pool, nn.Identity):
        fields["pool"] = "none"
    elif isinstance(pool, nn.MaxPool2d):
        size, padding = _square(pool.kernel_size), _int_padding(pool.padding, "maxpool")
        fields.update(pool_size=size, pool_stride=_square(pool.stride),
                      pool_padding=None if padding == size // 2 else padding)
    else:
        raise SpecError(f"maxpool is a {type(pool).__name__}; the spec's stem pool is nn.MaxPool2d "
                        "or none (nn.Identity)")
    return StemSpec(**fields)


def _square(value: int | tuple[int, ...]) -> int:
    return value if isinstance(value, int) else value[0]  # non-square ones fail _verify_modules by name


def _int_padding(padding: Any, where: str) -> int:
    if isinstance(padding, str):
        raise SpecError(f"{where} has padding={padding!r}; the spec's padding is symmetric pixels")
    return _square(padding)


def _bn_spec(bn: nn.Module) -> BatchNormSpec:
    if not isinstance(bn, nn.BatchNorm2d):
        raise SpecError(f"bn1 is a {type(bn).__name__}; the spec's norm is nn.BatchNorm2d")
    if bn.momentum is None:
        raise SpecError("bn1 has momentum=None (a cumulative average), which the spec's running_stats_decay "
                        "cannot express")
    return BatchNormSpec(epsilon=bn.eps, running_stats_decay=decay_from_torch_momentum(bn.momentum))


def _blocks(model: nn.Module) -> Iterator[nn.Module]:
    for name, module in model.named_children():
        if name.startswith("layer"):
            yield from module


def _verify_modules(model: nn.Module, spec: ResNetSpec, allowed: tuple[type, ...]) -> None:
    """Every module of `model` is a layer of `spec`'s plan with the same configuration, or a
    parameter-free container, ReLU or identity: nothing the spec does not say is left over."""
    ops = {op.name: op for op in make_plan(spec).ops() if not isinstance(op, (P.ReLU, P.GlobalAvgPool))}
    seen = set()
    for name, module in model.named_modules():
        if name in ops:
            _check_module(name, module, ops[name])
            seen.add(name)
        elif isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d)):
            raise SpecError(f"{name} is an {type(module).__name__} the spec's network has no place for")
        elif isinstance(module, nn.AdaptiveAvgPool2d):
            if module.output_size not in (1, (1, 1)):
                raise SpecError(f"{name} pools to {module.output_size}; the spec's head pools globally")
        elif not (type(module) in (nn.Sequential, nn.ReLU, nn.Identity, nn.Flatten) or isinstance(module, allowed)):
            raise SpecError(f"{name} is a {type(module).__name__}, which the spec has no counterpart for")
    missing = sorted(set(ops) - seen)
    if missing:
        raise SpecError(f"the model has no {missing[0]}, which the spec's network needs")


def _check_module(name: str, module: nn.Module, op: P.Op) -> None:
    if isinstance(op, P.Conv):
        expected: dict[str, Any] = dict(in_channels=op.in_channels, out_channels=op.out_channels,
                                        kernel_size=(op.kernel_size,) * 2, stride=(op.stride,) * 2,
                                        padding=(op.padding,) * 2, dilation=(1, 1), groups=op.groups,
                                        padding_mode="zeros")
        got = {k: getattr(module, k, None) for k in expected} if isinstance(module, nn.Conv2d) else None
        if got is not None and (module.bias is not None) != op.bias:
            got["bias"], expected["bias"] = module.bias is not None, op.bias
    elif isinstance(op, P.BatchNorm):
        expected = dict(num_features=op.channels, eps=op.epsilon, momentum=torch_momentum(op.running_stats_decay),
                        affine=True, track_running_stats=True)
        got = {k: getattr(module, k) for k in expected} if type(module) is nn.BatchNorm2d else None
    elif isinstance(op, P.MaxPool):
        expected = dict(kernel_size=op.size, stride=op.stride, padding=op.padding, dilation=1, ceil_mode=False)
        got = {k: getattr(module, k) for k in expected} if isinstance(module, nn.MaxPool2d) else None
    elif isinstance(op, P.AvgPool):
        expected = dict(kernel_size=op.size, stride=op.stride, padding=0, ceil_mode=True, count_include_pad=False,
                        divisor_override=None)
        got = {k: getattr(module, k) for k in expected} if isinstance(module, nn.AvgPool2d) else None
    elif isinstance(op, P.Linear):
        expected = dict(in_features=op.in_features, out_features=op.out_features, bias=True)
        got = {**{k: getattr(module, k) for k in expected if k != "bias"}, "bias": module.bias is not None} \
            if isinstance(module, nn.Linear) else None
    else:  # the plans of torchvision/timm specs hold no other parameterised or named ops
        raise SpecError(f"{name}: the spec's {type(op).__name__} has no module here")
    if got is None:
        raise SpecError(f"{name} is a {type(module).__name__} where the spec's network has a {type(op).__name__}")
    wrong = [f"{k}={got[k]!r} (spec: {expected[k]!r})" for k in expected if _norm(got[k]) != _norm(expected[k])]
    if wrong:
        raise SpecError(f"{name} has " + ", ".join(wrong) + ": the spec has no counterpart for this configuration")


def _norm(value: Any) -> Any:
    """PyTorch stores some conv/pool arguments as ints, others as tuples."""
    return value[0] if isinstance(value, tuple) and len(set(value)) == 1 else value


# -- shared helpers -----------------------------------------------------------------------


def _no_hints(hints: dict[str, Any], library: str) -> None:
    if hints:
        raise SpecError(f"hints {sorted(hints)} apply to a bare state_dict; a {library} model states its own "
                        "configuration (use spec.replace(...) on the result to change fields)")


def _torch_bn(bn: BatchNormSpec) -> BatchNormSpec:
    """The spec's BatchNorm settings that nn.BatchNorm2d can take (eps, momentum); the rest at defaults."""
    return BatchNormSpec(epsilon=bn.epsilon, running_stats_decay=bn.running_stats_decay)


def _norm_layer(bn: BatchNormSpec) -> Any:
    if (bn.epsilon, bn.running_stats_decay) == (1e-5, 0.9):
        return nn.BatchNorm2d
    return functools.partial(nn.BatchNorm2d, eps=bn.epsilon, momentum=torch_momentum(bn.running_stats_decay))


def _differences(spec: ResNetSpec, template: ResNetSpec, library: str) -> list[str]:
    """Fields where `spec` differs from what `library` builds, unless the networks are the same."""
    if _same_network(spec, template):
        return []
    return [f"{d.path}={d.mine!r} ({library}: {d.theirs!r})" for d in spec.differences(template)]


def _same_network(a: ResNetSpec, b: ResNetSpec) -> bool:
    pa, pb = make_plan(a), make_plan(b)
    return list(pa.ops()) == list(pb.ops()) and [x.shortcut_reads_pre for x in pa.blocks()] == \
        [x.shortcut_reads_pre for x in pb.blocks()] and a.zero_init_last_bn == b.zero_init_last_bn


def _numpy_state(state: Mapping[str, Any]) -> Weights:
    """A state_dict (torch tensors or numpy arrays) as numpy copies (never views, trap 17)."""
    if not isinstance(state, Mapping):
        raise SpecError(f"expected a model or a state_dict (a mapping of name -> tensor), got {type(state).__name__}")
    out: Weights = {}
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            out[name] = value.detach().cpu().numpy().copy()
        elif isinstance(value, np.ndarray):
            out[name] = value.copy()
        else:
            raise WeightsError(f"state_dict[{name!r}] is a {type(value).__name__}, not a tensor or numpy array")
    return out


def _model_weights(model: nn.Module, spec: ResNetSpec, source: str) -> Weights:
    return check_weights(spec, _numpy_state(model.state_dict()), source=source)


def _build_loaded(factory: Callable[[], nn.Module], checked: Weights) -> nn.Module:
    """Build a library model on the meta device (no random init of weights about to be
    replaced), then give it copies of the checked canonical weights; eval mode."""
    with torch.device("meta"):
        model = factory()
    state: dict[str, torch.Tensor] = {}
    for name, placeholder in model.state_dict().items():
        if name in checked:  # torch.tensor copies: the model never aliases the caller's arrays (trap 17)
            state[name] = torch.tensor(checked[name], dtype=placeholder.dtype)
        elif name.endswith(IGNORED_SUFFIXES):
            state[name] = torch.zeros(placeholder.shape, dtype=placeholder.dtype)
    if set(state) != set(model.state_dict()) or len(checked) != len(state) - sum(
            n.endswith(IGNORED_SUFFIXES) for n in state):  # unreachable after the spec checks; guards their agreement
        raise RuntimeError(f"{type(model).__name__}'s state_dict and the spec's tensors disagree")
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()
