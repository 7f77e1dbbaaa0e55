"""Float64 parity on the TensorFlow backend: with rounding out of the way, the two builds compute
the same function to 1e-10 relative.

Only the TensorFlow backend computes everything in float64 (on the JAX and torch backends Keras
silently runs BatchNorm, Dense and pooling in float32, trap 16), so this file is not marked
keras_backend and `make test` runs it in the TensorFlow process only.
"""

import numpy as np
import pytest
import torch

import resnet_keras as rk
import resnet_torch as rt
from shared_specs import get_spec
from support import BACKEND, hand_registered_presets, keras_forward, random_input, random_weights, torch_forward

# float64 rounding (2.2e-16) accumulated over ~10^4-term dot products and up to a few hundred
# layers stays below 1e-12; 1e-10 leaves margin while any real mismatch (epsilon, padding,
# layout) shows up at 1e-6 or worse.
F64_RTOL = 1e-10


def test_runs_on_the_tensorflow_backend():
    assert BACKEND == "tensorflow", "float64 exactness holds on the TensorFlow backend only (trap 16)"


@pytest.mark.parametrize("name", hand_registered_presets())  # timm's table: tests/test_timm_families.py
def test_float64_outputs_agree_to_1e_10(name):
    spec = get_spec(name)
    weights = random_weights(spec, seed=11, dtype=np.float64)
    torch_model = rt.build(spec, dtype=torch.float64)
    keras_model = rk.build(spec, dtype="float64")
    rt.import_weights(torch_model, weights)
    rk.import_weights(keras_model, weights)
    hw = {"cifar_resnet1202": (9, 7)}.get(name, (13, 11) if "cifar" in name else (23, 19))  # odd sizes, kept small
    x = random_input(spec, hw, dtype=np.float64)
    ref = torch_forward(torch_model, x)
    out = keras_forward(keras_model, x)
    assert out.dtype == np.float64
    assert np.abs(out - ref).max() <= F64_RTOL * np.abs(ref).max(), name
