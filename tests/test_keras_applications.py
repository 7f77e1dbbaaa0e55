"""keras.applications ResNets <-> (spec, canonical weights), both directions, on every Keras backend.

The keras.applications models are built by keras.applications itself (weights=None)
and given random weights and BatchNorm statistics variable by variable, by Keras
variable name, without the converter's tables; outputs are compared in eval mode.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

import resnet_keras as rk
import resnet_torch as rt
from shared_specs import ResNetSpec, SpecError, WeightsError, get_spec
from support import (
    BACKEND,
    assert_f32_close,
    keras_forward,
    nchw,
    nhwc,
    random_input,
    random_weights,
    torch_forward,
)

# Marked keras_backend where the outcome depends on the backend (outputs, variables, files);
# refusals judged from the spec and layer configuration alone run once.

# (constructor, its keyword arguments, the spec it must convert to, input sizes (H, W)).
# Odd sizes exercise every padding and the v2 MaxPooling2D(1, 2) shortcut on odd maps;
# the deeper nets run one small size to keep the suite fast (one size throughout also
# lets the JAX backend reuse its per-shape compilations).
FROM_CASES = [
    ("ResNet50", {"classes": 10}, get_spec("resnet50_v1", num_classes=10, head_activation="softmax"),
     [(33, 47), (64, 64)]),
    ("ResNet50V2", {"classes": 10, "classifier_activation": None}, get_spec("resnet50_v2", num_classes=10),
     [(33, 47), (64, 64)]),
    ("ResNet101", {"include_top": False}, get_spec("resnet101_v1", num_classes=None), [(33, 47)]),
    ("ResNet101V2", {"classes": 3}, get_spec("resnet101_v2", num_classes=3, head_activation="softmax"), [(33, 47)]),
    ("ResNet152", {"classes": 5, "classifier_activation": None}, get_spec("resnet152_v1", num_classes=5), [(33, 47)]),
    ("ResNet152V2", {"include_top": False, "channels": 1}, get_spec("resnet152_v2", num_classes=None, in_channels=1),
     [(33, 47)]),
]


def keras_application(constructor: str, seed: int = 0, channels: int = 3, **kwargs: object) -> keras.Model:
    """A keras.applications model with random weights and non-trivial BN statistics.

    Built on a (None, None, C) input tensor so that one model runs at every size. The
    variable that closes each residual branch (v1: `_3_bn`, v2: `_3_conv`) is scaled by
    1/blocks so that activations stay bounded in the 152-layer nets in eval mode.
    """
    model = getattr(keras.applications, constructor)(
        weights=None, input_tensor=keras.Input((None, None, channels)), **kwargs)
    names = [layer.name for layer in model.layers]
    closing = "_3_conv" if "post_bn" in names else "_3_bn"
    blocks = sum(name.endswith("_1_conv") for name in names)
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        if variable.name == "kernel":  # He-normal on Keras's (..., in, out) layout
            value = rng.normal(0.0, math.sqrt(2.0 / math.prod(shape[:-1])), shape)
        elif variable.name == "moving_variance":
            value = rng.uniform(0.5, 2.0, shape)
        elif variable.name == "gamma":
            value = rng.uniform(0.5, 1.5, shape)
        else:  # beta, moving_mean, conv and dense biases
            value = rng.normal(0.0, 0.3, shape)
        if variable.path.split("/")[0].endswith(closing) and variable.name in ("kernel", "bias", "gamma", "beta"):
            value = value / blocks
        variable.assign(value.astype(np.float32))
    return model


# The 101- and 152-layer cases differ from the 50-layer ones in stage depths and heads, read by
# backend-independent code; their outputs are compared on TensorFlow, the 50-layer ones on every
# backend (the JAX and torch runs add what differs per backend: Keras's kernels).
BACKEND_CASES = FROM_CASES if BACKEND == "tensorflow" else [c for c in FROM_CASES if c[0] in ("ResNet50", "ResNet50V2")]


@pytest.fixture(scope="module", params=BACKEND_CASES, ids=[c[0] for c in BACKEND_CASES])
def converted(request: pytest.FixtureRequest) -> tuple[str, keras.Model, ResNetSpec, dict, ResNetSpec, list]:
    """A FROM_CASES model and its conversion, once per module: pytest groups the tests by it."""
    constructor, kwargs, expected, sizes = request.param
    model = keras_application(constructor, **kwargs)
    spec, weights = rk.from_keras_applications(model)
    return constructor, model, spec, weights, expected, sizes


def application_forward(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Eval-mode forward of a keras.applications model on NCHW `x` (built on an input
    tensor, its inputs are a one-element list)."""
    y = keras.ops.convert_to_numpy(model([nhwc(x)], training=False))
    return nchw(y) if y.ndim == 4 else y


