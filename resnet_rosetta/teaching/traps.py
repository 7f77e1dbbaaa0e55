"""The places where the same ResNet silently differs between PyTorch and Keras, measured: the
22 of the project's reference table (1-22), and those timm's layers bring (23-30).

Each trap pairs a measurement (run now, on a real network with random weights and
random BatchNorm statistics) with what goes wrong if it is ignored and how
resnet-rosetta handles it, naming the spec field or file. `explain` prints traps
for the terminal, `markdown` regenerates docs/differences.md. The trap numbers are
those of the project's reference table (framework-differences.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnet_rosetta.frameworks import import_frameworks
from resnet_rosetta.teaching import traps_families as fam
from resnet_rosetta.teaching import traps_numerics as num
from resnet_rosetta.teaching import traps_porting as port
from resnet_rosetta.teaching import traps_training as train
from resnet_rosetta.teaching.measured import BITE, Measured, g
from shared_specs import SpecError

BACKENDS = ("tensorflow", "jax", "torch")


@dataclass(frozen=True)
class Trap:
    """One difference: the two frameworks' behaviour, its cost, and its handling here."""

    number: int
    topic: str
    torch: str
    keras: str
    if_ignored: str
    handled_by: str
    measure: Callable[[], Measured]
    headline: Callable[[Measured], str]
    backend_specific: bool = False


def _rel(key: str, what: str = "of the output scale") -> Callable[[Measured], str]:
    return lambda m: f"{g(m.values[key])} {what}"


