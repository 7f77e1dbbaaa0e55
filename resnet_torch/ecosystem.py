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
import math
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
from shared_specs.spec import HeadSpec, decay_from_torch_momentum, torch_momentum

if TYPE_CHECKING:
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


def _verify_modules(model: nn.Module, spec: ResNetSpec, allowed: tuple[type, ...],
                    canonical: Callable[[str], str | None] | None = None,
                    library: Mapping[str, type] | None = None) -> None:
    """Every module of `model` is a layer of `spec`'s plan with the same configuration, or a
    parameter-free container, ReLU or identity: nothing the spec does not say is left over.

    `canonical` maps a module's name to its canonical layer (timm's ResNetV2 names its own
    way); `library` names the library's classes for ops torch.nn has no module for
    ("std_conv", "batchnorm_act", "groupnorm_act", "evonorm_s0", "frn", "se", "eca", "blur").
    A module matched to an op is checked whole, its children with it (an SE module's convs,
    a norm-act module's activation).
    """
    plan = make_plan(spec)
    ops = {op.name: op for op in plan.ops() if not isinstance(op, (P.ReLU, P.GlobalAvgPool))}
    relu_after = {a.name for seq in _op_sequences(plan) for a, b in zip(seq, seq[1:]) if isinstance(b, P.ReLU)}
    seen: set[str] = set()
    padded: set[str] = set()
    checked: tuple[str, ...] = ()
    for name, module in model.named_modules():
        if checked and name.startswith(checked):
            continue
        layer = canonical(name) if canonical else name
        if layer in ops:
            if _check_module(name, module, ops[layer], layer in relu_after, library or {}):
                padded.add(layer)
            seen.add(layer)
            checked += (name + ".",)
        elif isinstance(module, _LAYERS) or type(module) in (library or {}).values():
            raise SpecError(f"{name} is an {type(module).__name__} the spec's network has no place for")
        else:
            _check_kind(name, module, allowed)
    missing = sorted(set(ops) - seen)
    if missing:
        raise SpecError(f"the model has no {missing[0]}, which the spec's network needs")
    unpadded = sorted(n for n, op in ops.items() if isinstance(op, P.MaxPool) and op.pad_value == "zero"
                      and n not in padded)
    if unpadded:
        raise SpecError(f"{unpadded[0]} pads with zeros in the spec's network (a ConstantPad2d(p, 0) before an "
                        "unpadded nn.MaxPool2d), but the model pads with -inf")


_LAYERS = (nn.Conv2d, nn.BatchNorm2d, nn.GroupNorm, nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.ConstantPad2d)


def _check_kind(name: str, module: nn.Module, allowed: tuple[type, ...]) -> None:
    """A module that is no layer of the plan must be a container, ReLU, identity or global pool."""
    if isinstance(module, nn.AdaptiveAvgPool2d):
        if module.output_size not in (1, (1, 1)):
            raise SpecError(f"{name} pools to {module.output_size}; the spec's head pools globally")
    elif not (type(module) in (nn.Sequential, nn.ReLU, nn.Identity, nn.Flatten) or isinstance(module, allowed)):
        raise SpecError(f"{name} is a {type(module).__name__}, which the spec has no counterpart for")


def _check_kinds(model: nn.Module, allowed: tuple[type, ...], library: Mapping[str, type]) -> None:
    """Every module is a layer kind some plan op has, or passes `_check_kind`: run before reading
    a spec off the weights, so that a module the spec has no counterpart for is named as such
    rather than as tensors that do not fit (the parts of a library's op module are its own)."""
    inside: tuple[str, ...] = ()
    for name, module in model.named_modules():
        if inside and name.startswith(inside):
            continue
        if type(module) in library.values():
            inside += (name + ".",)
        elif not isinstance(module, _LAYERS):
            _check_kind(name, module, allowed)


def _op_sequences(plan: P.Plan) -> Iterator[tuple[P.Op, ...]]:
    """The plan's runs of consecutive ops (a ReLU in one follows the op before it)."""
    yield plan.stem
    for block in plan.blocks():
        yield from (block.pre, block.main, block.shortcut, block.post)
    yield plan.post
    yield plan.head