def variables(model: keras.Model) -> dict[str, np.ndarray]:
    return {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}


# -- keras.applications -> canonical -------------------------------------------------


@pytest.mark.keras_backend
def test_from_keras_applications_matches_outputs(converted: tuple) -> None:
    constructor, model, spec, weights, expected, sizes = converted
    assert spec == expected, spec.differences(expected, ignore=())
    keras_model = rk.build(spec)
    rk.import_weights(keras_model, weights)
    torch_model = rt.build(spec)
    rt.import_weights(torch_model, weights)
    for hw in sizes:
        x = random_input(spec, hw)
        reference = application_forward(model, x)
        # both within the float32 bound (support.F32_RTOL): conv accumulation order differs
        what = f"keras.applications.{constructor} {hw}"
        assert_f32_close(keras_forward(keras_model, x), reference, f"resnet_keras vs {what}")
        assert_f32_close(torch_forward(torch_model, x), reference, f"resnet_torch vs {what}")


@pytest.mark.keras_backend
def test_round_trip_is_bit_exact(converted: tuple) -> None:
    _, model, spec, weights, _, _ = converted
    rebuilt = rk.to_keras_applications(spec, weights)
    original = variables(model)
    assert set(variables(rebuilt)) == set(original)
    for path, value in variables(rebuilt).items():
        np.testing.assert_array_equal(value, original[path], err_msg=path)
    # the canonical weights are copies: changing the model leaves them as they were (trap 17)
    kernel = model.get_layer("conv1_conv").kernel
    before = weights["conv1.weight"].copy()
    kernel.assign(np.zeros(kernel.shape, np.float32))
    try:
        np.testing.assert_array_equal(weights["conv1.weight"], before)
    finally:
        kernel.assign(original["conv1_conv/kernel"])


def test_stem_pool_padding_matters_for_v2_only() -> None:
    """Trap 5: keras.applications zero-pads its stem max-pool (the tests above reproduce it
    with pool_pad_value="zero"). v1 pools after a ReLU, where -inf padding gives the very
    same maxima; v2 pools the raw conv output, where it does not. (One block after the
    stem is enough to see it.)"""
    for preset, differs in (("resnet50_v1", False), ("resnet50_v2", True)):
        spec = get_spec(preset, num_classes=None, stages=[{"depth": 1, "width": 64, "stride": 1}])
        weights = random_weights(spec, seed=3)
        x = random_input(spec, (33, 47))
        outputs = []
        for pad_value in ("zero", "-inf"):
            model = rt.build(spec.replace(stem={"pool_pad_value": pad_value}))
            rt.import_weights(model, weights)
            outputs.append(torch_forward(model, x))
        zero, minus_inf = outputs
        if differs:
            relative = float(np.abs(minus_inf - zero).max() / np.abs(zero).max())
            assert relative > 1e-2, f"{preset}: -inf padding should change the output, got {relative:.2g}"
        else:
            np.testing.assert_array_equal(minus_inf, zero, err_msg=preset)  # max over a window holding a value >= 0


# -- canonical -> keras.applications -------------------------------------------------

# (preset, overrides, the constructor it must use, input size): softmax and logits heads, no
# head. The deeper nets differ only in stage depths; test_round_trip_is_bit_exact proves that
# to_keras_applications gives all six exactly the variables of an output-checked model.
TO_CASES = [
    ("resnet50_v1", {"num_classes": 10, "head_activation": "softmax"}, "ResNet50", (33, 47)),
    ("resnet50_v2", {"num_classes": 7}, "ResNet50V2", (33, 47)),
    ("resnet50_v2", {"num_classes": None, "in_channels": 1}, "ResNet50V2", (33, 47)),
]


@pytest.mark.parametrize("preset, overrides, constructor, hw", TO_CASES, ids=["softmax", "logits", "no_top"])
@pytest.mark.keras_backend
def test_to_keras_applications_matches_outputs(preset: str, overrides: dict, constructor: str,
                                               hw: tuple[int, int]) -> None:
    spec = get_spec(preset, **overrides)
    weights = random_weights(spec, seed=5)
    model = rk.to_keras_applications(spec, weights, input_size=hw if spec.num_classes else None)
    assert model.name == constructor.lower()  # keras.applications' default model name: built by `constructor`
    x = random_input(spec, hw)
    torch_model = rt.build(spec)
    rt.import_weights(torch_model, weights)
    # the float32 bound (support.F32_RTOL): ATen vs oneDNN/XLA accumulation order
    assert_f32_close(keras_forward(model, x), torch_forward(torch_model, x),
                     f"keras.applications.{constructor} vs resnet_torch")


