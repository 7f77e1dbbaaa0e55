"""transformers' ResNet <-> canonical weights: every ResNetConfig layout, both ways.

Models are built from ResNetConfig (no download) with random weights and BatchNorm statistics,
at odd input sizes; depths and widths are cut small (hidden_sizes of 3 stages, 1-2 blocks).
"""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import resnet_torch as rt
from resnet_torch.transformers import config_of_spec, from_transformers, spec_of_config, to_transformers
from shared_specs import SpecError, WeightsError, get_spec
from support import assert_f32_close, keras_forward, keras_model, random_input, random_weights, torch_forward

HW = (37, 41)
# (layer_type, downsample_in_first_stage, downsample_in_bottleneck, classifier): every switch ResNetConfig has
LAYOUTS = [
    ("basic", False, False, True), ("basic", True, False, True), ("bottleneck", False, False, True),
    ("bottleneck", True, True, True), ("bottleneck", False, True, False),
]


def hf_model(layer_type, first_stage, in_bottleneck, classifier, seed=0):
    from transformers import ResNetConfig, ResNetForImageClassification, ResNetModel

    config = ResNetConfig(embedding_size=24, hidden_sizes=[32, 48, 64] if layer_type == "basic" else [64, 96, 128],
                          depths=[2, 1, 2], layer_type=layer_type, downsample_in_first_stage=first_stage,
                          downsample_in_bottleneck=in_bottleneck, num_labels=5)
    model = (ResNetForImageClassification if classifier else ResNetModel)(config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # transformers initialises BN at identity: random statistics show layout errors
        for name, value in model.state_dict().items():
            if name.endswith(("running_var", "normalization.weight")):
                value.copy_(torch.rand(value.shape, generator=generator) + 0.5)
            elif name.endswith(("running_mean", "normalization.bias")):
                value.copy_(torch.randn(value.shape, generator=generator) * 0.1)
    return model


def hf_forward(model, x):
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    return (out.logits if hasattr(out, "logits") else out.last_hidden_state).numpy()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_converts_both_ways(layout):
    model = hf_model(*layout, seed=LAYOUTS.index(layout))
    spec, weights = from_transformers(model)
    assert spec.stages[0].stride == (2 if layout[1] else 1)
    assert spec.bottleneck_stride == ("1x1" if layout[2] else "3x3")
    x = random_input(spec, HW)
    ours = rt.build(spec)
    rt.import_weights(ours, weights)
    # float32 bound (tests/support.py); both run the same ATen kernels, in practice bit for bit
    assert_f32_close(torch_forward(ours, x), hf_forward(model, x), f"transformers {layout} -> resnet_torch")
    from_state, state_weights = from_transformers(model.state_dict(), config=model.config)  # a state_dict + config
    assert from_state == spec and all(np.array_equal(state_weights[k], weights[k]) for k in weights)

    other = random_weights(spec, seed=3)
    back = to_transformers(spec, other)
    rt.import_weights(ours, other)
    assert_f32_close(hf_forward(back, x), torch_forward(ours, x), f"resnet_torch -> transformers {layout}")
    again, round_trip = from_transformers(back)
    assert again == spec and all(np.array_equal(round_trip[k], other[k]) for k in other)  # lossless


@pytest.mark.keras_backend
@pytest.mark.parametrize("layout", [LAYOUTS[1], LAYOUTS[3]])
def test_transformers_weights_run_in_keras(layout):
    model = hf_model(*layout, seed=5)
    spec, weights = from_transformers(model)
    x = random_input(spec, HW)
    # float32 bound (tests/support.py): oneDNN/XLA/ATen-channels-last accumulate in other orders
    ours = keras_forward(keras_model(spec, weights), x)
    assert_f32_close(ours, hf_forward(model, x), f"transformers {layout} -> keras")


def test_a_state_dict_without_config_takes_what_its_shapes_say():
    model = hf_model("basic", True, False, True)
    spec, _ = from_transformers(model.state_dict())
    # embedding 24 -> 32: the stage-1 projection exists either way, so the stride is ResNetConfig's default
    assert spec.stages[0].stride == 1 and spec.stages[1:] == from_transformers(model)[0].stages[1:]
    square = hf_model("basic", True, False, True)
    square.config.embedding_size = 32
    from transformers import ResNetForImageClassification

    strided = ResNetForImageClassification(square.config)  # 32 -> 32 channels: only a stride projects
    assert from_transformers(strided.state_dict())[0].stages[0].stride == 2


@pytest.mark.parametrize("name, fields", [
    ("resnet50_v2", ["preactivation=True"]),
    ("resnet_vd_18", ["shortcut='D'", "stem.widths=[32, 32, 64]"]),
    ("resnext50_32x4d", ["groups=32"]),
])
def test_specs_transformers_cannot_build_are_refused_by_field(name, fields):
    with pytest.raises(SpecError) as err:
        to_transformers(get_spec(name), {})
    assert all(f in str(err.value) for f in fields), str(err.value)


def test_torchvision_layouts_are_transformers_layouts():
    for name in ("resnet18", "resnet50"):  # microsoft/resnet-18 and -50
        assert spec_of_config(config_of_spec(get_spec(name)), num_classes=1000) == get_spec(name)


def test_what_transformers_cannot_express_is_named():
    with pytest.raises(SpecError, match="hidden_act 'gelu'"):
        spec_of_config({"hidden_act": "gelu"})
    with pytest.raises(SpecError, match="4 times its inner width"):
        spec_of_config({"hidden_sizes": [30, 60], "depths": [1, 1]})
    with pytest.raises(SpecError, match="model_type 'vit'"):
        from_transformers({}, config={"model_type": "vit"})
    state = hf_model("basic", False, False, True).state_dict()
    state["resnet.extra.weight"] = torch.zeros(3)
    with pytest.raises(WeightsError, match="resnet.extra.weight"):
        from_transformers(state)


def test_resnet_torch_with_transformers_loads_no_keras():
    code = """
        import sys
        from resnet_torch.transformers import from_transformers, to_transformers
        from shared_specs import get_spec
        from shared_specs.synthetic import random_weights
        spec = get_spec("resnet18", num_classes=3)
        from_transformers(to_transformers(spec, random_weights(spec)))
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("keras", "tensorflow", "jax", "resnet_keras")))
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
