"""Measurements of the traps timm's layers bring (23-30): GroupNorm, EvoNorm-S0, FRN, BlurPool,
squeeze-excitation, ECA and weight-standardised convs, each on a timm preset with random weights.

Where the mistake is a spec change or a weight mistake, the naive port comes from
`resnet_rosetta.teaching.naive` (so `resnet-rosetta diff --naive` shows it too). Where it is a
formula written by hand (a biased variance written as `x.var()`, zeros where timm reflects), the
source model gets that one layer's formula swapped (`_swap`): a naive port computes the same
function in either framework, and the per-layer diff still lines it up by canonical name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from resnet_rosetta.frameworks import import_frameworks
from resnet_rosetta.interop.layer_outputs import relative_difference
from resnet_rosetta.teaching.measured import (
    BATCH,
    Anchor,
    Measured,
    PortComparison,
    anchor,
    compare,
    describe_port,
    g,
    setting,
)
from resnet_rosetta.teaching.traps_porting import _port_values, _ports
from shared_specs import ResNetSpec, WeightsError, check_weights, count_params, layer_table, make_plan, resolve_spec
from shared_specs import plan as P


def _swap(a: Anchor, layer: type, forward: Callable[[Any, Any], Any], spec: ResNetSpec | None = None) -> Any:
    """The anchor's PyTorch model with every `layer` module computing `forward(module, x)`
    instead: one formula written by hand, everything else (weights, names) as ported."""
    model = a.torch_model(spec)
    naive = type(f"Naive{layer.__name__}", (layer,), {"forward": forward})
    for module in model.modules():
        if type(module) is layer:
            module.__class__ = naive
    return model


def _against_source(a: Anchor, *others: Any) -> list[PortComparison]:
    """Each model compared with the anchor's PyTorch model (the source), layer by layer."""
    reference = a.outputs(a.torch_model())
    return [compare(reference, a.outputs(model)) for model in others]


def _first_op(spec: ResNetSpec, kind: type) -> P.Op:
    return next(op for op in make_plan(spec).ops() if isinstance(op, kind))


def _bite(c: PortComparison) -> str | None:
    return c.bite[0] if c.bite else None


# -- 23, 24: GroupNorm ---------------------------------------------------------------------------


def groupnorm_statistics(preset: ResNetSpec | str = "resnet50_gn", hw: int = 64) -> Measured:
    """Trap 23: GroupNorm has no running statistics: train and eval agree, a BatchNorm port does not."""
    from resnet_rosetta.frameworks import KerasFramework, TorchFramework

    a = anchor(preset, hw)
    torch_fw, keras_fw = TorchFramework(), KerasFramework()
    tmodel, kmodel = a.torch_model(), a.keras_model()

    def modes(framework: Any, model: Any) -> float:
        return relative_difference(framework.forward(model, a.x), framework.forward(model, a.x, training=True))

    gn_torch, gn_keras = modes(torch_fw, tmodel), modes(keras_fw, kmodel)
    kmodel.trainable = False  # a "frozen" Keras GroupNorm still normalises with its own statistics
    gn_frozen = modes(keras_fw, kmodel)
    bn = anchor(a.spec.replace(norm={"kind": "batchnorm"}), hw)
    bn_torch = modes(torch_fw, bn.torch_model())
    good, naive = _ports(a, "groupnorm-as-batchnorm")
    return Measured(
        setting(a.spec, hw),
        (f"eval vs training mode, same batch: {g(gn_torch)} of the output scale in PyTorch, {g(gn_keras)} in Keras, "
         f"{g(gn_frozen)} in Keras with trainable=False (GroupNorm keeps no running statistics: every example is "
         "normalised by its own groups in both modes)",
         f"the same network with BatchNorm (random running statistics): {g(bn_torch)} between the modes",
         describe_port("naive port, GroupNorm as BatchNorm with the running statistics it was built with "
                       "(mean 0, variance 1)", naive),
         describe_port("our port (Keras's GroupNormalization computed in two passes)", good)),
        {"gn_modes_torch": gn_torch, "gn_modes_keras": gn_keras, "gn_modes_keras_frozen": gn_frozen,
         "bn_modes_torch": bn_torch, **_port_values("naive", naive), **_port_values("ours", good)},
        _bite(naive),
    )