@pytest.mark.parametrize("constructor, preset", [("ResNet50", "resnet50_v1"), ("ResNet50V2", "resnet50_v2")])
@pytest.mark.keras_backend
def test_saved_weights_load_into_keras_applications(tmp_path, constructor: str, preset: str) -> None:
    spec = get_spec(preset, head_activation="softmax")  # keras.applications' defaults: 1000 classes, softmax
    weights = random_weights(spec, seed=7)
    exported = rk.to_keras_applications(spec, weights)
    path = tmp_path / f"{preset}.weights.h5"
    exported.save_weights(path)
    fresh = getattr(keras.applications, constructor)(weights=None)
    fresh.load_weights(path)
    loaded = variables(fresh)
    assert set(loaded) == set(variables(exported))
    for name, value in variables(exported).items():
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)
    _, back = rk.from_keras_applications(fresh)
    assert list(back) == list(weights)
    for name, value in weights.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)


# -- what is not a keras.applications ResNet -----------------------------------------


def test_rejects_a_model_that_is_not_a_keras_applications_resnet() -> None:
    inputs = keras.Input((None, None, 3))
    small = keras.Model(inputs, keras.layers.Conv2D(8, 3, name="conv1")(inputs), name="small")
    with pytest.raises(SpecError, match="'small' is not a keras.applications ResNet: it has no layer 'conv1_conv'"):
        rk.from_keras_applications(small)
    with pytest.raises(SpecError, match="expected a keras.Model, got Conv2D"):
        rk.from_keras_applications(keras.layers.Conv2D(8, 3))  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs, message", [
    ({"include_top": False, "pooling": "avg"}, "include_top=False, pooling='avg'"),
    ({"classifier_activation": "sigmoid"}, "classifier_activation='sigmoid' has no spec counterpart"),
])
def test_rejects_heads_a_spec_cannot_express(kwargs: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        rk.from_keras_applications(keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), **kwargs))


def test_rejects_layers_added_on_top() -> None:
    base = keras.applications.ResNet50V2(weights=None, include_top=False)
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    model = keras.Model(base.input, keras.layers.Dense(2, name="my_head")(x))
    message = "ends in layer 'my_head' where a keras.applications ResNet ends in 'post_relu'"
    with pytest.raises(SpecError, match=message):
        rk.from_keras_applications(model)


def test_rejects_a_changed_layer() -> None:
    # keras.applications' own ResNet builder (one block suffices) with use_bias=False, as its
    # ResNeXt had: same layer names, another layout, named by the first layer that differs.
    from keras.src.applications.resnet import ResNet, stack_residual_blocks_v1

    def stack_fn(x: object) -> object:
        return stack_residual_blocks_v1(x, 64, 1, stride1=1, name="conv2")

    model = ResNet(stack_fn, preact=False, use_bias=False, weights=None, include_top=False)
    with pytest.raises(SpecError, match="layer 'conv1_conv' has use_bias=False; the resnet5_v1 layout needs True"):
        rk.from_keras_applications(model)


@pytest.mark.parametrize("preset, fields", [
    # torchvision's resnet50 is "v1.5": everything but the stage depths differs from ResNet50
    ("resnet50", ["batchnorm.epsilon", "batchnorm.running_stats_decay", "bottleneck_stride", "conv_bias",
                  "stem.pool_pad_value"]),
    ("resnext50_32x4d", ["groups", "width_per_group"]),
    ("resnet34", ["block"]),  # resnet50's depths, basic blocks
    ("resnet18", ["stages"]),
    ("cifar_resnet20", ["stages"]),
    ("tutorial_keras_resnet18", ["stages"]),
])
def test_to_keras_applications_names_what_it_cannot_express(preset: str, fields: list[str]) -> None:
    with pytest.raises(SpecError) as info:
        rk.to_keras_applications(get_spec(preset), {})  # the spec is judged before the weights
    for field in fields:
        assert field in str(info.value), str(info.value)


def test_to_keras_applications_names_a_single_changed_field() -> None:
    spec = get_spec("resnet50_v2", batchnorm={"epsilon": 1e-3})
    with pytest.raises(SpecError, match=r"^resnet50_v2 is not expressible as keras.applications.ResNet50V2: "
                                        r"batchnorm.epsilon=0.001 \(keras.applications: 1.001e-05\)$"):
        rk.to_keras_applications(spec, {})


def test_to_keras_applications_checks_all_weights_before_building() -> None:
    spec = get_spec("resnet50_v1", num_classes=None)
    weights = random_weights(spec)
    del weights["layer1.0.conv1.bias"]
    with pytest.raises(WeightsError, match="missing 1: layer1.0.conv1.bias"):
        rk.to_keras_applications(spec, weights)

