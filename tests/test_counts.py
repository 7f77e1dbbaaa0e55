"""count_params / count_flops / layer_table against published numbers and the built models."""

import keras
import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import resnet_torch as rt
from resnet_keras.layers import keras_name
from shared_specs import (
    ParamCount,
    SpecError,
    count_flops,
    count_params,
    get_spec,
    layer_table,
    list_presets,
    output_shape,
)
from support import keras_model, nhwc

# torchvision's model documentation (trainable parameters, 1000 classes)
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "resnet101": 44_549_160,
    "resnet152": 60_192_808, "resnext50_32x4d": 25_028_904, "resnext101_32x8d": 88_791_336,
    "resnext101_64x4d": 83_455_272, "wide_resnet50_2": 68_883_240, "wide_resnet101_2": 126_886_696,
}
# keras.applications Model.count_params(): conv biases and BN moving statistics included
KERAS_APPLICATIONS_PARAMS = {
    "resnet50_v1": 25_636_712, "resnet101_v1": 44_707_176, "resnet152_v1": 60_419_944,
    "resnet50_v2": 25_613_800, "resnet101_v2": 44_675_560, "resnet152_v2": 60_380_648,
}
# He et al. 2015 Table 6, as printed (millions, rounded by the paper)
CIFAR_PAPER_PARAMS_M = {"cifar_resnet20": 0.27, "cifar_resnet32": 0.46, "cifar_resnet44": 0.66,
                        "cifar_resnet56": 0.85, "cifar_resnet110": 1.7, "cifar_resnet1202": 19.4}
# He et al. 2015 Table 1 FLOPs (multiply-adds at 224x224, one decimal): the original v1
# layout, i.e. stride on the first 1x1 for the bottleneck nets (our *_v1 presets).
PAPER_GMACS = {"resnet18": 1.8, "resnet34": 3.6, "resnet50_v1": 3.8, "resnet101_v1": 7.6, "resnet152_v1": 11.3}


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_trainable_params_equal_torchvision_documentation(name):
    assert count_params(get_spec(name)).trainable == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("name", sorted(KERAS_APPLICATIONS_PARAMS))
def test_total_params_equal_keras_applications(name):
    assert count_params(get_spec(name)).total == KERAS_APPLICATIONS_PARAMS[name]


@pytest.mark.parametrize("name", sorted(CIFAR_PAPER_PARAMS_M))
def test_cifar_params_match_he_et_al_table_6(name):
    millions = count_params(get_spec(name)).trainable / 1e6
    digits = 1 if CIFAR_PAPER_PARAMS_M[name] >= 1 else 2
    assert round(millions, digits) == CIFAR_PAPER_PARAMS_M[name]


@pytest.mark.parametrize("name", sorted(PAPER_GMACS))
def test_macs_match_he_et_al_table_1(name):
    # The table prints one decimal, neither consistently rounded nor truncated (3.66e9
    # is printed 3.6, 7.57e9 is printed 7.6), so allow less than one unit of the last digit.
    assert abs(count_flops(get_spec(name), (224, 224)) / 1e9 - PAPER_GMACS[name]) < 0.1


def test_resnet50_macs_match_torchvision_published_gflops():
    # torchvision lists resnet50 at 4.09 GFLOPS (multiply-adds) and resnet18 at 1.81
    assert round(count_flops(get_spec("resnet50")) / 1e9, 2) == 4.09
    assert round(count_flops(get_spec("resnet18")) / 1e9, 2) == 1.81
    # trap 19: keras.applications' ResNet50 is the cheaper original v1
    assert round(count_flops(get_spec("resnet50_v1")) / 1e9, 2) == 3.86


@pytest.mark.parametrize("name", list_presets())
def test_counts_equal_the_built_torch_model(name):
    with torch.device("meta"):  # shapes without memory: timm's largest presets hold up to 936M parameters
        model = rt.build(name)
    params = sum(p.numel() for p in model.parameters())
    # the state_dict's buffers: BlurPool's fixed filter is a non-persistent buffer, not a weight
    buffers = sum(b.numel() for n, b in model.state_dict().items() if not n.endswith("num_batches_tracked")) - params
    assert count_params(model.spec) == ParamCount(params, buffers)


@pytest.mark.parametrize(("name", "hw"), [("resnet50", (65, 47)), ("resnext50_32x4d", (33, 33)),
                                          ("tutorial_keras_resnet18", (37, 30)), ("cifar_resnet20", (31, 32))])
def test_macs_equal_torch_flop_counter(name, hw):
    model = rt.build(name).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, *hw))
    # FlopCounterMode counts 2 FLOPs per multiply-add of convolutions and matmuls
    assert count_flops(model.spec, hw) * 2 == counter.get_total_flops()


SHAPE_CASES = [("resnet50", (65, 47)), ("resnet50_v2", (33, 47)), ("tutorial_keras_resnet18", (37, 30)),
               ("tutorial_cifar_resnet18", (32, 32)), ("cifar_resnet20", (31, 7)), ("resnet18", (1, 1))]


@pytest.mark.parametrize(("name", "hw"), SHAPE_CASES)
def test_layer_shapes_equal_torch_module_outputs(name, hw):
    model = rt.build(name).eval()
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: seen.__setitem__(n, tuple(o.shape[1:])))
             for n, m in model.named_modules() if n]
    with torch.no_grad():
        out = model(torch.zeros(1, 3, *hw))
    for h in hooks:
        h.remove()
    rows = layer_table(model.spec, hw)
    assert {r.name: r.output_shape for r in rows} == {r.name: seen[r.name] for r in rows}
    assert tuple(out.shape[1:]) == output_shape(model.spec, hw)


@pytest.mark.keras_backend
@pytest.mark.parametrize(("name", "hw"), SHAPE_CASES)
def test_layer_shapes_equal_keras_layer_outputs(name, hw):
    model = keras_model(name, None)  # the structure alone
    rows = layer_table(model.spec, hw)
    probe = keras.Model(model.input, [model.get_layer(keras_name(r.name)).output for r in rows])
    outputs = probe(nhwc(np.zeros((1, 3, *hw), np.float32)))
    for row, out in zip(rows, outputs):
        shape = tuple(out.shape[1:])
        expected = row.output_shape if len(row.output_shape) == 1 else (*row.output_shape[1:], row.output_shape[0])
        assert shape == expected, row.name


def test_too_small_input_is_a_clear_error():
    with pytest.raises(SpecError, match=r"input too small: conv1 gets 2 pixels, fewer than its 3x3 window needs"):
        layer_table(get_spec("tutorial_cifar_resnet18"), (2, 2))