def groupnorm_numerics(preset: ResNetSpec | str = "resnet50_gn", hw: int = 64,
                       offsets: tuple[float, ...] = (0.0, 10.0, 100.0)) -> Measured:
    """Trap 24: Keras's GroupNormalization default epsilon, and its variance against PyTorch's on
    groups whose mean dwarfs their spread (the current backend's ops.moments)."""
    torch, keras = import_frameworks()
    from resnet_keras.layers import TwoPassGroupNormalization

    a = anchor(preset, hw)
    op = _first_op(a.spec, P.GroupNorm)
    assert isinstance(op, P.GroupNorm)
    rng = np.random.default_rng(5)
    single: dict[str, list[float]] = {"torch": [], "keras": [], "ours": []}
    for offset in offsets:
        x = (offset + rng.normal(size=(BATCH, op.channels, 16, 16))).astype(np.float32)
        exact = torch.nn.functional.group_norm(torch.from_numpy(x).double(), op.groups, eps=op.epsilon).numpy()
        single["torch"].append(relative_difference(
            exact, torch.nn.functional.group_norm(torch.from_numpy(x), op.groups, eps=op.epsilon).numpy()))
        for key, cls in (("keras", keras.layers.GroupNormalization), ("ours", TwoPassGroupNormalization)):
            y = keras.ops.convert_to_numpy(cls(op.groups, epsilon=op.epsilon)(x.transpose(0, 2, 3, 1)))
            single[key].append(relative_difference(exact, y.transpose(0, 3, 1, 2)))
    good, naive = _ports(a, "gn-epsilon")
    last = len(offsets) - 1
    return Measured(
        setting(a.spec, hw),
        (describe_port("naive port, Keras's default GroupNormalization epsilon 1e-3 instead of 1e-5", naive),
         describe_port("our port", good),
         f"one GroupNorm ({op.channels} channels, {op.groups} groups, 16x16) on inputs whose groups have mean "
         f"{', '.join(f'{o:g}' for o in offsets)} and spread 1, against float64: PyTorch "
         f"{', '.join(g(v) for v in single['torch'])}; keras.layers.GroupNormalization "
         f"{', '.join(g(v) for v in single['keras'])} (its ops.moments; on the torch backend E[x^2] - E[x]^2); "
         f"our TwoPassGroupNormalization {', '.join(g(v) for v in single['ours'])}",
         f"a pre-activation network normalises the residual stream, whose groups can hold such means: at "
         f"{offsets[last]:g}x the spread Keras's own layer is {g(single['keras'][last] / single['torch'][last])}x "
         "PyTorch's float32 error here"),
        {**_port_values("naive", naive), **_port_values("ours", good), "offsets": offsets,
         **{f"single_{k}": v for k, v in single.items()}},
        _bite(naive),
    )


# -- 25, 26: EvoNorm-S0, FRN ------------------------------------------------------------------------


def _evonorm_unbiased(module: Any, x: Any) -> Any:
    """EvoNorm-S0 with torch's default `x.var()` (unbiased, n - 1) for the group variance."""
    return _evonorm(module, x, interleaved=False, correction=1)


def _evonorm_interleaved(module: Any, x: Any) -> Any:
    """EvoNorm-S0 whose groups take every G-th channel: a channels-last reshape to (..., C/G, G)."""
    return _evonorm(module, x, interleaved=True, correction=0)


