"""Shared test helpers: random canonical weights, forward passes, tolerances."""

from __future__ import annotations

import keras
import numpy as np
import torch

from shared_specs import ResNetSpec
from shared_specs.synthetic import random_weights  # noqa: F401  (re-exported for the tests)

BACKEND = keras.backend.backend()

# float32 parity bound, used by every cross-framework comparison: conv accumulation
# order differs between ATen and oneDNN/XLA, giving ~5e-6 relative error on CPU
# (trap 15); 1e-4 leaves 20x margin yet catches any layout or padding bug (those
# give errors of order 1). The atol is relative to the output scale so that
# near-zero logits do not fail on absolute noise.
F32_RTOL = 1e-4
F32_ATOL_SCALE = 1e-4


def random_input(spec: ResNetSpec, hw: tuple[int, int], batch: int = 2, seed: int = 1, dtype: type = np.float32) -> np.ndarray:
    """NCHW input (PyTorch layout); `nhwc` converts it for Keras."""
    return np.random.default_rng(seed).normal(size=(batch, spec.in_channels, *hw)).astype(dtype)


def nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def torch_forward(model: torch.nn.Module, x: np.ndarray, training: bool = False) -> np.ndarray:
    model.train(training)
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def keras_forward(model: keras.Model, x: np.ndarray, training: bool = False) -> np.ndarray:
    """Forward on NCHW `x`; returns NCHW feature maps or (N, classes) logits."""
    y = keras.ops.convert_to_numpy(model(nhwc(x), training=training))
    return nchw(y) if y.ndim == 4 else y


def assert_f32_close(actual: np.ndarray, reference: np.ndarray, what: str) -> None:
    """The float32 parity bound (see F32_RTOL)."""
    assert actual.shape == reference.shape, f"{what}: shape {actual.shape} != {reference.shape}"
    atol = F32_ATOL_SCALE * float(np.abs(reference).max())
    np.testing.assert_allclose(actual, reference, rtol=F32_RTOL, atol=atol, err_msg=what)
