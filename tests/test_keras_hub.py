"""keras-hub's ResNets <-> canonical weights: every block type, both ways, on every Keras backend.

keras-hub models are built from configs (no download) with random weights and random BatchNorm
statistics; stages are cut to two (64 and 16 filters, strided second) so that each layout's
identity block, first-stage shortcut and strided shortcut appear at small cost.
"""

import numpy as np
import pytest

import resnet_torch as rt
from resnet_keras.keras_hub import config_of_spec, from_keras_hub, spec_of_config, to_keras_hub
from shared_specs import SpecError, get_spec, list_presets
from support import assert_f32_close, keras_forward, random_input, random_weights, torch_forward

LAYOUTS = [  # (block_type, use_pre_activation): every ResNetBackbone block keras-hub has
    ("basic_block", False), ("bottleneck_block", False), ("basic_block", True), ("bottleneck_block", True),
    ("basic_block_vd", False), ("bottleneck_block_vd", False),
]
HW = (37, 41)  # odd sizes: where 'same' padding and the avg-pool shortcut's last window matter


def small_config(block_type: str, preact: bool) -> dict:
    vd = block_type.endswith("_vd")
    return dict(input_conv_filters=[32, 32, 64] if vd else [64], input_conv_kernel_sizes=[3, 3, 3] if vd else [7],
                stackwise_num_filters=[64, 16], stackwise_num_blocks=[2, 1], stackwise_num_strides=[1, 2],
                block_type=block_type, use_pre_activation=preact)


def randomize(model, seed: int) -> None:
    """Random kernels, BatchNorm gammas/betas and running statistics (keras-hub's init leaves BN at identity)."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        shape = tuple(v.shape)
        if v.name in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        elif v.name == "kernel":
            value = rng.normal(0, np.sqrt(2 / np.prod(shape[:-1])), shape)
        else:
            value = rng.normal(0, 0.1, shape)
        v.assign(value.astype("float32"))


@pytest.mark.keras_backend
@pytest.mark.parametrize("block_type, preact", LAYOUTS)
def test_every_block_type_converts_both_ways(block_type, preact):
    import keras_hub

    backbone = keras_hub.models.ResNetBackbone(**small_config(block_type, preact))
    model = keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=5, activation=None)
    randomize(model, seed=LAYOUTS.index((block_type, preact)))
    spec, weights = from_keras_hub(model)
    assert spec.stages[0].always_project == (block_type == "basic_block_vd")  # PaddleClas's first-stage projection
    x = random_input(spec, HW)
    torch_model = rt.build(spec)
    rt.import_weights(torch_model, weights)
    # float32 bound (tests/support.py): the same network; only accumulation order differs
    assert_f32_close(torch_forward(torch_model, x), keras_forward(model, x), f"keras-hub {block_type} -> torch")

    # the other way: canonical weights of the spec (as resnet_torch holds them) into keras-hub's own model
    other = random_weights(spec, seed=7)
    back = to_keras_hub(spec, other)
    rt.import_weights(torch_model, other)
    assert_f32_close(keras_forward(back, x), torch_forward(torch_model, x), f"torch -> keras-hub {block_type}")
    again, round_trip = from_keras_hub(back)
    assert again == spec and all(np.array_equal(round_trip[k], other[k]) for k in other)  # lossless


@pytest.mark.keras_backend
def test_a_backbone_converts_to_its_feature_map():
    import keras_hub

    backbone = keras_hub.models.ResNetBackbone(**small_config("bottleneck_block", True))
    randomize(backbone, seed=11)
    spec, weights = from_keras_hub(backbone)
    assert spec.num_classes is None
    x = random_input(spec, HW)
    torch_model = rt.build(spec)
    rt.import_weights(torch_model, weights)
    # float32 bound (tests/support.py) on the last feature map, NCHW
    assert_f32_close(torch_forward(torch_model, x), keras_forward(backbone, x), "keras-hub backbone -> torch")
    assert type(to_keras_hub(spec, weights)).__name__ == "ResNetBackbone"


def test_vd_presets_are_keras_hubs_configs():
    for name in list_presets("resnet_vd_*"):
        spec = get_spec(name)
        config = config_of_spec(spec)
        assert (config["input_conv_filters"], config["block_type"]) == ([32, 32, 64], f"{spec.block}_block_vd")
        assert spec_of_config(config, num_classes=1000) == spec  # named after its preset


def test_torchvision_and_timm_layouts_keras_hub_builds_are_accepted():
    # keras-hub trains its BatchNorm statistics the Keras way and zero-pads the stem pool after a
    # ReLU: the same network in eval mode, so torchvision's resnet18 and timm's resnet50d convert
    assert config_of_spec(get_spec("resnet18"))["block_type"] == "basic_block"
    assert config_of_spec(get_spec("resnet50d"))["block_type"] == "bottleneck_block_vd"


@pytest.mark.parametrize("name, fields", [
    ("resnet50_v1", ["bottleneck_stride='1x1'", "conv_bias='all'", "batchnorm.epsilon=1.001e-05"]),
    ("resnet18d", ["stages[0].always_project=False (keras-hub: True)"]),
    ("cifar_resnet20", ["shortcut='A'"]),
])
def test_specs_keras_hub_cannot_build_are_refused_by_field(name, fields):
    with pytest.raises(SpecError) as err:
        config_of_spec(get_spec(name))
    assert all(f in str(err.value) for f in fields), str(err.value)


def test_models_that_are_not_keras_hub_resnets_are_refused():
    import keras

    with pytest.raises(SpecError, match="expected a keras-hub ResNetBackbone or ResNetImageClassifier"):
        from_keras_hub(keras.Sequential([keras.layers.Dense(2)]))
    with pytest.raises(SpecError, match="pre-activation vd shortcut has no pool"):
        spec_of_config(small_config("basic_block_vd", True))
    with pytest.raises(SpecError, match="one odd kernel size"):
        spec_of_config({**small_config("basic_block", False), "input_conv_kernel_sizes": [4]})


def test_always_project_is_a_spec_field_both_builders_see():
    from shared_specs import ResNetSpec, make_plan

    spec = get_spec("resnet_vd_18")
    first = next(make_plan(spec).blocks())
    assert [op.name for op in first.shortcut] == ["layer1.0.downsample.1", "layer1.0.downsample.2"]  # no pool: stride 1
    assert ResNetSpec.from_json(spec.to_json()) == spec
    # timm's resnet18d: no projection there, PyTorch's BatchNorm statistics and max-pool padding
    assert [d.path for d in spec.differences(get_spec("resnet18d"), ignore=("name", "zero_init_last_bn"))] == [
        "batchnorm.running_var", "stages[0].always_project", "stem.pool_pad_value"]
    with pytest.raises(SpecError, match=r"stages\[0\].always_project needs a projection shortcut"):
        get_spec("cifar_resnet20", stages=[{"depth": 3, "width": 16, "always_project": True}])
