"""PyTorch vs Keras parity for every preset: eval and training mode, odd and tiny inputs, gradients.

Marked keras_backend: `make test` runs this file once per Keras backend, each in its own process.
Weights are random with random BatchNorm running statistics (tests/support.random_weights).
"""

import functools
import zlib

import numpy as np
import pytest

import resnet_keras as rk
import resnet_torch as rt
from shared_specs import count_params, get_spec, list_presets
from support import (
    BACKEND,
    F32_ATOL_SCALE,
    F32_RTOL,
    assert_f32_close,
    keras_forward,
    keras_gradients,
    random_input,
    random_weights,
    torch_forward,
    torch_gradients,
)

pytestmark = pytest.mark.keras_backend


@functools.lru_cache(maxsize=1)  # one preset's pair at a time: the largest hold 127M parameters each
def pair(name: str):
    spec = get_spec(name)
    weights = random_weights(spec, seed=zlib.crc32(name.encode()) % 1000)  # hash() differs per process
    torch_model, keras_model = rt.build(spec), rk.build(spec)
    rt.import_weights(torch_model, weights)
    rk.import_weights(keras_model, weights)
    return torch_model, keras_model


def sizes(name: str) -> list[tuple[int, int]]:
    """Odd, non-square sizes: where TF 'same' padding and PyTorch padding part ways (trap 4)."""
    if "cifar" in name:
        return [(33, 31)] if name != "cifar_resnet1202" else [(9, 7)]
    big = any(k in name for k in ("101", "152", "wide", "resnext"))
    return [(41, 35)] if big else [(65, 47), (32, 33)]


@pytest.mark.parametrize("name", list_presets())
def test_eval_and_training_outputs_agree(name):
    torch_model, keras_model = pair(name)
    counts = count_params(torch_model.spec)
    assert counts.total == keras_model.count_params()  # Keras counts BN moving statistics too
    assert counts.trainable == sum(int(np.prod(v.shape)) for v in keras_model.trainable_weights)
    inputs = [random_input(torch_model.spec, hw) for hw in sizes(name)]
    for x in inputs:
        ref = torch_forward(torch_model, x, training=False)
        assert_f32_close(keras_forward(keras_model, x, training=False), ref, f"{name} eval {x.shape}")
    # Training mode normalises with batch statistics in both frameworks. It also updates the
    # running statistics, differently (unbiased vs biased variance, trap 8), hence eval first.
    for x in inputs:
        ref = torch_forward(torch_model, x, training=True)
        assert_f32_close(keras_forward(keras_model, x, training=True), ref, f"{name} train {x.shape}")


TINY_CASES = ["resnet18", "resnet50_v2", "tutorial_keras_resnet18", "cifar_resnet20", "resnet50_v1"]


@pytest.mark.parametrize("name", TINY_CASES)
def test_every_input_size_from_1_to_35_agrees(name):
    """Explicit padding makes every size agree, including 1x1 and sizes that are odd at some depth."""
    spec = get_spec(name, num_classes=None, head_activation="none")  # feature maps show misalignment directly
    weights = random_weights(spec)
    torch_model, keras_model = rt.build(spec), rk.build(spec)
    rt.import_weights(torch_model, weights)
    rk.import_weights(keras_model, weights)
    for size in [1, 2, 3, 5, 7, 8, 15, 17, 31, 35]:
        x = random_input(spec, (size, size + 1), batch=1)
        ref = torch_forward(torch_model, x)
        assert_f32_close(keras_forward(keras_model, x), ref, f"{name} {size}x{size + 1}")


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet50_v2", "cifar_resnet20"])
def test_input_and_weight_gradients_agree(name):
    spec = get_spec(name)
    weights = random_weights(spec, seed=7)
    torch_model, keras_model = rt.build(spec), rk.build(spec)
    rt.import_weights(torch_model, weights)
    rk.import_weights(keras_model, weights)
    x = random_input(spec, (35, 33) if "cifar" in name else (67, 45), batch=3)
    upstream = np.random.default_rng(2).normal(size=(3, spec.num_classes)).astype(np.float32)
    ref_dx, ref_dw = torch_gradients(torch_model, x, upstream)
    dx, dw = keras_gradients(keras_model, x, upstream)
    assert_f32_close(dx, ref_dx, f"{name} input gradient")
    assert dw.keys() == ref_dw.keys()
    largest = max(float(np.abs(g).max()) for g in ref_dw.values())
    for key, ref in ref_dw.items():
        # The float32 bound per tensor, relative to that tensor's largest gradient (a layout bug
        # moves gradients by their own magnitude), floored at 1e-6 of the model's largest one:
        # where the exact gradient is zero (a bias feeding a training-mode BatchNorm, e.g. V2's
        # conv3 and shortcut biases), float32 cancellation leaves noise near 1e-7 of it.
        scale = max(float(np.abs(ref).max()), 1e-2 * largest)
        np.testing.assert_allclose(dw[key], ref, rtol=F32_RTOL, atol=F32_ATOL_SCALE * scale,
                                   err_msg=f"{name} gradient of {key}")


def test_this_process_runs_the_backend_it_was_asked_for():
    import os

    assert BACKEND == os.environ["KERAS_BACKEND"]
