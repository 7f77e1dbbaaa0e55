"""Per-layer diagnosis of two models that should compute the same function.

Both models get the same input; every layer is matched through its canonical name and its
output compared. The first layer whose output differs beyond the tolerance is where the two
part ways; `likely_causes` then looks at what differs there (spec fields, the layer's own
tensors, the shape of the error) and names the known traps it recognises.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resnet_rosetta.frameworks import Framework, KerasFramework, framework_of, get_framework
from resnet_rosetta.interop.layer_outputs import relative_difference
from shared_specs import ResNetSpec, make_plan
from shared_specs import plan as P
from shared_specs.layout import conv_from_keras, conv_to_keras, dense_from_keras, dense_to_keras
from shared_specs.tolerances import F32_PARITY

DEFAULT_TOLERANCE = F32_PARITY  # what correct float32 ports stay within (shared_specs.tolerances)


@dataclass(frozen=True)
class LayerDiff:
    """One layer's output disagreement; `max_rel` is relative to the layer's largest |output| in A."""

    name: str
    kind: str
    max_abs: float
    max_rel: float
    diverged: bool


@dataclass(frozen=True)
class DiffReport:
    rows: list[LayerDiff]
    first_divergence: str | None
    causes: list[str]
    tolerance: float
    output_max_rel: float
    labels: tuple[str, str] = ("A", "B")
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        from resnet_rosetta.table import format_table

        rows = [(("> " if r.name == self.first_divergence else "  ") + r.name, r.kind, f"{r.max_abs:.3g}",
                 f"{r.max_rel:.3g}", "DIVERGED" if r.diverged else "") for r in self.rows]
        text = format_table(("layer", "op", "max |A-B|", "relative", ""), rows, right=(2, 3))
        verdict = (f"first divergence beyond {self.tolerance:g}: {self.first_divergence}"
                   if self.first_divergence else f"all {len(self.rows)} layers agree within {self.tolerance:g}")
        lines = [f"A = {self.labels[0]}", f"B = {self.labels[1]}", text, "", verdict,
                 f"final output relative difference: {self.output_max_rel:.3g}"]
        lines += [f"likely cause: {c}" for c in self.causes] + self.notes
        return "\n".join(lines)


@dataclass
class Side:
    """A model reduced to what the diff needs: spec, canonical weights, per-layer outputs (NCHW),
    and the framework it runs in (None for a Side built by hand)."""

    label: str
    spec: ResNetSpec
    weights: dict[str, np.ndarray]
    run: Callable[[np.ndarray], dict[str, np.ndarray]]
    framework: Framework | None = None


def model_side(model: Any, label: str | None = None) -> Side:
    """One of our models: per-layer outputs read at canonical names (forward hooks in
    PyTorch, a probe model in Keras)."""
    framework = framework_of(model)
    if label is None:
        label = framework.backend_label if isinstance(framework, KerasFramework) else framework.label
    return Side(label, model.spec, framework.export_weights(model),
                lambda x: framework.layer_outputs(model, x), framework)


def file_side(path: str | os.PathLike[str], framework: str, spec: ResNetSpec | None = None) -> Side:
    """A model file built in `framework` ("torch" or "keras")."""
    from resnet_rosetta.interop.files import read_model_file

    spec, weights = read_model_file(path, spec)
    target = get_framework(framework)
    return model_side(target.build(spec, weights, source=str(path)), f"{path} in {target.label}")


def as_side(obj: Any, label: str | None = None) -> Side:
    """A Side from one of our torch or Keras models (anything else: build a Side yourself)."""
    if isinstance(obj, Side):
        return obj
    try:
        return model_side(obj, label)
    except TypeError:
        raise TypeError(f"cannot diff a {type(obj).__name__}: pass a resnet_torch / resnet_keras model or a Side"
                        ) from None


def diff(a: Any, b: Any, *, input_hw: tuple[int, int] = (64, 64), batch: int = 2, seed: int = 0,
         x: np.ndarray | None = None, tolerance: float = DEFAULT_TOLERANCE) -> DiffReport:
    """Feed A and B the same NCHW input and compare every layer they share, in A's order."""
    side_a, side_b = as_side(a), as_side(b)
    if x is None:
        x = np.random.default_rng(seed).normal(size=(batch, side_a.spec.in_channels, *input_hw)).astype(np.float32)
    out_a, out_b = side_a.run(x), side_b.run(x)
    ops = {op.name: op for op in make_plan(side_a.spec).ops()}
    rows, first = [], None
    notes: list[str] = []
    for name, ra in out_a.items():
        if name not in out_b:
            continue
        rb = out_b[name]
        kind = type(ops[name]).__name__ if name in ops else "Add"  # a pre-activation block's sum
        rel = relative_difference(ra, rb)
        max_abs = float(np.abs(ra.astype(np.float64) - rb).max()) if ra.shape == rb.shape else float("inf")
        if ra.shape != rb.shape:
            notes.append(f"note: {name} has shape {ra.shape[1:]} in A but {rb.shape[1:]} in B")
        rows.append(LayerDiff(name, kind, max_abs, rel, rel > tolerance))
        if rows[-1].diverged and first is None:
            first = name
    missing = [n for n in out_a if n not in out_b]
    if missing:
        notes.append(f"note: {len(missing)} layers of A have no counterpart in B, e.g. {missing[:3]}")
    final_rel = rows[-1].max_rel if rows else float("nan")
    causes = likely_causes(side_a, side_b, ops.get(first, first), out_a, out_b) if first else []
    return DiffReport(rows, first, causes, tolerance, final_rel, (side_a.label, side_b.label), notes)