TRAPS: dict[int, Trap] = {t.number: t for t in (
    Trap(1, "conv kernel layout", "weight (O, I, kH, kW)",
         "kernel (kH, kW, I, O): transpose (2, 3, 1, 0), back (3, 2, 0, 1)",
         "a reshape, or w.T on square kernels, loads without any error and computes garbage",
         "`resnet_keras/weights.py` RULES: one table holds the conv transpose both ways; "
         "`shared_specs/canonical.py` check_weights rejects any tensor of the wrong shape",
         port.conv_layout, _rel("reshape_rel", "of the output scale (reshaped kernels)")),
    Trap(2, "dense kernel layout", "weight (out, in)", "kernel (in, out): transpose",
         "silent garbage when in == out (or with a reshape)",
         "`resnet_keras/weights.py` RULES: the Linear row transposes both ways",
         port.dense_layout, _rel("naive_rel")),
    Trap(3, "grouped conv (ResNeXt)", "weight (O, I/groups, kH, kW)", "Conv2D(groups=g) kernel (kH, kW, I/groups, O)",
         "the usual transpose works; an ungrouped layer fails loudly on the shape",
         "`resnet_keras/layers.py` builds Conv2D(groups=...) from the plan's Conv.groups; the RULES transpose is "
         "unchanged; `shared_specs/spec.py` rejects widths that do not split into groups",
         port.grouped_conv, _rel("ours_rel", "of the output scale, our port")),
    Trap(4, "padding 'same' with stride 2", "explicit symmetric padding k // 2",
         "'same' pads (0, 1) for a stride-2 window on an even input (TensorFlow's rule)",
         "every strided conv reads a shifted window: large output errors, and only on even input sizes",
         "spec field `padding` ('symmetric' | 'same'); `resnet_keras/layers.py` pads strided convs with "
         "ZeroPadding2D(k // 2) + 'valid'; `resnet_torch/layers.py` SameConv2d reproduces Keras-native 'same' "
         "models (tutorial_keras_resnet18)",
         port.same_padding, _rel("naive_rel")),
    Trap(5, "max-pool padding", "nn.MaxPool2d pads with -inf", "keras.applications pads with ZeroPadding2D (0)",
         "equal only on non-negative inputs: a pre-activation (v2) stem pools before any ReLU",
         "spec field `stem.pool_pad_value` ('-inf' | 'zero'); `resnet_keras/layers.py` ConstantPadding2D(-inf); "
         "`resnet_torch/layers.py` PaddedMaxPool2d for 'zero' (keras.applications presets)",
         port.pool_padding, _rel("naive_rel")),
    Trap(6, "BatchNorm epsilon", "1e-5", "1e-3 by default (keras.applications ResNets: 1.001e-5)",
         "every BN normalises a little differently; the error compounds through the network",
         "spec field `batchnorm.epsilon`, passed to both builders; presets carry their source's value",
         port.bn_epsilon, _rel("naive_rel")),
    Trap(7, "BatchNorm momentum", "momentum=0.1 weights the NEW batch", "momentum=0.99 weights the OLD value",
         "torch's 0.1 typed into Keras keeps 10% of the old statistics: running statistics diverge in training",
         "spec field `batchnorm.running_stats_decay` names the quantity; `shared_specs.spec.torch_momentum` "
         "(1 - decay) and `resnet_keras/layers.py` (momentum=decay) convert at the edge",
         train.bn_momentum, _rel("naive_rel", "of the running means' scale")),
    Trap(8, "BatchNorm running variance", "stores the unbiased batch variance (n / (n - 1))",
         "stores the biased batch variance",
         "running variances drift apart by n / (n - 1) per step: large on the small late feature maps",
         "spec field `batchnorm.running_var` (\"unbiased\", torch's, or \"biased\", Keras's); the builder whose "
         "framework lacks the asked-for one uses `UnbiasedBatchNormalization` (resnet_keras/layers.py) or "
         "`BiasedBatchNorm2d` (resnet_torch/layers.py), so training-mode statistics agree too",
         train.bn_variance, lambda m: f"x{m.values['ratio_last']:.3g} batch variance at {m.values['last_bn']}",
         backend_specific=True),
    Trap(9, "train vs eval, frozen layers", "module.train() / .eval(); requires_grad=False does not stop BN updates",
         "call(training=...); trainable=False puts BatchNorm in inference mode",
         "a 'frozen' PyTorch backbone still updates its BN statistics; a frozen Keras one neither updates nor "
         "normalises with batch statistics",
         "`resnet_rosetta/parity.py` compares model.eval() with training=False; freezing for fine-tuning is the "
         "caller's choice and differs by framework as measured here",
         train.frozen_bn,
         lambda m: f"{g(m.values['torch_requires_grad_false'])} running-mean drift with requires_grad=False"),
    Trap(10, "SGD momentum and weight decay", "L2 added to the gradient; lr multiplies outside the momentum buffer",
         "weight_decay decoupled; lr inside the buffer",
         "identical settings train differently from step 2 on (weight decay) or after any lr change",
         "outside the builders (they hold no optimizer): compare training only with weight decay as L2 in the "
         "gradient and a constant learning rate",
         train.sgd_semantics, lambda m: f"{g(m.values['decoupled'][-1])} of the distance moved after "
         f"{len(m.values['decoupled'])} steps"),
    Trap(11, "optimizer hyper-parameters", "Python floats (float64)", "float32 variables",
         "~1e-8 relative difference per step",
         "not hidden: training comparisons need tolerances above it",
         train.hyperparameter_precision, _rel("lr_rel", "relative error in the stored learning rate")),
    Trap(12, "default initialisation", "kaiming_uniform(a=sqrt(5)); torchvision re-initialises He normal fan_out",
         "glorot_uniform", "the 'same' model trains from a different distribution",
         "`resnet_torch/build.py` _init_weights and `resnet_keras/layers.py` _he_normal_fan_out draw from the same "
         "distribution (torchvision's); identical draws need a weight transfer, not a seed",
         train.default_init, lambda m: f"std {m.values['torch_default']:.3f} / {m.values['keras_default']:.3f} "
         f"(defaults) vs {m.values['ours_torch']:.3f} / {m.values['ours_keras']:.3f} (ours)"),
    Trap(13, "cross-entropy input", "takes logits", "from_logits=False by default",
         "a logits head trained with the default Keras loss optimises the wrong quantity",
         "spec field `head_activation`: 'none' gives logits (from_logits=True), 'softmax' probabilities "
         "(tutorial_keras_resnet18, as its post)",
         train.cross_entropy, lambda m: f"loss {m.values['keras_default']:.3g} instead of {m.values['torch']:.3g}"),
    Trap(14, "flatten order", "(C, H, W)", "(H, W, C)",
         "a Dense after Flatten needs its rows permuted",
         "every preset ends in global average pooling (`shared_specs/plan.py` head), which has no spatial order; "
         "`resnet_rosetta/naive.py` flatten_dense_kernel shows the permutation",
         port.flatten_order, _rel("naive_rel")),
    Trap(15, "float32 conv accuracy on CPU", "ATen ~1e-7 relative", "oneDNN (TensorFlow) / XLA: ~1e-6 relative",
         "absolute float32 tolerances are either too tight or useless",
         "`shared_specs/tolerances.py` F32_PARITY: 1e-4 of the output scale (tests, diff, parity); `interop/parity.py` "
         "reports differences relative to the output scale",
         num.float32_accuracy, _rel("between_rel", "between the frameworks"), backend_specific=True),
    Trap(16, "float64", "exact", "exact on TensorFlow; the JAX and torch backends compute parts in float32",
         "exact-parity tests pass on one backend and fail on the others",
         "both builders take a dtype (`resnet_torch/build.py`, `resnet_keras/build.py`); tests/test_traps.py "
         "asserts 1e-10 parity on TensorFlow and records the fallback elsewhere",
         num.float64, _rel("rel"), backend_specific=True),
    Trap(17, "shared memory", "Tensor.numpy() shares memory",
         "the JAX backend may alias numpy buffers (Keras 3.15 copies: see the measurement)",
         "an in-place edit of an 'exported' array changes the source model",
         "`resnet_torch/weights.py` and `resnet_keras/weights.py` copy on export and on import",
         num.shared_memory, lambda m: f"{g(m.values['torch_aliased'])} output change through .numpy()",
         backend_specific=True),
    Trap(18, "TF32 on Ampere+ GPUs", "matmul/conv may use TF32", "XLA's default precision is reduced too",
         "GPU parity is ~1e-3, not ~1e-6", "not measurable on a CPU-only machine (see the measurement)",
         num.tf32,
         lambda m: "not measurable: no CUDA device" if not m.values["cuda"] else "CUDA present, not measured"),
    Trap(19, "ResNet 'v1' means two networks", "torchvision: stride on the bottleneck's 3x3 ('v1.5')",
         "keras.applications ResNet50: stride on the first 1x1, conv biases",
         "the weights fit either layout, and compute something else",
         "spec fields `bottleneck_stride` ('3x3' | '1x1') and `conv_bias`; presets resnet50 (torchvision) and "
         "resnet50_v1 (keras.applications)",
         port.v1_naming, _rel("naive_rel")),
    Trap(20, "ResNet 'v2'", "none in torchvision",
         "pre-activation; stride in the LAST block of a stage; projection with bias, no BN; strided identity",
         "a porter assuming v1 habits mis-maps every block",
         "spec fields `preactivation`, `stride_position='last'`, `shortcut='B-subsample'`, "
         "`conv_bias='unnormalized'`, `stem.norm=False`; presets resnet50_v2 ...",
         port.v2_layout, _rel("naive_rel")),
    Trap(21, "one process, both frameworks", "loads triton lazily (first optimizer, torch.compile)",
         "TensorFlow >= 2.20 loads its LLVM with RTLD_GLOBAL",
         "`import tensorflow` then `torch.optim.SGD(...)`: segmentation fault",
         "`resnet_rosetta/frameworks.py` import_frameworks() imports triton first; the CLI, the tests "
         "(`tests/conftest.py`) and every module needing both go through it",
         num.import_order, lambda m: f"exit {m.values['tensorflow_first']} vs {m.values['import_frameworks']}"),
    Trap(22, "batch variance in float32", "BatchNorm's batch variance in two passes",
         "ops.moments: two passes on TensorFlow and JAX, E[x^2] - E[x]^2 on the torch backend",
         "on Keras's torch backend, training-mode BatchNorm loses digits where a channel's mean dwarfs its spread "
         "(pre-activation residual streams, small batches): outputs and running statistics part from PyTorch's",
         "`resnet_keras/layers.py` UnbiasedBatchNormalization (every BatchNorm of a spec with torch's running "
         "variance) computes the variance in two passes on every backend",
         num.batch_variance,
         lambda m: f"at a channel mean {m.values['offsets'][-1]:g}x the spread: {g(m.values['keras_rel'][-1])} "
         f"(Keras's own) vs {g(m.values['ours_rel'][-1])} (ours) of the output scale",
         backend_specific=True),
    Trap(23, "GroupNorm has no running statistics",
         "nn.GroupNorm: each example's own group statistics in train() and eval() alike; weight and bias only",
         "GroupNormalization: the same for training=True and False (and trainable=False); gamma and beta only",
         "ported as BatchNorm it needs running statistics no checkpoint has: with the fresh ones (mean 0, "
         "variance 1) every layer is off by order 1",
         "spec field `norm` (NormSpec: kind 'groupnorm', groups, epsilon); the plan's GroupNorm op owns weight and "
         "bias only (`shared_specs/plan.py`); `resnet_rosetta/teaching/naive.py` 'groupnorm-as-batchnorm' makes the "
         "mistake on demand",
         fam.groupnorm_statistics, _rel("naive_rel", "of the output scale (GroupNorm ported as BatchNorm)")),
    Trap(24, "GroupNorm epsilon and variance", "nn.GroupNorm(eps=1e-5); two-pass variance, (x - mean) * rstd",
         "GroupNormalization(epsilon=1e-3); ops.moments (E[x^2] - E[x]^2 on the torch backend), then "
         "x * rstd - mean * rstd",
         "the default epsilon moves every GroupNorm a little (as trap 6); on Keras's torch backend groups whose "
         "mean dwarfs their spread, as in a pre-activation residual stream, lose digits",
         "spec field `norm.epsilon`, passed to both builders; `resnet_keras/layers.py` TwoPassGroupNormalization "
         "computes as torch.nn.GroupNorm does on every backend",
         fam.groupnorm_numerics,
         lambda m: f"{g(m.values['naive_rel'])} of the output scale (Keras's default epsilon); one layer at a group "
         f"mean 100x its spread: {g(m.values['single_keras'][-1])} (Keras's own) vs {g(m.values['single_ours'][-1])}",
         backend_specific=True),
    Trap(25, "EvoNorm-S0 group statistics",
         "timm's EvoNorm2dS0: x * sigmoid(v x) / group_std(x), var(unbiased=False) over contiguous channel groups",
         "no built-in layer; the paper's TF code: tf.nn.moments (biased) over groups reshaped (..., G, C/G)",
         "torch's x.var() / x.std() default to the unbiased n - 1: x / std off by sqrt(n / (n - 1)) per layer; a "
         "channels-last reshape to (..., C/G, G) groups every G-th channel instead",
         "`resnet_torch/layers.py` EvoNorm2dS0 (correction=0) and `resnet_keras/layers.py` EvoNormS0 "
         "(keras.ops.var is biased; groups reshaped (..., G, C/G)); spec field `norm` (kind 'evonorm_s0')",
         fam.evonorm, _rel("unbiased_rel", "of the output scale (group variance unbiased)")),
    Trap(26, "FRN: a mean square, not a variance",
         "timm's FilterResponseNormTlu2d: x * rsqrt(mean(x^2) + eps), eps 1e-5, then max(., tau)",
         "no built-in layer; TF Addons' FilterResponseNormalization: epsilon 1e-6 (the paper's)",
         "written as instance normalisation (mean subtracted) it is another function; the other ecosystem's epsilon "
         "rescales near-silent channels",
         "`resnet_torch/layers.py` FilterResponseNorm2d and `resnet_keras/layers.py` FilterResponseNorm; spec field "
         "`norm.epsilon` (timm's presets: 1e-5); naive port 'frn-epsilon'",
         fam.frn, _rel("instance_rel", "of the output scale (FRN as instance normalisation)")),
    Trap(27, "BlurPool's reflect padding",
         "timm's BlurPool2d: F.pad(mode='reflect') by 1, then the [1, 2, 1] x [1, 2, 1] / 16 filter per channel",
         "no built-in layer: a DepthwiseConv2D pads with zeros ('same': (0, 1) for stride 2 on even sizes)",
         "zeros take a quarter of the filter's weight away at every border; without the blur the stride goes back "
         "into the conv",
         "spec field `anti_alias` ('blur' | 'avg'); `resnet_keras/layers.py` BlurPool2D (keras.ops.pad "
         "mode='reflect' + depthwise_conv); naive port 'no-anti-alias'",
         fam.blurpool, _rel("zeros_rel", "of the output scale (zero padding)")),
    Trap(28, "SE hidden width rounding",
         "timm's SEModule: make_divisible(C / 16, 8): the nearest multiple of 8, at least 8",
         "no built-in layer; the SENet paper's code and most hand-written ports: C // 16",
         "another hidden width wherever C / 16 is not a multiple of 8 (C = 64: 8 vs 4): the weights fail to load "
         "(loud); trained from scratch, it is another network",
         "spec field `attention` (AttentionSpec: reduction, divisor; se_width is timm's make_divisible); "
         "`shared_specs/canonical.py` check_weights names every mis-shaped tensor",
         fam.se_width, lambda m: f"{m.values['differ']} of {m.values['layers']} SE layers get another width; "
         f"timm's weights {'load' if m.values['loads'] else 'fail to load'}"),
    Trap(29, "ECA's Conv1d layout",
         "Conv1d weight (out, in, k) = (1, 1, k), over the channel means viewed (N, 1, C)",
         "Conv1D kernel (k, in, out) = (k, 1, 1), over (N, C, 1): the channels as steps",
         "nothing silent: every transpose or reshape of a (1, 1, k) kernel is the same array; the means laid out "
         "as PyTorch's (N, 1, C) make Keras's Conv1D expect a (k, C, 1) kernel, and the assignment fails",
         "`shared_specs/layout.py` conv1d_to_keras (2, 1, 0) in `resnet_keras/weights.py` RULES; "
         "`resnet_keras/layers.py` EfficientChannelAttention convolves (N, C, 1)",
         fam.eca_conv1d, lambda m: ("every layout of (1, 1, k) agrees" if m.values["eca_layouts_agree"]
                                    else "layouts differ")
         + f"; a reshaped general Conv1d: {g(m.values['general_reshape_rel'])}"),
    Trap(30, "weight standardisation (BiT)",
         "timm's StdConv2d: (w - mean) / sqrt(var + eps) per output channel, biased variance, eps 1e-6 (1e-8 in its "
         "BiT models)",
         "no built-in layer; BiT's TF code: tf.nn.moments (biased), eps 1e-10",
         "forgotten, every conv sees a raw kernel (order-1 errors); w.std() is unbiased; implementations disagree "
         "on epsilon",
         "spec field `std_conv_epsilon`; `resnet_torch/layers.py` StdConv2d and `resnet_keras/layers.py` "
         "StandardizedConv2D (biased variance in both); naive port 'std-conv-forgotten'",
         fam.std_conv, _rel("forgotten_rel", "of the output scale (standardisation forgotten)")),
)}


