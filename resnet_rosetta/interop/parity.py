"""Measure how closely the PyTorch and Keras builds of one (spec, weights) agree."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from resnet_rosetta.frameworks import import_frameworks
from shared_specs import ResNetSpec


@dataclass(frozen=True)
class Parity:
    """Eval-mode output agreement on one random batch (NCHW for torch, NHWC for Keras)."""

    max_abs: float
    max_rel: float  # max |torch - keras| / max |torch|
    output_scale: float
    same_argmax: float | None  # fraction of equal predicted classes, for classifiers
    backend: str
    input_shape: tuple[int, ...]


def measure_parity(spec: ResNetSpec, weights: Mapping[str, np.ndarray], input_hw: tuple[int, int] = (224, 224),
                   batch: int = 2, seed: int = 0) -> Parity:
    """Build both frameworks' models, load `weights`, and compare them on one random batch."""
    torch, keras = import_frameworks()
    import resnet_keras as rk
    import resnet_torch as rt

    torch_model = rt.build(spec).eval()
    rt.import_weights(torch_model, weights)
    keras_model = rk.build(spec)
    rk.import_weights(keras_model, weights)
    x = np.random.default_rng(seed).normal(size=(batch, spec.in_channels, *input_hw)).astype(np.float32)
    with torch.no_grad():
        ref = torch_model(torch.from_numpy(x)).numpy()
    out = keras.ops.convert_to_numpy(keras_model(x.transpose(0, 2, 3, 1), training=False))
    if out.ndim == 4:
        out = out.transpose(0, 3, 1, 2)
    diff = np.abs(ref - out)
    scale = float(np.abs(ref).max())
    same = float((ref.argmax(1) == out.argmax(1)).mean()) if ref.ndim == 2 else None
    return Parity(float(diff.max()), float(diff.max()) / max(scale, 1e-30), scale, same,
                  keras.backend.backend(), x.shape)


def describe(p: Parity) -> str:
    argmax = f", same top-1 on {p.same_argmax:.0%}" if p.same_argmax is not None else ""
    return (f"torch vs keras ({p.backend} backend) on a random {tuple(p.input_shape)} batch: "
            f"max |diff| {p.max_abs:.3g} = {p.max_rel:.2g} of the output scale {p.output_scale:.3g}{argmax}")