def likely_causes(a: Side, b: Side, op: P.Op | str, out_a: Mapping[str, np.ndarray], out_b: Mapping[str, np.ndarray]
                  ) -> list[str]:
    """Known traps that explain a divergence at `op`, from evidence, strongest first."""
    causes: list[str] = []
    spec_diff = [d.path for d in a.spec.differences(b.spec)]
    for path, trap in (("padding", "padding convention: Keras 'same' pads (0, 1) on even inputs, PyTorch pads "
                                   "symmetrically (trap 4)"),
                       ("batchnorm.epsilon", "BatchNorm epsilon differs (PyTorch 1e-5, Keras 1e-3, keras.applications "
                                             "1.001e-5; trap 6)"),
                       ("stem.pool_pad_value", "max-pool padding value: -inf (PyTorch) vs zeros "
                                               "(ZeroPadding2D; trap 5)"),
                       ("bottleneck_stride", "bottleneck stride on the 3x3 (torchvision v1.5) vs the first 1x1 "
                                             "(keras.applications v1): same tensors, different network (trap 19)"),
                       ("stride_position", "strided block first (v1) vs last (keras.applications V2) in a stage "
                                           "(trap 20)"),
                       ("norm.kind", "another kind of norm layer (BatchNorm, GroupNorm, EvoNorm-S0, FRN): a GroupNorm "
                                     "has no running statistics and normalises each example alone (trap 23)"),
                       ("norm.groups", "norm groups differ: GroupNorm and EvoNorm-S0 statistics span other channels "
                                       "(traps 23, 25)"),
                       ("norm.epsilon", "norm epsilon differs (GroupNorm: PyTorch 1e-5, Keras 1e-3, trap 24; FRN: "
                                        "timm 1e-5, TF Addons 1e-6, trap 26)"),
                       ("attention", "channel attention differs: SE hidden width rounding (int(C/16) vs timm's "
                                     "make_divisible, trap 28), SE vs ECA, or ECA's kernel size (trap 29)"),
                       ("anti_alias", "anti-aliasing differs: BlurPool (reflect-padded binomial filter), 2x2 average "
                                      "pool or a plain strided conv (trap 27)"),
                       ("std_conv_epsilon", "weight standardisation differs (BiT's StdConv2d): forgotten, or another "
                                            "epsilon (timm 1e-6 by default, 1e-8 in its BiT models; trap 30)")):
        if any(d == path or d.startswith(path + ".") for d in spec_diff):
            causes.append(trap)
    if "batchnorm.running_stats_decay" in spec_diff:
        causes.append("BatchNorm momentum convention differs (torch 0.1 == Keras 0.9; trap 7): changes training only")
    named = ("padding", "batchnorm", "stem.pool_pad_value", "bottleneck_stride", "stride_position", "name", "norm",
             "attention", "anti_alias", "std_conv_epsilon")
    others = [d for d in spec_diff if not d.startswith(named)]
    if others:
        causes.append(f"the two specs differ in {others}")
    name = op if isinstance(op, str) else op.name
    for suffix in ("weight", "running_var", "running_mean", "bias", "v", "tau", "fc1.weight", "fc2.weight",
                   "conv.weight"):
        key = f"{name}.{suffix}"
        if key in a.weights and key in b.weights:
            found = _tensor_relation(a.weights[key], b.weights[key], suffix)
            if found:
                causes.append(f"{key}: {found}")
    if isinstance(op, (P.Conv, P.MaxPool)) and not causes:
        shift = _spatial_shift(out_a[name], out_b[name])
        if shift:
            causes.append(f"{name} output of B is A's shifted by {shift} pixel: padding convention (trap 4)")
    return causes