def get_trap(number: int) -> Trap:
    """The trap with this number; anything else is a SpecError."""
    try:
        return TRAPS[number]
    except KeyError:
        raise SpecError(f"no trap {number}; the traps are {numbering()}") from None


def numbering() -> str:
    """The trap numbers as ranges: '1-30'."""
    ranges: list[list[int]] = []
    for n in sorted(TRAPS):
        if ranges and ranges[-1][-1] == n - 1:
            ranges[-1].append(n)
        else:
            ranges.append([n])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in ranges)


def measure(numbers: Sequence[int] | None = None) -> dict[int, Measured]:
    """Measure the given traps (default: all) on the current Keras backend."""
    return {n: get_trap(n).measure() for n in (numbers or TRAPS)}


def format_trap(trap: Trap, measured: Measured) -> str:
    """One trap for the terminal."""
    lines = [f"Trap {trap.number}: {trap.topic}",
             f"  PyTorch: {trap.torch}",
             f"  Keras 3: {trap.keras}",
             f"  If ignored: {trap.if_ignored}",
             f"  Measured now ({measured.setting}):"]
    lines += [f"    - {fact}" for fact in measured.facts]
    if measured.first_bite:
        lines.append(f"  First layer where the mistake bites: {measured.first_bite}")
    lines.append(f"  Handled by: {trap.handled_by.replace('`', '')}")
    return "\n".join(lines)


