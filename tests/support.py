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


def torch_gradients(model: torch.nn.Module, x: np.ndarray, upstream: np.ndarray, training: bool = True
                    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """d(sum(output * upstream)) w.r.t. the NCHW input and every trainable canonical tensor."""
    model.train(training)
    model.zero_grad()
    xt = torch.from_numpy(x).requires_grad_(True)
    (model(xt) * torch.from_numpy(upstream)).sum().backward()
    return xt.grad.numpy(), {n: p.grad.numpy().copy() for n, p in model.named_parameters()}


def keras_gradients(model: keras.Model, x: np.ndarray, upstream: np.ndarray, training: bool = True
                    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The same for a Keras ResNet on the current backend; returned in canonical layout (NCHW input)."""
    from resnet_keras.weights import canonical_variables

    rows = [(n, v, back) for n, v, _, back in canonical_variables(model) if v.trainable]
    variables = [v for _, v, _ in rows]
    xk, up = nhwc(x), (nhwc(upstream) if upstream.ndim == 4 else upstream)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        xv = tf.constant(xk)
        with tf.GradientTape() as tape:
            tape.watch(xv)
            loss = tf.reduce_sum(model(xv, training=training) * up)
        grads = tape.gradient(loss, [xv, *[v.value for v in variables]])
    elif BACKEND == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        frozen = [v.value for v in model.non_trainable_variables]
        index = {id(v): i for i, v in enumerate(model.trainable_variables)}

        def loss_fn(xv, tv):
            out, _ = model.stateless_call(tv, frozen, xv, training=training)
            return (out * up).sum()

        gx, gtv = jax.grad(loss_fn, argnums=(0, 1))(xk, trainable)
        grads = [gx, *[gtv[index[id(v)]] for v in variables]]
    else:  # torch backend
        xv = torch.tensor(xk, requires_grad=True)
        for v in variables:
            v.value.grad = None
        (model(xv, training=training) * torch.from_numpy(up)).sum().backward()
        grads = [xv.grad, *[v.value.grad for v in variables]]
    arrays = [keras.ops.convert_to_numpy(g) for g in grads]
    return nchw(arrays[0]), {n: back(g) for (n, _, back), g in zip(rows, arrays[1:])}