def _tensor_relation(ta: np.ndarray, tb: np.ndarray, suffix: str) -> str | None:
    """How B's copy of a tensor relates to A's, when it is one of the known porting mistakes."""
    if ta.shape == tb.shape and np.array_equal(ta, tb):
        return None
    if ta.ndim == 4 and tb.shape == ta.shape:
        i = ta.shape[1]
        # a naive port reshapes where it should transpose, in either direction (trap 1)
        for naive in (conv_to_keras(ta).reshape(ta.shape), conv_from_keras(ta.reshape(conv_to_keras(ta).shape))):
            if np.array_equal(tb, naive):
                return "kernel reshaped instead of transposed between OIHW and HWIO: layout transpose (trap 1)"
        if np.array_equal(tb, ta.transpose(0, 1, 3, 2)):
            return "kernel height and width swapped (np.transpose / .T reverses all axes): layout transpose (trap 1)"
        if i > 1 and np.array_equal(tb, ta[:, ::-1]):
            return "input channels reversed: RGB vs BGR channel order"
    if ta.ndim == 2 and tb.shape == ta.shape:
        for naive in (dense_to_keras(ta).reshape(ta.shape), dense_from_keras(ta.reshape(ta.shape[::-1]))):
            if np.array_equal(tb, naive):
                return "dense kernel reshaped instead of transposed: layout transpose (trap 2)"
    if suffix == "running_var" and ta.shape == tb.shape:
        ratio = tb / np.where(ta == 0, np.nan, ta)
        r = np.nanmedian(ratio)
        if np.nanmax(np.abs(ratio - r)) < 1e-5 * abs(r) and r > 1:
            n = r / (r - 1)  # unbiased = biased * n / (n - 1)
            return f"running_var scaled by {r:.6g} = n/(n-1) with n = {n:.4g}: biased vs unbiased variance (trap 8)"
    if ta.shape != tb.shape:
        return f"shape {ta.shape} in A, {tb.shape} in B"
    return f"differs (max |A-B| {float(np.abs(ta - tb).max()):.3g})"


def _spatial_shift(ya: np.ndarray, yb: np.ndarray) -> int | None:
    """1 if B equals A shifted by one pixel in H or W (the signature of asymmetric padding)."""
    if ya.ndim != 4 or ya.shape != yb.shape or min(ya.shape[2:]) < 3:
        return None
    base = np.abs(ya - yb).mean()
    for axis in (2, 3):
        for s in (1, -1):
            shifted = np.roll(ya, s, axis=axis)
            inner = [slice(None)] * 4
            inner[axis] = slice(1, -1)
            if np.abs(shifted[tuple(inner)] - yb[tuple(inner)]).mean() < 0.1 * base:
                return 1
    return None


def plot(report: DiffReport, path: str | os.PathLike[str]) -> Path:
    """PNG of the per-layer relative error, log scale, with the tolerance and first divergence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shared_specs.checkpoint import atomic_write

    rel = [max(r.max_rel, 1e-12) if np.isfinite(r.max_rel) else 1e3 for r in report.rows]
    fig, ax = plt.subplots(figsize=(max(8, len(rel) * 0.04), 4.5))
    ax.semilogy(range(len(rel)), rel, marker=".", lw=0.8, label="max |A-B| / max |A| per layer")
    ax.axhline(report.tolerance, color="tab:red", ls="--", lw=1, label=f"tolerance {report.tolerance:g}")
    if report.first_divergence:
        i = [r.name for r in report.rows].index(report.first_divergence)
        ax.axvline(i, color="tab:orange", lw=1, label=f"first divergence: {report.first_divergence}")
    ax.set_xlabel("layer (execution order)")
    ax.set_ylabel("relative error")
    ax.set_title(f"{report.labels[0]}  vs  {report.labels[1]}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    target = Path(path)
    atomic_write(target, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return target