def _check_module(name: str, module: nn.Module, op: P.Op, relu_after: bool, library: Mapping[str, type]) -> bool:
    """Raise SpecError naming `name` unless `module` computes `op` as configured; a ReLU inside a
    norm-act module must be there exactly when the plan has one after the op. Returns whether the
    module is the zero padding of a max-pool (BiT's ConstantPad2d before its pool)."""
    expected, got = _configuration(module, op, library)
    if got is None:
        raise SpecError(f"{name} is a {type(module).__name__} where the spec's network has a {type(op).__name__}")
    wrong = [f"{k}={got[k]!r} (spec: {expected[k]!r})" for k in expected if _norm(got[k]) != _norm(expected[k])]
    if wrong:
        raise SpecError(f"{name} has " + ", ".join(wrong) + ": the spec has no counterpart for this configuration")
    act = getattr(module, "act", None)
    if act is not None and isinstance(op, (P.BatchNorm, P.GroupNorm)):  # timm's BatchNormAct2d, GroupNormAct
        if type(act) is not (nn.ReLU if relu_after else nn.Identity) or type(module.drop) is not nn.Identity:
            raise SpecError(f"{name}.act is a {type(act).__name__}; the spec's network has "
                            f"{'a ReLU' if relu_after else 'no activation'} after {op.name} (and no drop layer)")
    return isinstance(module, nn.ConstantPad2d)