def _evonorm(module: Any, x: Any, *, interleaved: bool, correction: int) -> Any:
    import torch

    shape = (1, -1, 1, 1)
    if module.v is not None:
        n, c, h, w = x.shape
        groups, size = module.groups, c // module.groups
        grouped = x.reshape(n, size, groups, h, w) if interleaved else x.reshape(n, groups, size, h, w)
        dims = (1, 3, 4) if interleaved else (2, 3, 4)
        var = grouped.var(dim=dims, correction=correction, keepdim=True)
        std = (var + module.eps).sqrt().expand_as(grouped).reshape(n, c, h, w)
        x = x * torch.sigmoid(x * module.v.view(shape)) / std
    return x * module.weight.view(shape) + module.bias.view(shape)


def evonorm(preset: ResNetSpec | str = "resnetv2_50d_evos", hw: int = 64) -> Measured:
    """Trap 25: EvoNorm-S0's group standard deviation: biased (timm, the paper's TF code) or not."""
    from resnet_torch.layers import EvoNorm2dS0

    a = anchor(preset, hw)
    unbiased, interleaved, good = _against_source(a, _swap(a, EvoNorm2dS0, _evonorm_unbiased),
                                                  _swap(a, EvoNorm2dS0, _evonorm_interleaved), a.keras_model())
    rows = [row for row in layer_table(a.spec, (hw, hw)) if row.kind == "EvoNormS0"]
    ops = {op.name: op for op in make_plan(a.spec).ops() if isinstance(op, P.EvoNormS0) and op.act}
    sizes = [(row.name, row.output_shape[0] // ops[row.name].groups * row.output_shape[1] * row.output_shape[2])
             for row in rows if row.name in ops]
    (first, n_first), (last, n_last) = sizes[0], min(sizes, key=lambda s: s[1])
    return Measured(
        setting(a.spec, hw),
        (f"each group's variance runs over n = channels/groups x H x W values: n = {n_first} at {first}, "
         f"{n_last} at {last}; the unbiased one is n/(n - 1) larger, so x / std shrinks by sqrt(n/(n - 1)) = "
         f"{np.sqrt(n_first / (n_first - 1)):.6g} and {np.sqrt(n_last / (n_last - 1)):.6g}",
         describe_port("naive port, the group variance as x.var() (PyTorch's default: unbiased)", unbiased),
         describe_port("naive port, groups of every G-th channel (a channels-last reshape to (..., C/G, G))",
                       interleaved),
         describe_port("our port (biased variance, contiguous groups in both frameworks)", good)),
        {**_port_values("unbiased", unbiased), **_port_values("interleaved", interleaved),
         **_port_values("ours", good), "n_first": n_first, "n_last": n_last, "first": first, "last": last},
        _bite(unbiased),
    )


def _frn_as_instance_norm(module: Any, x: Any) -> Any:
    """FRN written as instance normalisation: the mean subtracted, the variance for the mean square."""
    import torch

    shape = (1, -1, 1, 1)
    var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
    x = (x - mean) * torch.rsqrt(var + module.eps) * module.weight.view(shape) + module.bias.view(shape)
    return torch.maximum(x, module.tau.view(shape)) if module.tau is not None else x


def frn(preset: ResNetSpec | str = "resnetv2_50d_frn", hw: int = 64) -> Measured:
    """Trap 26: FRN's mean of squares (no mean subtracted) and its epsilon (timm 1e-5, TF Addons 1e-6)."""
    from resnet_torch.layers import FilterResponseNorm2d

    a = anchor(preset, hw)
    (instance,) = _against_source(a, _swap(a, FilterResponseNorm2d, _frn_as_instance_norm))
    good, epsilon = _ports(a, "frn-epsilon")
    smallest = min(row.output_shape[1] * row.output_shape[2] for row in layer_table(a.spec, (hw, hw))
                   if row.kind == "FilterResponseNorm")
    eps = a.spec.norm.epsilon
    ratios = [(m, float(np.sqrt((m + eps) / (m + 1e-6)))) for m in (1.0, 1e-4, 1e-5)]
    return Measured(
        setting(a.spec, hw),
        (describe_port("naive port, FRN as instance normalisation (mean subtracted, variance for the mean "
                       "square)", instance),
         describe_port(f"naive port, TF Addons' default epsilon 1e-6 instead of timm's {a.spec.norm.epsilon:g}",
                       epsilon),
         describe_port("our port", good),
         f"FRN's statistics are one channel's mean square m over H x W ({smallest} values on the last feature "
         f"maps): 1e-6 instead of {a.spec.norm.epsilon:g} scales a channel by sqrt((m + {a.spec.norm.epsilon:g}) / "
         f"(m + 1e-6)): {', '.join(f'{ratio:.4g} at m = {m:g}' for m, ratio in ratios)}; random weights keep m "
         "near 1, trained networks have near-silent channels"),
        {**_port_values("instance", instance), **_port_values("epsilon", epsilon), **_port_values("ours", good),
         "smallest_map": smallest, "epsilon_ratios": ratios},
        _bite(instance),
    )


# -- 27: BlurPool ----------------------------------------------------------------------------------


def _blur_zero_padded(module: Any, x: Any) -> Any:
    """BlurPool as Conv2d(padding=1) writes it: zeros around the image instead of its reflection."""
    import torch.nn.functional as F

    return F.conv2d(x, module.filt.to(x.dtype), stride=module.stride, padding=1, groups=module.channels)


def _blur_same(module: Any, x: Any) -> Any:
    """BlurPool as DepthwiseConv2D(padding='same') writes it: zeros, (0, 1) for stride 2 on even sizes."""
    import torch.nn.functional as F

    from resnet_torch.layers import _pad_same

    return F.conv2d(_pad_same(x, 3, module.stride), module.filt.to(x.dtype), stride=module.stride,
                    groups=module.channels)


def blurpool(preset: ResNetSpec | str = "resnetblur50", hw: int = 64) -> Measured:
    """Trap 27: BlurPool's reflect padding, against zeros (symmetric or 'same') and no anti-aliasing."""
    from resnet_torch.layers import BlurPool2d

    a = anchor(preset, hw)
    zeros, same = _against_source(a, _swap(a, BlurPool2d, _blur_zero_padded), _swap(a, BlurPool2d, _blur_same))
    good, plain = _ports(a, "no-anti-alias")
    blur = _first_op(a.spec, P.BlurPool).name
    return Measured(
        setting(a.spec, hw),
        (describe_port("naive port, BlurPool with zero padding (Conv2d(padding=1))", zeros),
         describe_port("naive port, BlurPool as a depthwise conv with Keras 'same' (zeros, (0, 1) on even sizes)",
                       same),
         describe_port("naive port, anti-aliasing left out (the stride back in the conv)", plain),
         describe_port("our port (keras.ops.pad mode='reflect' + depthwise_conv)", good),
         f"reflect padding repeats the pixels next to each border; zeros take the outer taps, a quarter of the "
         f"[1, 2, 1] / 4 filter per side, away from every border row and column (first at {blur})"),
        {**_port_values("zeros", zeros), **_port_values("same", same), **_port_values("plain", plain),
         **_port_values("ours", good)},
        _bite(zeros),
    )


# -- 28, 29: squeeze-excitation and ECA ----------------------------------------------------------------


def se_width(preset: ResNetSpec | str = "seresnet18") -> Measured:
    """Trap 28: SE's hidden width: int(C / 16) (the SENet paper's code) or timm's make_divisible."""
    spec = resolve_spec(preset)
    attention = spec.attention
    if attention is None or attention.kind != "se":
        raise ValueError(f"trap 28 needs a squeeze-excitation spec; {spec.name} has attention={attention!r}")
    ops = [op for op in make_plan(spec).ops() if isinstance(op, P.SqueezeExcite)]
    naive = {op.name: max(1, int(op.channels * attention.reduction)) for op in ops}
    differ = [op for op in ops if naive[op.name] != op.reduced]
    shown = sorted({(op.channels, op.reduced, naive[op.name]) for op in ops})
    weights = _random(spec)
    naive_spec = spec.replace(attention={"divisor": 1}) if differ else spec  # int(C / 16) for C a multiple of 16
    try:
        check_weights(naive_spec, weights, source=f"{spec.name} weights")
        error = "loads without an error"
    except WeightsError as err:
        error = f"WeightsError: {str(err)[:160]}..."
    params, naive_params = count_params(spec).trainable, count_params(naive_spec).trainable
    return Measured(
        f"{spec.name}, {len(ops)} SE layers (reduction {attention.reduction:g}, divisor {attention.divisor})",
        (f"hidden widths (channels: timm's make_divisible -> int(C * {attention.reduction:g})): "
         + ", ".join(f"{c}: {r} -> {n}" for c, r, n in shown),
         f"{len(differ)} of {len(ops)} SE layers differ, the first at {differ[0].name}" if differ
         else "no SE layer differs at these widths",
         f"{params:,} trainable parameters with timm's widths, {naive_params:,} with int(C / 16)",
         f"timm's weights into the int(C / 16) network: {error} (a loud mistake: the shapes differ)"),
        {"layers": len(ops), "differ": len(differ), "widths": shown, "params": params,
         "naive_params": naive_params, "loads": error == "loads without an error"},
        differ[0].name if differ else None,
    )


def _random(spec: ResNetSpec) -> dict[str, np.ndarray]:
    from shared_specs.synthetic import random_weights

    return random_weights(spec)


def eca_conv1d(preset: ResNetSpec | str = "ecaresnet50d", hw: int = 64) -> Measured:
    """Trap 29: ECA's Conv1d kernel (1, 1, k) -> Keras (k, 1, 1), and the axis it slides along."""
    torch, keras = import_frameworks()
    from shared_specs.layout import conv1d_to_keras

    a = anchor(preset, hw)
    op = _first_op(a.spec, P.EfficientChannelAttention)
    assert isinstance(op, P.EfficientChannelAttention)
    w = a.weights[f"{op.name}.conv.weight"]
    candidates = {"reshape": w.reshape(op.kernel_size, 1, 1), "w.T": w.T, "transpose (2, 1, 0)": conv1d_to_keras(w)}
    eca_same = all(np.array_equal(k, candidates["transpose (2, 1, 0)"]) for k in candidates.values())
    # a general Conv1d (4 -> 8 channels, k = 5): w.T is the right transpose, a reshape is not
    rng = np.random.default_rng(9)
    wide = rng.normal(size=(8, 4, 5)).astype(np.float32)
    seq = rng.normal(size=(BATCH, 4, 17)).astype(np.float32)
    reference = torch.nn.functional.conv1d(torch.from_numpy(seq), torch.from_numpy(wide), padding=2).numpy()

    def keras_conv1d(kernel: np.ndarray) -> float:
        out = keras.ops.conv(seq.transpose(0, 2, 1), kernel, padding="same")
        return relative_difference(reference, keras.ops.convert_to_numpy(out).transpose(0, 2, 1))

    general = {"reshape": keras_conv1d(wide.reshape(5, 4, 8)), "w.T": keras_conv1d(np.ascontiguousarray(wide.T))}
    # PyTorch's y.view(n, 1, c): channels as the length of one sequence; in Keras (N, 1, C) is one step of C channels
    layer = keras.layers.Conv1D(1, op.kernel_size, padding="same", use_bias=False)
    layer.build((None, 1, op.channels))
    try:
        layer.kernel.assign(conv1d_to_keras(w))
        error = "no error"
    except (ValueError, TypeError) as err:
        error = type(err).__name__
    (good,) = _against_source(a, a.keras_model())
    return Measured(
        setting(a.spec, hw),
        (f"{op.name}.conv.weight {w.shape} (out, in, k): a reshape, w.T and the transpose (2, 1, 0) give "
         + ("the same Keras kernel: with one input and one output channel no layout mistake is possible"
            if eca_same else "different kernels"),
         f"a general Conv1d (8, 4, 5) into keras Conv1D (5, 4, 8): w.T is the right transpose for 1-D kernels "
         f"({g(general['w.T'])} of the output scale), a reshape is not ({g(general['reshape'])}); for 2-D kernels "
         "w.T mirrors (trap 1)",
         f"the pooled channels laid out as PyTorch's view(n, 1, c) are one step of {op.channels} channels for Keras's "
         f"Conv1D: its kernel becomes {tuple(layer.kernel.shape)} and the (k, 1, 1) kernel raises {error} (loud); "
         f"ECA needs (n, c, 1), channels as steps",
         describe_port("our port", good)),
        {"eca_layouts_agree": eca_same, "general_reshape_rel": general["reshape"], "general_t_rel": general["w.T"],
         "view_error": error, **_port_values("ours", good), "kernel_size": op.kernel_size},
    )


# -- 30: weight standardisation ----------------------------------------------------------------------


def _std_conv_unbiased(module: Any, x: Any) -> Any:
    """StdConv2d with torch's default w.std() (unbiased) for the kernel's spread."""
    import torch

    w = module.weight
    var, mean = torch.var_mean(w, dim=(1, 2, 3), keepdim=True, correction=1)
    return module._conv_forward(x, (w - mean) / torch.sqrt(var + module.eps), module.bias)


def std_conv(preset: ResNetSpec | str = "resnetv2_50x1_bit", hw: int = 64) -> Measured:
    """Trap 30: weight standardisation forgotten, written with an unbiased std, or with timm's default epsilon."""
    from resnet_torch.layers import StdConv2d

    a = anchor(preset, hw)
    eps = a.spec.std_conv_epsilon
    unbiased, default_eps = _against_source(a, _swap(a, StdConv2d, _std_conv_unbiased),
                                            a.torch_model(a.spec.replace(std_conv_epsilon=1e-6)))
    good, forgotten = _ports(a, "std-conv-forgotten")
    stem = _first_op(a.spec, P.Conv)
    assert isinstance(stem, P.Conv)
    fan_in = stem.in_channels // stem.groups * stem.kernel_size**2
    variances = {op.name: float(a.weights[f"{op.name}.weight"].reshape(op.out_channels, -1).var(axis=1).mean())
                 for op in make_plan(a.spec).ops() if isinstance(op, P.Conv) and op.standardize is not None}
    quietest = min(variances, key=variances.__getitem__)
    return Measured(
        setting(a.spec, hw),
        (describe_port("naive port, plain convs (the standardisation forgotten)", forgotten),
         describe_port("naive port, the kernel's spread as w.std() (PyTorch's default: unbiased)", unbiased)
         + f"; sqrt(n/(n - 1)) with n = in x k x k, {np.sqrt(fan_in / (fan_in - 1)):.4g} for the {fan_in}-value "
         "kernels of the stem",
         describe_port(f"epsilon 1e-6 (timm's StdConv2d default) instead of the BiT models' {eps:g}", default_eps)
         + f"; the kernels' variances go down to {g(variances[quietest])} ({quietest}), where 1e-6 is "
         f"{g(1e-6 / variances[quietest])} of it",
         describe_port("our port (StandardizedConv2D: biased variance, as tf.nn.moments and timm)", good)),
        {**_port_values("forgotten", forgotten), **_port_values("unbiased", unbiased),
         **_port_values("default_eps", default_eps), **_port_values("ours", good), "stem_fan_in": fan_in,
         "smallest_kernel_variance": variances[quietest]},
        _bite(forgotten),
    )
