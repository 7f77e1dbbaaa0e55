"""Measure how closely the PyTorch and Keras builds of one (spec, weights) agree."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from resnet_rosetta.frameworks import KerasFramework, TorchFramework
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
                   batch: int = 2, seed: int = 0, *, keras_model: Any = None) -> Parity:
    """Build the PyTorch model (and the Keras one, unless given already loaded with `weights`),
    and compare their eval-mode outputs on one random batch."""
    torch_fw, keras_fw = TorchFramework(), KerasFramework()
    x = np.random.default_rng(seed).normal(size=(batch, spec.in_channels, *input_hw)).astype(np.float32)
    ref = torch_fw.forward(torch_fw.build(spec, weights), x)
    out = keras_fw.forward(keras_model if keras_model is not None else keras_fw.build(spec, weights), x)
    diff = np.abs(ref - out)
    scale = float(np.abs(ref).max())
    same = float((ref.argmax(1) == out.argmax(1)).mean()) if ref.ndim == 2 else None
    return Parity(float(diff.max()), float(diff.max()) / max(scale, 1e-30), scale, same, keras_fw.backend, x.shape)


def describe(p: Parity) -> str:
    argmax = f", same top-1 on {p.same_argmax:.0%}" if p.same_argmax is not None else ""
    return (f"torch vs keras ({p.backend} backend) on a random {tuple(p.input_shape)} batch: "
            f"max |diff| {p.max_abs:.3g} = {p.max_rel:.2g} of the output scale {p.output_scale:.3g}{argmax}")
