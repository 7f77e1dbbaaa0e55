"""Shared test helpers: random canonical weights, forward passes, tolerances, a per-worker
cache of Keras models, and the presets each Keras backend's run of the suite covers.

Import it as `support` (pytest puts tests/ on sys.path), never as `tests.support`: a
second name would load a second copy, with its own cache.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping

import keras
import numpy as np
import torch

import resnet_keras as rk
from shared_specs import ResNetSpec, count_flops, count_params, get_spec, list_presets, make_plan
from shared_specs import plan as P
from shared_specs.synthetic import random_weights  # noqa: F401  (re-exported for the tests)

BACKEND = keras.backend.backend()

# float32 parity bound, used by every cross-framework comparison of one forward pass (the
# derivation: shared_specs/tolerances.py, F32_PARITY). Each float32 sum of n products rounds
# by ~sqrt(n) * 2^-24 of their magnitude in whatever order ATen, oneDNN, XLA or MLAS and the
# CPU's SIMD width choose; through ~50 such layers correct builds land 1e-6 to 1e-5 of the
# output scale apart on any CPU, while a layout, padding, epsilon or stride bug moves outputs
# by 1e-3 to order 1. The atol is relative to the output scale so that near-zero logits are
# judged by the tensor's scale, not elementwise.
F32_RTOL = 1e-4
F32_ATOL_SCALE = 1e-4


def random_input(spec: ResNetSpec, hw: tuple[int, int], batch: int = 2, seed: int = 1,
                 dtype: type = np.float32) -> np.ndarray:
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


def assert_gradients_agree(torch_model: torch.nn.Module, keras_model: keras.Model, spec: ResNetSpec,
                           hw: tuple[int, int], upstream: np.ndarray, what: str, batch: int = 3) -> None:
    """Input and weight gradients of d(sum(output * upstream)), training mode, within the float32
    bound, on the first input (seeds 1, 2, ...) where both passes take the same linear pieces.

    A ResNet is piecewise linear: its gradient jumps at each ReLU input's zero and wherever two
    values of a max-pool window swap. A unit within float32 rounding (~1e-6 of its scale) of such
    a kink can fall on one side in one framework and on the other in the other, and route its
    gradient elsewhere (measured: a layer2 ReLU of resnet50 at 67x45 on JAX moved 0.4% of the input
    gradient and 2% of a BatchNorm weight's); with 1e5 to 1e6 units per pass, one input in three to
    five places one there (resnet50 at 35x33 and 67x45 on JAX), and which ones depends on the CPU's
    summation order. No rounding bound covers a jump, so the
    kinks are checked in the very passes that differentiate (kinks_apart) and gradients compared
    where none parted: then both frameworks differentiate the same function. A wrong port parts
    kinks on every input and fails here, naming them.
    """
    seen = []
    for seed in range(1, 11):
        x = random_input(spec, hw, batch=batch, seed=seed)
        ref_dx, ref_dw, ref_kinks = torch_gradients(torch_model, x, upstream)
        dx, dw, kinks = keras_gradients(keras_model, x, upstream)
        apart = kinks_apart(spec, ref_kinks, kinks)
        if not apart:
            break
        seen.append(f"input seed {seed}: {', '.join(apart)}")
    else:
        raise AssertionError(f"{what}: the frameworks take other ReLU / max-pool pieces on every input: "
                             + "; ".join(seen))
    assert_f32_close(dx, ref_dx, f"{what} input gradient")
    assert dw.keys() == ref_dw.keys(), f"{what}: other tensors"
    # per tensor, relative to that tensor's largest gradient (a layout bug moves gradients by their own
    # magnitude), the scale floored at 1e-2 of the model's largest gradient (an atol of 1e-6 of it):
    # where the exact gradient is zero (a bias feeding a training-mode BatchNorm, e.g. V2's conv3 and
    # shortcut biases), float32 cancellation leaves noise near 1e-7 of it
    largest = max(float(np.abs(g).max()) for g in ref_dw.values())
    for key, ref in ref_dw.items():
        scale = max(float(np.abs(ref).max()), 1e-2 * largest)
        np.testing.assert_allclose(dw[key], ref, rtol=F32_RTOL, atol=F32_ATOL_SCALE * scale,
                                   err_msg=f"{what} gradient of {key}")


def _kink_ops(spec: ResNetSpec) -> dict[str, P.ReLU | P.MaxPool]:
    """The plan's ReLUs and max-pools by canonical name."""
    return {op.name: op for op in make_plan(spec).ops() if isinstance(op, (P.ReLU, P.MaxPool))}


def kinks_apart(spec: ResNetSpec, ours: Mapping[str, np.ndarray], theirs: Mapping[str, np.ndarray]) -> list[str]:
    """The ReLUs and max-pools whose inputs (NCHW, as the gradient functions return them) put a
    unit on the other side of a kink: a ReLU input of the other sign, a max-pool window whose
    maximum sits elsewhere."""
    apart = []
    for name, op in _kink_ops(spec).items():
        a, b = ours[name], theirs[name]
        if isinstance(op, P.ReLU):
            differ = ((a > 0) != (b > 0)).any()
        else:
            differ = (_pool_argmax(a, op) != _pool_argmax(b, op)).any()
        if differ:
            apart.append(name)
    return apart


def _pool_argmax(x: np.ndarray, op: P.MaxPool) -> np.ndarray:
    """Where each window of the max-pool `op` on NCHW `x` finds its maximum (padding included)."""
    pads = []
    for n in x.shape[2:]:
        if op.padding == "same":
            total = max((-(-n // op.stride) - 1) * op.stride + op.size - n, 0)
            pads.append((total // 2, total - total // 2))
        else:
            pads.append((op.padding, op.padding))
    padded = np.pad(x, [(0, 0), (0, 0), *pads], constant_values=0.0 if op.pad_value == "zero" else -np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (op.size, op.size), axis=(2, 3))
    windows = windows[:, :, :: op.stride, :: op.stride]
    return windows.reshape(*windows.shape[:4], -1).argmax(-1)


def torch_gradients(model: torch.nn.Module, x: np.ndarray, upstream: np.ndarray, training: bool = True
                    ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """d(sum(output * upstream)) w.r.t. the NCHW input and every trainable canonical tensor, and
    the inputs of the ReLUs and max-pools in that same pass (kinks_apart)."""
    kinks: dict[str, np.ndarray] = {}
    hooks = [model.get_submodule(name).register_forward_pre_hook(  # before an in-place ReLU overwrites it
        lambda _m, inputs, name=name: kinks.__setitem__(name, inputs[0].detach().numpy().copy()))
        for name in _kink_ops(model.spec)]
    try:
        model.train(training)
        model.zero_grad()
        xt = torch.from_numpy(x).requires_grad_(True)
        (model(xt) * torch.from_numpy(upstream)).sum().backward()
    finally:
        for hook in hooks:
            hook.remove()
    return xt.grad.numpy(), {n: p.grad.numpy().copy() for n, p in model.named_parameters()}, kinks


def keras_gradients(model: keras.Model, x: np.ndarray, upstream: np.ndarray, training: bool = True
                    ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The same for a Keras ResNet on the current backend, in canonical layout (NCHW input); the
    kink inputs come out of the differentiated pass itself (compiled on JAX, where a separate
    forward could round otherwise)."""
    from resnet_keras.layers import ConstantPadding2D, keras_name
    from resnet_keras.weights import canonical_variables

    names, tensors = [], []
    for name, op in _kink_ops(model.spec).items():
        tensor = model.get_layer(keras_name(name)).input
        producer = tensor._keras_history.operation
        if isinstance(op, P.MaxPool) and isinstance(producer, (keras.layers.ZeroPadding2D, ConstantPadding2D)):
            tensor = producer.input  # unpadded, as PyTorch's pool module receives it
        names.append(name)
        tensors.append(tensor)
    probe = keras.Model(model.inputs, [model.outputs[0], *tensors])
    rows = [(n, v, back) for n, v, _, back in canonical_variables(model) if v.trainable]
    variables = [v for _, v, _ in rows]
    xk, up = nhwc(x), (nhwc(upstream) if upstream.ndim == 4 else upstream)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        xv = tf.constant(xk)
        with tf.GradientTape() as tape:
            tape.watch(xv)
            out, *seen = probe(xv, training=training)
            loss = tf.reduce_sum(out * up)
        grads = tape.gradient(loss, [xv, *[v.value for v in variables]])
    elif BACKEND == "jax":
        import jax

        trainable = [v.value for v in probe.trainable_variables]
        frozen = [v.value for v in probe.non_trainable_variables]
        index = {id(v): i for i, v in enumerate(probe.trainable_variables)}

        def loss_fn(xv, tv):
            (out, *kink_inputs), _ = probe.stateless_call(tv, frozen, xv, training=training)
            return (out * up).sum(), kink_inputs

        # compiled once: op-by-op differentiation of a ResNet is ~3x slower on CPU
        (gx, gtv), seen = jax.jit(jax.grad(loss_fn, argnums=(0, 1), has_aux=True))(xk, trainable)
        grads = [gx, *[gtv[index[id(v)]] for v in variables]]
    else:  # torch backend
        xv = torch.tensor(xk, requires_grad=True)
        for v in variables:
            v.value.grad = None
        out, *seen = probe(xv, training=training)
        (out * torch.from_numpy(up)).sum().backward()
        grads = [xv.grad, *[v.value.grad for v in variables]]
    arrays = [keras.ops.convert_to_numpy(g) for g in grads]
    kinks = {name: keras.ops.convert_to_numpy(keras.ops.stop_gradient(t)) for name, t in zip(names, seen)}
    return (nchw(arrays[0]), {n: back(g) for (n, _, back), g in zip(rows, arrays[1:])},
            {name: nchw(a) if a.ndim == 4 else a for name, a in kinks.items()})


# -- float32 training runs --------------------------------------------------------------

EPS32 = 2.0**-24  # float32 unit roundoff: one rounding moves a value by at most this much of itself

# A float32 training run differs from its float64 twin (the truth: float64 rounding is 2^29
# times finer) only by float32 rounding, amplified by the training dynamics: every step feeds
# the last step's rounding back through the same exact computation. How much a given
# training amplifies is a property of that training, not of the CPU. A second float32 run of
# it (another framework, N data-parallel processes) rounds in another order but by the same
# kind of amount: sums of n terms, each ~sqrt(n) * EPS32 of their magnitude, in blocks set by
# the kernels and the SIMD width. So it lies c * D from the truth, where D is the reference
# float32 run's own distance and c the ratio of the two implementations' rounding sizes, and
# the two runs are at most (1 + c) * D apart. c is 1-3 for the same ATen kernels split over
# processes and up to ~10 for oneDNN's convolutions against ATen's (8 initialisations;
# trap 15: 7x); a SIMD width from 4 (SSE) to 16 (AVX-512) lanes regroups the sums by at most
# that factor again. F32_RUN_FACTOR = 50 holds c up to 49, and stays 100x below what a wrong
# rule does (coupled vs decoupled weight decay, unsynchronised BatchNorm: >= 1e-2 of a
# tensor's scale, against D ~ 1e-6). Because D is measured in the same process, on the same
# CPU, the bound moves with the machine's rounding instead of being copied from one machine.
# It presumes rounding of comparable size on both sides: where one framework's float32 is far
# less accurate on the data (Keras on TensorFlow and torch, training on 16 digits whose channels
# are near-constant: 500x torch's own float32 distance), c is no rounding-order ratio, and
# that training is compared in float64 instead (test_train_cli).
F32_RUN_FACTOR = 50
# Two float32 values of one quantity may differ by one unit in the last place each even
# when the computations agree (2 ulp = 4 * EPS32 of the scale): the bound never goes below.
F32_RUN_FLOOR = 4 * EPS32


def state_distance(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], scale: Mapping[str, np.ndarray]
                   ) -> dict[str, float]:
    """Per tensor: max |a - b| relative to max |scale[name]|. Each tensor is judged against
    its own scale, never elementwise: a near-zero element carries its tensor's absolute noise."""
    assert a.keys() == b.keys() == scale.keys(), sorted(set(a) ^ set(b) | set(a) ^ set(scale))
    out = {}
    for name in scale:
        size = float(np.abs(scale[name]).max())
        assert size > 0, f"{name} is zero in the truth: no scale to judge it by"
        out[name] = float(np.abs(np.asarray(a[name], np.float64) - np.asarray(b[name], np.float64)).max()) / size
    return out


def assert_float32_run_close(test: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                             truth: Mapping[str, np.ndarray], what: str) -> None:
    """`test` and `reference`: the final state (weights, buffers) of two float32 runs of one
    training; `truth`: the same training in float64. See F32_RUN_FACTOR."""
    rounding = max(state_distance(reference, truth, truth).values())  # D: the reference's own distance
    apart = state_distance(test, reference, truth)
    bound = F32_RUN_FACTOR * rounding + F32_RUN_FLOOR
    worst = sorted(apart.items(), key=lambda kv: -kv[1])[:3]
    assert max(apart.values()) <= bound, (f"{what}: float32 runs {worst} of a tensor's scale apart; bound "
                                          f"{F32_RUN_FACTOR} x {rounding:.2g} (the reference's distance from "
                                          f"float64) + {F32_RUN_FLOOR:.2g}")


def assert_float32_losses_close(test: np.ndarray, reference: np.ndarray, truth: np.ndarray, what: str) -> None:
    """Per-step losses of two float32 runs against the float64 run's: step s is held to
    F32_RUN_FACTOR times the largest distance of the reference from the truth at any step
    up to s (rounding accumulates; a single step's distance may happen to be near zero)."""
    test, reference, truth = (np.asarray(v, np.float64) for v in (test, reference, truth))
    envelope = np.maximum.accumulate(np.abs(reference - truth))
    bound = F32_RUN_FACTOR * envelope + F32_RUN_FLOOR * np.abs(truth)
    for step in np.flatnonzero(np.abs(test - reference) > bound):
        raise AssertionError(f"{what}: step {step}: loss {test[step]!r} vs {reference[step]!r} (float64 "
                             f"{truth[step]!r}): apart by more than {bound[step]:.2g}")


def build_in_dtype(build, dtype):  # type: ignore[no-untyped-def]
    """`build` (rt.build or rk.build) building in `dtype` whatever it is asked: monkeypatched
    in, it runs code that has no dtype option (`train`, the CLI) in float64."""

    def build_dtype(spec, *args, **kwargs):  # type: ignore[no-untyped-def]
        return build(spec, *args, **{**kwargs, "dtype": dtype})

    return build_dtype


# -- Keras models, built once per worker ----------------------------------------------------

# Keras builds dominate many tests' time (a functional graph of up to ~1000 layers); a test
# that needs a spec's model takes it from here and imports its own weights. Bounded by the
# parameters held (two resnet50-sized models), so that the largest presets, built once
# anyway, are not kept in a worker's memory.
_KERAS_MODELS: OrderedDict[tuple[str, str], keras.Model] = OrderedDict()
_KERAS_CACHE_PARAMS = 60_000_000


def keras_model(spec: ResNetSpec | str, weights: Mapping[str, np.ndarray] | None, dtype: str = "float32"
                ) -> keras.Model:
    """rk.build(spec, dtype=dtype) from this worker's cache, with `weights` imported.

    Import writes every variable the model has (checked when it is built: kernels, biases,
    BatchNorm statistics), so what an earlier test left in a cached model cannot leak into
    the next one. `weights=None` only for tests that read the structure alone (shapes,
    layer types). A test that changes anything else (compiles, freezes layers) builds its own.
    """
    spec = get_spec(spec) if isinstance(spec, str) else spec
    key = (json.dumps(spec.to_dict(), sort_keys=True), dtype)
    model = _KERAS_MODELS.pop(key, None)
    if model is None:
        from resnet_keras.weights import canonical_variables

        model = rk.build(spec, dtype=dtype)
        assert len(list(canonical_variables(model))) == len(model.weights), "a variable import would not reset"
    _KERAS_MODELS[key] = model  # most recently used last
    held = sum(count_params(ResNetSpec.from_dict(json.loads(k))).total for k, _ in _KERAS_MODELS)
    while held > _KERAS_CACHE_PARAMS and _KERAS_MODELS:  # the model just built may go too: it is returned
        (oldest, _), _ = _KERAS_MODELS.popitem(last=False)
        held -= count_params(ResNetSpec.from_dict(json.loads(oldest))).total
    if weights is not None:
        rk.import_weights(model, weights)
    return model


# -- which presets each Keras backend runs ------------------------------------------------

def architecture_kind(spec: ResNetSpec) -> str:
    """Everything in a spec that decides which layers and code paths a network uses, with
    what only repeats or widens them left out (stage depths and widths, width_per_group,
    classes, input channels): presets of one kind run the same builder code."""
    d = spec.to_dict()
    for field in ("name", "num_classes", "in_channels", "width_per_group"):
        d.pop(field)
    d["stages"] = [s["stride"] for s in d["stages"]]
    d["groups"] = d["groups"] > 1
    return json.dumps(d, sort_keys=True)


def hand_registered_presets() -> list[str]:
    """Every preset but the 87 that timm's table (shared_specs.presets_timm) adds: the tests
    that take presets one by one at full size run these. Building all of timm's at full size
    (up to 936M parameters) would take hours on CPU; tests/test_timm_families.py checks every
    one of them (counts, specs read off timm's models) and each family at reduced depth."""
    from shared_specs.presets_timm import TABLE_PRESETS

    return [n for n in list_presets() if n not in TABLE_PRESETS]


def representative_presets() -> list[str]:
    """The cheapest hand-registered preset of each architecture kind (basic, bottleneck, v1 and
    v2 layouts, grouped, CIFAR option A, deep stem, 'same' padding, ... and every kind added later)."""
    kinds: dict[str, str] = {}
    for name in hand_registered_presets():
        spec = get_spec(name)
        kind = architecture_kind(spec)
        best = kinds.get(kind)
        if best is None or (count_flops(spec, (64, 64)), count_params(spec).total) < (
                count_flops(get_spec(best), (64, 64)), count_params(get_spec(best)).total):
            kinds[kind] = name
    return sorted(kinds.values())


def presets_for_this_backend() -> list[str]:
    """Every hand-registered preset on TensorFlow (the full run of `make test`); a representative
    of each kind on JAX and torch, whose runs add what differs per backend (Keras's kernels and
    its type promotion), not per preset."""
    return hand_registered_presets() if BACKEND == "tensorflow" else representative_presets()
