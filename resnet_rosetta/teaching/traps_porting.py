"""Measurements of the porting traps (1-6, 14, 19, 20): a naive port against a correct one.

Each function builds a real network (a preset, random weights and BN statistics),
ports it naively (`resnet_rosetta.teaching.naive`) and correctly, and reports how far each
lands from the source model and at which layer the naive one first goes wrong.
"""

from __future__ import annotations

import numpy as np

from resnet_rosetta.frameworks import get_framework, import_frameworks
from resnet_rosetta.interop.layer_outputs import relative_difference
from resnet_rosetta.teaching.measured import (
    BITE,
    Anchor,
    Measured,
    PortComparison,
    anchor,
    compare,
    describe_port,
    g,
    setting,
)
from resnet_rosetta.teaching.naive import flatten_dense_kernel, naive_port
from shared_specs import ResNetSpec, count_flops, count_params, get_spec, make_plan, output_shape
from shared_specs import plan as P
from shared_specs.layout import conv_to_keras


def _ports(a: Anchor, trap: str, framework: str = "keras") -> tuple[PortComparison, PortComparison]:
    """(correct port, naive port into `framework`), each compared with the source model in the other one."""
    target = get_framework(framework)
    source, correct = a.model(target.other), a.model(target)
    reference = a.outputs(source)
    return (compare(reference, a.outputs(correct)),
            compare(reference, a.outputs(naive_port(a.spec, a.weights, trap, framework))))


def _port_values(prefix: str, c: PortComparison) -> dict[str, object]:
    return {f"{prefix}_rel": c.rel, f"{prefix}_max_abs": c.max_abs, f"{prefix}_bite": c.bite[0] if c.bite else None}