def to_json(measured: dict[int, Measured]) -> str:
    """Measurements as JSON (what `explain --json` prints and `measure_on` reads back)."""
    return json.dumps({str(n): {"setting": m.setting, "facts": list(m.facts), "values": m.values,
                                "first_bite": m.first_bite} for n, m in measured.items()}, default=_plain)


def from_json(text: str) -> dict[int, Measured]:
    """The inverse of `to_json`."""
    data = json.loads(text)
    return {int(n): Measured(d["setting"], tuple(d["facts"]), d["values"], d["first_bite"]) for n, d in data.items()}


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def measure_on(backend: str, numbers: Sequence[int]) -> dict[int, Measured]:
    """Measure traps in a fresh process on another Keras backend (fixed per process)."""
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", "resnet_rosetta.cli", "explain", *map(str, numbers), "--json"],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"measuring traps {list(numbers)} on {backend} failed:\n{done.stderr[-2000:]}")
    return from_json(done.stdout)


def markdown(backends: Sequence[str] = BACKENDS) -> str:
    """docs/differences.md: every trap measured now; backend-specific ones on each of `backends`."""
    torch, keras = import_frameworks()
    here = keras.backend.backend()
    measured = measure()
    per_backend: dict[str, dict[int, Measured]] = {here: {n: measured[n] for n in TRAPS if TRAPS[n].backend_specific}}
    specific = [n for n in TRAPS if TRAPS[n].backend_specific]
    for other in backends:
        if other != here:
            per_backend[other] = measure_on(other, specific)
    out = ["# PyTorch vs Keras 3: where the same ResNet silently differs, measured",
           "",
           "<!-- generated by `resnet-rosetta explain --markdown -o docs/differences.md`: do not edit -->",
           "",
           f"Every number below was measured by `resnet-rosetta explain` (torch {torch.__version__}, "
           f"Keras {keras.__version__}, CPU) on real networks from our presets, built by `resnet_torch` and "
           "`resnet_keras` with random weights and random BatchNorm statistics (`shared_specs/synthetic.py`): "
           "nothing pretrained, nothing downloaded. A *naive port* (`resnet_rosetta/naive.py`) makes exactly one "
           "mistake; \"first layer off\" is the first canonical layer whose output differs from the source model "
           f"by more than {g(BITE)} of its scale. "
           f"Traps marked (per backend) were measured on {', '.join(per_backend)}; the others on {here}.",
           "",
           "| # | trap | measured | first layer off |",
           "|---|---|---|---|"]
    for n, trap in TRAPS.items():
        mark = " (per backend)" if trap.backend_specific else ""
        bite = f"`{measured[n].first_bite}`" if measured[n].first_bite else ""
        link = f"[{trap.topic}](#{n}-{_anchor(trap.topic)})"
        out.append(f"| {n} | {link}{mark} | {trap.headline(measured[n])} | {bite} |")
    for n, trap in TRAPS.items():
        m = measured[n]
        out += ["", f"## {n}. {trap.topic}", "",
                f"- **PyTorch:** {trap.torch}", f"- **Keras 3:** {trap.keras}", f"- **If ignored:** {trap.if_ignored}",
                f"- **Handled by:** {trap.handled_by}", ""]
        runs = [(b, per_backend[b][n]) for b in per_backend] if trap.backend_specific else [(here, m)]
        for backend, run in runs:
            out.append(f"Measured ({run.setting}):" if not trap.backend_specific
                       else f"On **{backend}** ({run.setting}):")
            out.append("")
            out += [f"- {fact}" for fact in run.facts]
            if run.first_bite:
                out += ["", f"First layer where the mistake bites: `{run.first_bite}`"]
            out.append("")
        out.append(f"Re-measure: `resnet-rosetta explain {n}`")
    return "\n".join(out).rstrip() + "\n"


def _anchor(topic: str) -> str:
    keep = "".join(c if c.isalnum() or c in " -" else "" for c in topic.lower())
    return keep.replace(" ", "-")