def _configuration(module: nn.Module, op: P.Op, library: Mapping[str, type]) -> tuple[dict[str, Any], Any]:
    """(what `op` needs of the module's attributes, what the module has, or None if it is no such module)."""
    def read(expected: dict[str, Any], ok: bool) -> tuple[dict[str, Any], Any]:
        return expected, ({k: getattr(module, k, None) for k in expected} if ok else None)

    def is_a(*keys: str) -> bool:
        return any(type(module) is library[k] for k in keys if k in library)

    if isinstance(op, P.Conv):
        expected: dict[str, Any] = dict(in_channels=op.in_channels, out_channels=op.out_channels,
                                        kernel_size=(op.kernel_size,) * 2, stride=(op.stride,) * 2,
                                        padding=(op.padding,) * 2, dilation=(1, 1), groups=op.groups,
                                        padding_mode="zeros", bias=op.bias)
        ok = type(module) is nn.Conv2d if op.standardize is None else is_a("std_conv")
        if op.standardize is not None:
            expected["eps"] = op.standardize
        expected, got = read(expected, ok)
        if got is not None:
            got["bias"] = module.bias is not None
        return expected, got
    if isinstance(op, P.BatchNorm):
        return read(dict(num_features=op.channels, eps=op.epsilon, momentum=torch_momentum(op.running_stats_decay),
                         affine=True, track_running_stats=True),
                    type(module) is nn.BatchNorm2d or is_a("batchnorm_act"))
    if isinstance(op, P.GroupNorm):
        return read(dict(num_groups=op.groups, num_channels=op.channels, eps=op.epsilon, affine=True),
                    type(module) is nn.GroupNorm or is_a("groupnorm", "groupnorm_act"))
    if isinstance(op, P.EvoNormS0):
        expected, got = read(dict(groups=op.groups, eps=op.epsilon, apply_act=op.act, channels=op.channels),
                             is_a("evonorm_s0"))
        if got is not None:
            got["channels"] = module.weight.shape[0]
        return expected, got
    if isinstance(op, P.FilterResponseNorm):
        expected, got = read(dict(eps=op.epsilon, rms=True, apply_act=op.tlu, channels=op.channels), is_a("frn"))
        if got is not None:
            got["channels"] = module.weight.shape[0]
        return expected, got
    if isinstance(op, P.SqueezeExcite):
        if not is_a("se"):
            return {}, None
        fc1, fc2 = module.fc1, module.fc2
        return (dict(fc1=(op.channels, op.reduced, True), fc2=(op.reduced, op.channels, True), bn="Identity",
                     act="ReLU", gate="Sigmoid", add_maxpool=False),
                dict(fc1=_conv1x1(fc1), fc2=_conv1x1(fc2), bn=type(module.bn).__name__, act=type(module.act).__name__,
                     gate=type(module.gate).__name__, add_maxpool=module.add_maxpool))
    if isinstance(op, P.EfficientChannelAttention):
        if not is_a("eca"):
            return {}, None
        conv = module.conv
        return (dict(kernel_size=(op.kernel_size,), padding=((op.kernel_size - 1) // 2,), channels=(1, 1),
                     bias=False, conv2=None, gate="Sigmoid"),
                dict(kernel_size=conv.kernel_size, padding=conv.padding, channels=(conv.in_channels, conv.out_channels),
                     bias=conv.bias is not None, conv2=module.conv2, gate=type(module.gate).__name__))
    if isinstance(op, P.BlurPool):
        return read(dict(channels=op.channels, filt_size=3, stride=op.stride, pad_mode="reflect"), is_a("blur"))
    if isinstance(op, P.MaxPool):
        if isinstance(module, nn.ConstantPad2d):  # BiT's 'fixed' stem: the zero padding of the pool after it
            return (dict(padding=(op.padding,) * 4, value=0.0 if op.pad_value == "zero" else -math.inf),
                    dict(padding=module.padding, value=module.value))
        padding = 0 if op.pad_value == "zero" else op.padding
        return read(dict(kernel_size=op.size, stride=op.stride, padding=padding, dilation=1, ceil_mode=False),
                    isinstance(module, nn.MaxPool2d))
    if isinstance(op, P.AvgPool):
        expected = dict(kernel_size=op.size, stride=op.stride, padding=0, ceil_mode=op.ceil_mode,
                        divisor_override=None)
        if op.ceil_mode:  # unpadded and floored, the count cannot include padding
            expected["count_include_pad"] = False
        return read(expected, isinstance(module, nn.AvgPool2d))
    if isinstance(op, P.Linear):
        if isinstance(module, nn.Conv2d):  # timm's ResNetV2 classifies with a 1x1 conv (head.fc)
            return (dict(shape=(op.in_features, op.out_features, True), kernel_size=(1, 1), stride=(1, 1)),
                    dict(shape=_conv1x1(module), kernel_size=module.kernel_size, stride=module.stride))
        expected, got = read(dict(in_features=op.in_features, out_features=op.out_features, bias=op.bias),
                             isinstance(module, nn.Linear))
        if got is not None:
            got["bias"] = module.bias is not None
        return expected, got
    # the plans of torchvision/timm specs hold no other parameterised or named ops
    raise SpecError(f"{op.name}: the spec's {type(op).__name__} has no module here")


def _conv1x1(conv: nn.Module) -> tuple[int, int, bool] | None:
    """(in, out, bias) of an unpadded, ungrouped 1x1 nn.Conv2d; None for anything else."""
    if type(conv) is not nn.Conv2d or _norm(conv.kernel_size) != 1 or _norm(conv.padding) != 0 or conv.groups != 1:
        return None
    return conv.in_channels, conv.out_channels, conv.bias is not None


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
    _init_constant_buffers(model)
    return model.eval()


def _init_constant_buffers(model: nn.Module) -> None:
    """Fill the buffers no state_dict holds (timm's BlurPool2d filter), still on the meta device
    after loading, as their modules compute them (timm's `init_non_persistent_buffers`)."""
    for name, module in model.named_modules():
        meta = [b for b, t in module.named_buffers(recurse=False) if t is not None and t.is_meta]
        if not meta:
            continue
        if not hasattr(module, "init_non_persistent_buffers"):
            raise RuntimeError(f"{name}'s buffers {meta} are in no state_dict and {type(module).__name__} cannot "
                               "compute them")
        for b in meta:
            module._buffers[b] = torch.empty_like(module._buffers[b], device="cpu")
        module.init_non_persistent_buffers()
