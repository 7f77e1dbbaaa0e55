"""PyTorch vs Keras parity for every preset: eval and training mode, odd and tiny inputs, gradients.

Marked keras_backend: `make test` runs this file once per Keras backend, each in its own process:
every preset on TensorFlow, one preset of each architecture kind on JAX and torch
(support.presets_for_this_backend). Weights are random with random BatchNorm running statistics
(tests/support.random_weights).
"""

import zlib

import numpy as np
import pytest

import resnet_torch as rt
from shared_specs import count_flops, count_params, get_spec
from support import (
    BACKEND,
    assert_f32_close,
    assert_gradients_agree,
    keras_forward,
    keras_model,
    presets_for_this_backend,
    random_input,
    random_weights,
    torch_forward,
)

pytestmark = pytest.mark.keras_backend


def pair(spec, seed: int):
    """Torch and Keras models of `spec` holding the same random weights (Keras's from the cache)."""
    weights = random_weights(spec, seed=seed)
    torch_model = rt.build(spec)
    rt.import_weights(torch_model, weights)
    return torch_model, keras_model(spec, weights)


def sizes(name: str) -> list[tuple[int, int]]:
    """Odd, non-square sizes: where TF 'same' padding and PyTorch padding part ways (trap 4).
    Two for the cheap nets, one for those above 5 GMACs at 224x224 (the same layers, deeper or
    wider), and a small one for the 1202-layer CIFAR net."""
    if "cifar" in name:
        return [(33, 31)] if name != "cifar_resnet1202" else [(9, 7)]
    big = count_flops(get_spec(name), (224, 224)) > 5e9
    return [(41, 35)] if big else [(65, 47), (32, 33)]


@pytest.mark.parametrize("name", presets_for_this_backend())
def test_eval_and_training_outputs_agree(name):
    spec = get_spec(name)
    torch_model, k_model = pair(spec, seed=zlib.crc32(name.encode()) % 1000)  # hash() differs per process
    counts = count_params(spec)
    assert counts.total == k_model.count_params()  # Keras counts BN moving statistics too
    assert counts.trainable == sum(int(np.prod(v.shape)) for v in k_model.trainable_weights)
    inputs = [random_input(spec, hw) for hw in sizes(name)]
    for x in inputs:
        ref = torch_forward(torch_model, x, training=False)
        assert_f32_close(keras_forward(k_model, x, training=False), ref, f"{name} eval {x.shape}")
    # Training mode normalises with batch statistics in both frameworks. It also updates the
    # running statistics, differently (unbiased vs biased variance, trap 8), hence eval first.
    for x in inputs:
        ref = torch_forward(torch_model, x, training=True)
        assert_f32_close(keras_forward(k_model, x, training=True), ref, f"{name} train {x.shape}")


def test_every_preset_or_a_representative_of_its_kind_runs_here():
    # On JAX and torch, one preset per architecture kind: each kind's cheapest, which covers
    # every kind the registry holds (a new block kind adds its own representative).
    from support import architecture_kind, hand_registered_presets, representative_presets

    chosen = presets_for_this_backend()
    kinds = {architecture_kind(get_spec(n)) for n in hand_registered_presets()}
    assert {architecture_kind(get_spec(n)) for n in chosen} == kinds
    assert chosen == hand_registered_presets() or BACKEND != "tensorflow"
    assert {"resnet18", "resnet50", "resnet50_v1", "resnet50_v2", "resnext50_32x4d", "cifar_resnet20",
            "resnet18d", "tutorial_keras_resnet18"} <= set(representative_presets())


TINY_CASES = ["resnet18", "resnet50_v2", "tutorial_keras_resnet18", "cifar_resnet20", "resnet50_v1"]


@pytest.mark.parametrize("name", TINY_CASES)
def test_every_input_size_from_1_to_35_agrees(name):
    """Explicit padding makes every size agree, including 1x1 and sizes that are odd at some depth."""
    spec = get_spec(name, num_classes=None, head_activation="none")  # feature maps show misalignment directly
    torch_model, k_model = pair(spec, seed=0)
    # each size is a new shape for every layer (JAX and torch trace per shape): the full set on
    # TensorFlow; elsewhere 1 and 2 (below every window) and 7, 17, 35 (odd and even maps at each depth)
    for size in [1, 2, 3, 5, 7, 8, 15, 17, 31, 35] if BACKEND == "tensorflow" else [1, 2, 7, 17, 35]:
        x = random_input(spec, (size, size + 1), batch=1)
        ref = torch_forward(torch_model, x)
        assert_f32_close(keras_forward(k_model, x), ref, f"{name} {size}x{size + 1}")


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet50_v2", "cifar_resnet20"])
def test_input_and_weight_gradients_agree(name):
    spec = get_spec(name)
    torch_model, k_model = pair(spec, seed=7)
    upstream = np.random.default_rng(2).normal(size=(3, spec.num_classes)).astype(np.float32)
    # odd at every depth (35 -> 18 -> 9 -> 5 -> 3 -> 2); few units, so few inputs put one near a kink
    assert_gradients_agree(torch_model, k_model, spec, (35, 33), upstream, name)


def test_this_process_runs_the_backend_it_was_asked_for():
    import os

    assert BACKEND == os.environ["KERAS_BACKEND"]