def conv_layout(preset: ResNetSpec | str = "resnet50", hw: int = 64) -> Measured:
    """Trap 1: conv kernels reshaped, and transposed with w.T, against the (2, 3, 1, 0) transpose."""
    a = anchor(preset, hw)
    good, reshaped = _ports(a, "kernel-reshape")
    _, reversed_ = _ports(a, "kernel-reversed")
    convs = [op for op in make_plan(a.spec).ops() if isinstance(op, P.Conv)]
    square = sum(op.in_channels // op.groups == op.out_channels for op in convs)
    pointwise = sum(op.kernel_size == 1 for op in convs)
    return Measured(
        setting(a.spec, hw),
        (describe_port("naive port, kernels reshaped to (kH, kW, I, O)", reshaped),
         describe_port("naive port, kernels transposed with w.T (axes reversed)", reversed_),
         f"w.T is right for the {pointwise} 1x1 kernels and mirrors the other {len(convs) - pointwise}; "
         "a reshape never raises, w.T never raises for square kernels",
         f"a transpose that swaps I and O, (2, 3, 0, 1), loads without an error into {square} of the "
         f"{len(convs)} convs (those with I == O)",
         describe_port("our port, transpose (2, 3, 1, 0)", good)),
        {**_port_values("reshape", reshaped), **_port_values("reversed", reversed_), **_port_values("ours", good),
         "silent_swapped_io": square, "convs": len(convs), "pointwise": pointwise},
        reshaped.bite[0] if reshaped.bite else None,
    )


def dense_layout(preset: ResNetSpec | str = "cifar_resnet20", hw: int = 32) -> Measured:
    """Trap 2: the classifier matrix without its transpose, on a square fc."""
    # a classifier as wide as its input makes the untransposed matrix fit without a reshape
    a = anchor(preset, hw)
    a = anchor(preset, hw, num_classes=make_plan(a.spec).head[-1].in_features)
    good, naive = _ports(a, "dense-untransposed")
    n = a.spec.num_classes
    return Measured(
        setting(a.spec, hw, f", {n} classes so that the {n}x{n} fc matrix fits either way"),
        (describe_port("naive port, fc.weight assigned untransposed", naive),
         describe_port("our port, fc.weight.T", good)),
        {**_port_values("naive", naive), **_port_values("ours", good)},
        naive.bite[0] if naive.bite else None,
    )


def grouped_conv(preset: ResNetSpec | str = "resnext50_32x4d", hw: int = 64) -> Measured:
    """Trap 3: grouped kernels keep the ungrouped transpose; an ungrouped layer rejects them."""
    _, keras = import_frameworks()
    a = anchor(preset, hw)
    conv = next(op for op in make_plan(a.spec).ops() if isinstance(op, P.Conv) and op.groups > 1)
    model = a.keras_model()
    source = a.outputs(a.torch_model())
    good = compare(source, a.outputs(model))
    kernel_shape = tuple(model.get_layer(conv.name.replace(".", "_")).kernel.shape)
    torch_shape = a.weights[f"{conv.name}.weight"].shape
    dense = keras.layers.Conv2D(conv.out_channels, conv.kernel_size, use_bias=False)
    dense.build((None, None, None, conv.in_channels))
    try:
        dense.kernel.assign(conv_to_keras(a.weights[f"{conv.name}.weight"]))
        error = "no error"
    except (ValueError, TypeError) as err:
        error = type(err).__name__
    return Measured(
        setting(a.spec, hw),
        (f"{conv.name}: PyTorch weight {torch_shape} (O, I/groups, kH, kW) -> Keras Conv2D(groups={conv.groups}) "
         f"kernel {kernel_shape} (kH, kW, I/groups, O): the ungrouped transpose (2, 3, 1, 0) fits",
         describe_port("our port", good),
         f"the same kernel assigned to an ungrouped Conv2D ({tuple(dense.kernel.shape)}, {conv.groups}x the "
         f"parameters) raises {error}: a loud mistake, unlike traps 1 and 2"),
        {**_port_values("ours", good), "torch_shape": torch_shape, "keras_shape": kernel_shape,
         "ungrouped_error": error},
    )


def same_padding(preset: ResNetSpec | str = "resnet50", hw: int = 64,
                 keras_native: ResNetSpec | str = "tutorial_keras_resnet18") -> Measured:
    """Trap 4: Keras 'same' for strided convs, both directions, even and odd input sizes."""
    a = anchor(preset, hw)
    good, naive = _ports(a, "same-padding")
    odd = anchor(preset, hw + 1)
    _, naive_odd = _ports(odd, "same-padding")
    native = anchor(keras_native, hw)
    native_good, native_naive = _ports(native, "same-padding", "torch")
    return Measured(
        setting(a.spec, hw),
        (describe_port(f"naive port, Keras 'same' on every conv ({hw}x{hw})", naive),
         describe_port(f"the same naive port at {hw + 1}x{hw + 1}", naive_odd)
         + " ('same' is symmetric on odd sizes: tests at odd sizes miss this trap)",
         describe_port("our port, ZeroPadding2D(k // 2) + 'valid' where strided", good),
         describe_port(f"{native.spec.name} (Keras 'same') naively ported to PyTorch with padding=k//2", native_naive),
         describe_port(f"{native.spec.name} ported by us (SameConv2d pads (0, 1) as Keras does)", native_good)),
        {**_port_values("naive", naive), **_port_values("naive_odd", naive_odd), **_port_values("ours", good),
         **_port_values("native_naive", native_naive), **_port_values("native_ours", native_good)},
        naive.bite[0] if naive.bite else None,
    )


def pool_padding(preset: ResNetSpec | str = "resnet50_v2", hw: int = 64,
                 post_relu: ResNetSpec | str = "resnet50") -> Measured:
    """Trap 5: zero max-pool padding where the pool sees negative inputs (v2 stem) and where not."""
    # a pre-activation net trained in PyTorch: its stem pool pads with -inf, as nn.MaxPool2d does
    a = anchor(preset, hw, stem={"pool_pad_value": "-inf"})
    good, naive = _ports(a, "zero-pool-padding")
    v1 = anchor(post_relu, hw)
    _, naive_v1 = _ports(v1, "zero-pool-padding")
    return Measured(
        setting(a.spec, hw, ", stem max-pool padding -inf"),
        (describe_port(f"naive port (ZeroPadding2D before the pool, no ReLU before it in {a.spec.name})", naive),
         describe_port(f"the same naive port of {v1.spec.name} (pool after BN + ReLU: inputs >= 0)", naive_v1),
         describe_port("our port, ConstantPadding2D(-inf)", good)),
        {**_port_values("naive", naive), **_port_values("naive_v1", naive_v1), **_port_values("ours", good)},
        naive.bite[0] if naive.bite else None,
    )


def bn_epsilon(preset: ResNetSpec | str = "resnet50", hw: int = 64) -> Measured:
    """Trap 6: Keras's default BatchNorm epsilon, and keras.applications' 1.001e-5."""
    a = anchor(preset, hw)
    good, naive = _ports(a, "bn-epsilon")
    source = a.outputs(a.torch_model())
    apps = a.outputs(a.torch_model(a.spec.replace(batchnorm={"epsilon": 1.001e-5})))
    last = next(reversed(source))
    apps_rel = relative_difference(source[last], apps[last])
    return Measured(
        setting(a.spec, hw, ", BN running variances in [0.5, 2]"),
        (describe_port("naive port, Keras default epsilon 1e-3 instead of 1e-5", naive),
         f"keras.applications' 1.001e-5 instead of 1e-5 (both in PyTorch): {g(apps_rel)} of the output scale"
         + (" (1e-8 vanishes in float32 next to variances of order 1)" if apps_rel == 0 else ""),
         describe_port("our port, epsilon from the spec (batchnorm.epsilon)", good),
         "trained networks have channels with far smaller running variances than these, where the "
         "epsilon matters more (its weight is epsilon / variance)"),
        {**_port_values("naive", naive), **_port_values("ours", good), "applications_rel": apps_rel},
        naive.bite[0] if naive.bite else None,
    )


def flatten_order(preset: ResNetSpec | str = "resnet18", hw: int = 64, classes: int = 10) -> Measured:
    """Trap 14: a Flatten + Dense head on the last feature map, rows unpermuted and permuted."""
    torch, keras = import_frameworks()
    a = anchor(preset, hw, num_classes=None)
    chw = output_shape(a.spec, (hw, hw))
    weight = (np.random.default_rng(2).uniform(-1, 1, (classes, int(np.prod(chw)))).astype(np.float32)
              / np.sqrt(np.prod(chw)))
    linear = torch.nn.Linear(weight.shape[1], classes, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(weight))
        reference = linear(torch.flatten(a.torch_model()(torch.from_numpy(a.x)), 1)).numpy()
    features = a.keras_model()(np.ascontiguousarray(a.x.transpose(0, 2, 3, 1)), training=False)
    flat = keras.layers.Flatten()(features)

    def dense(kernel: np.ndarray) -> np.ndarray:
        return keras.ops.convert_to_numpy(keras.ops.matmul(flat, kernel))

    naive = relative_difference(reference, dense(flatten_dense_kernel(weight, chw, naive=True)))
    good = relative_difference(reference, dense(flatten_dense_kernel(weight, chw)))
    return Measured(
        setting(a.spec, hw, f", Flatten of the {chw[0]}x{chw[1]}x{chw[2]} feature map into a {classes}-way Dense"),
        (f"naive Dense kernel (fc.weight.T): {g(naive)} of the output scale",
         f"rows permuted from (C, H, W) to (H, W, C) order: {g(good)} of the output scale",
         "every ResNet here ends in global average pooling, which has no spatial order: nothing to permute"),
        {"naive_rel": naive, "ours_rel": good, "chw": chw},
        "fc" if naive > BITE else None,
    )


def v1_naming(preset: ResNetSpec | str = "resnet50", hw: int = 64) -> Measured:
    """Trap 19: the two 'ResNet-50 v1' layouts: cost, parameters, and weights loaded into the other."""
    # the two published "ResNet-50 v1"s, whatever `preset` the naive port runs on
    tv, ka = get_spec("resnet50"), get_spec("resnet50_v1")
    flops = {s.name: count_flops(s, (224, 224)) / 1e9 for s in (tv, ka)}
    params = {s.name: count_params(s).trainable for s in (tv, ka)}
    a = anchor(preset, hw)
    good, naive = _ports(a, "stride-on-1x1")
    return Measured(
        setting(a.spec, hw),
        (f"torchvision {tv.name} (stride on the 3x3): {flops[tv.name]:.2f} GMACs, {params[tv.name]:,} parameters "
         f"at 224x224; keras.applications layout {ka.name} (stride on the first 1x1, conv biases): "
         f"{flops[ka.name]:.2f} GMACs, {params[ka.name]:,}",
         describe_port(f"{a.spec.name} weights loaded into the other layout (they fit: same tensor shapes)", naive),
         describe_port("our port", good)),
        {**_port_values("naive", naive), **_port_values("ours", good), "gmacs": flops, "params": params},
        naive.bite[0] if naive.bite else None,
    )


def v2_layout(preset: ResNetSpec | str = "resnet50_v2", hw: int = 64) -> Measured:
    """Trap 20: a ResNet V2 ported with v1's stride placement."""
    a = anchor(preset, hw)
    good, naive = _ports(a, "v2-stride-first")
    return Measured(
        setting(a.spec, hw),
        (describe_port("naive port, stride in the first block of each stage (v1 habit)", naive),
         describe_port("our port (stride_position='last', B-subsample shortcuts)", good)),
        {**_port_values("naive", naive), **_port_values("ours", good)},
        naive.bite[0] if naive.bite else None,
    )
