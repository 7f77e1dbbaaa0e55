"""Side-by-side tables and generated source: the PyTorch tree and the Keras graph agree row by
row, and the source a learner would write, executed, loads canonical weights and computes
exactly what our builders build."""

from __future__ import annotations

import pytest
import torch

import resnet_keras as rk
import resnet_torch as rt
from resnet_rosetta.cli import main
from resnet_rosetta.teaching.side_by_side import side_by_side
from resnet_rosetta.teaching.source import resnet_source
from shared_specs import SpecError, get_spec, make_plan
from shared_specs.synthetic import random_weights
from support import assert_f32_close, keras_forward, random_input, torch_forward

TWO_STAGES = [{"depth": 2, "width": 16, "stride": 2}, {"depth": 1, "width": 32, "stride": 2}]

# every option the generator writes, each case small enough to run on every backend
SOURCE_CASES = {
    "resnet18": get_spec("resnet18", stages=TWO_STAGES),  # basic blocks, projection B, -inf pool after ReLU
    "resnet50_v1": get_spec("resnet50_v1", stages=TWO_STAGES),  # stride on the 1x1, biases, zero pool padding
    "resnet50_v2": get_spec("resnet50_v2", stages=TWO_STAGES),  # pre-activation, B-subsample, stride last
    "cifar_resnet20": get_spec("cifar_resnet20"),  # option A, no pool
    # option C, unpadded stride-3 stem
    "tutorial_cifar_resnet18": get_spec("tutorial_cifar_resnet18", stages=TWO_STAGES),
    "tutorial_keras_resnet18": get_spec("tutorial_keras_resnet18", stages=TWO_STAGES),  # 'same', softmax, eps 1e-3
    # deep stem, avg-pool shortcut, groups
    "deep_stem_d_grouped": get_spec("resnext50_32x4d", shortcut="D", stages=TWO_STAGES,
                                    stem={"widths": [16, 16, 32], "kernel_size": 3}),
    "preact_basic_d_features": get_spec("resnet50_v2", block="basic", shortcut="D", stages=TWO_STAGES,
                                        stem={"pool_pad_value": "-inf"}, num_classes=None),  # -inf pool before any ReLU
    "preact_c_same": get_spec("resnet18", preactivation=True, shortcut="C", padding="same", stages=TWO_STAGES,
                              stem={"norm": False}, conv_bias="unnormalized"),
}

# running_var "unbiased" (torch default) pairs nn.BatchNorm2d with our UnbiasedBatchNormalization, "biased"
# (keras.applications) our BiasedBatchNorm2d with Keras's own BatchNormalization
KERAS_CLASS = {"Conv2d": "Conv2D", "BatchNorm2d": "UnbiasedBatchNormalization",
               "BiasedBatchNorm2d": "BatchNormalization", "ReLU": "ReLU", "Linear": "Dense",
               "MaxPool2d": "MaxPooling2D", "PaddedMaxPool2d": "MaxPooling2D",
               "GlobalAvgPool": "GlobalAveragePooling2D", "Subsample": "MaxPooling2D", "ResidualBlock": "Add",
               "SameConv2d": "Conv2D", "AvgPool2d": "AveragePooling2D", "ChannelPad": "ChannelPad",
               "Softmax": "Softmax"}


@pytest.mark.parametrize("name", ["resnet50_v2", "cifar_resnet20"])
@pytest.mark.keras_backend
def test_side_by_side_rows_agree(name: str) -> None:
    spec = get_spec(name, stages=TWO_STAGES)
    rows = side_by_side(spec, (64, 64))
    assert rows[0].canonical == "" and rows[0].torch_shape == rows[0].keras_shape
    names = {r.canonical for r in rows}
    assert {op.name for op in make_plan(spec).ops()} <= names  # every op of the plan has its row
    for row in rows[1:]:
        if row.torch_class in ("Sequential", "ResNet"):  # containers: a functional graph has none
            assert row.keras_layers == ()
            continue
        layer_name, layer_class = row.keras_layers[-1]
        assert layer_name == row.canonical.replace(".", "_") + ("_add" if row.torch_class == "ResidualBlock" else "")
        assert layer_class == KERAS_CLASS[row.torch_class], row
        n, *rest = row.torch_shape  # NCHW against NHWC
        expected = (n, *rest[1:], rest[0]) if len(rest) == 3 else row.torch_shape
        assert row.keras_shape == expected, row


def _exec(source: str) -> dict:
    namespace: dict = {}
    exec(compile(source, "<generated>", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("case", list(SOURCE_CASES))
def test_generated_torch_source_loads_canonical_weights(case: str) -> None:
    spec = SOURCE_CASES[case]
    source = resnet_source(spec, "torch")
    ns = _exec(source)
    model = ns["ResNet"]() if spec.num_classes is None else ns["ResNet"](num_classes=spec.num_classes)
    weights = random_weights(spec)
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    ours = rt.build(spec)
    rt.import_weights(ours, weights)
    x = random_input(spec, (32, 32))
    # the same PyTorch ops in the same order: equal in practice, held to the float32 bound
    assert_f32_close(torch_forward(model, x), torch_forward(ours, x), f"{case}: generated PyTorch source")


@pytest.mark.parametrize("case", list(SOURCE_CASES))
@pytest.mark.keras_backend
def test_generated_keras_source_loads_canonical_weights(case: str) -> None:
    spec = SOURCE_CASES[case]
    ns = _exec(resnet_source(spec, "keras"))
    model = ns["resnet"]() if spec.num_classes is None else ns["resnet"](num_classes=spec.num_classes)
    ours = rk.build(spec)
    rk.import_weights(ours, random_weights(spec))
    weighted = [layer for layer in ours.layers if layer.weights]
    assert sorted(layer.name for layer in weighted) == sorted(layer.name for layer in model.layers if layer.weights)
    for layer in weighted:  # canonical weights, by canonical layer name
        model.get_layer(layer.name).set_weights(layer.get_weights())
    x = random_input(spec, (32, 32))
    assert_f32_close(keras_forward(model, x), keras_forward(ours, x), f"{case}: generated Keras source")


def test_source_names_the_preset_and_reads_as_a_block_and_a_loop() -> None:
    torch_source = resnet_source(get_spec("resnet50"), "torch", preset="resnet50")
    assert torch_source.startswith('"""resnet50 in PyTorch: torchvision.models.resnet50')
    assert torch_source.count("class ") == 2  # one block class, one model class
    assert "for j in range(depth):" in torch_source and "momentum=0.1" in torch_source
    keras_source = resnet_source(get_spec("resnet50_v2"), "keras", preset="resnet50_v2")
    assert "def pre_act_bottleneck(x, width, stride, name):" in keras_source
    assert "j == depth - 1" in keras_source  # V2 strides in the last block
    with pytest.raises(SpecError, match="framework must be"):
        resnet_source(get_spec("resnet18"), "jax")


@pytest.mark.keras_backend
def test_side_by_side_and_source_commands(capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert main(["side-by-side", "cifar_resnet20"]) == 0
    out = capsys.readouterr().out
    # a strided conv needs its padding layer (trap 4); a stride-1 one pads with Keras 'same', symmetric there
    assert "layer2_0_conv1_pad (ZeroPadding2D) + layer2_0_conv1 (Conv2D)" in out
    assert "layer1.0.conv1" in out and "layer1_0_conv1 (Conv2D)" in out and "layer1_0_conv1_pad" not in out
    target = tmp_path / "cifar.py"
    assert main(["source", "cifar_resnet20", "--framework", "keras", "-o", str(target)]) == 0
    assert "def basic_block(x, width, stride, name):" in target.read_text()
    assert main(["source", "nonet", "--framework", "torch"]) == 2
    assert "unknown preset 'nonet'" in capsys.readouterr().err


# -- timm's layers -------------------------------------------------------------------------------

FAMILY_STAGES = [{"depth": 1, "width": 16, "stride": 1}, {"depth": 1, "width": 32, "stride": 2}]
FAMILY_SPECS = {
    "se_gn_std_blur": get_spec("resnet18", stem={"widths": [16]}, stages=FAMILY_STAGES, attention={"kind": "se"},
                               norm={"kind": "groupnorm", "groups": 8}, std_conv_epsilon=1e-8, anti_alias="blur"),
    "eca_evonorm_v2": get_spec("resnetv2_50d_evos", stages=FAMILY_STAGES, stem={"widths": [16, 16, 32]},
                               norm={"groups": 8}, attention=None),
    "frn_avg_eca": get_spec("resnet50", stages=FAMILY_STAGES, norm={"kind": "frn"}, anti_alias="avg",
                            attention={"kind": "eca"}),
}
FAMILY_CLASS = {**KERAS_CLASS, "StdConv2d": "StandardizedConv2D", "GroupNorm": "TwoPassGroupNormalization",
                "SqueezeExcite": "SqueezeExcite", "EfficientChannelAttention": "EfficientChannelAttention",
                "BlurPool2d": "BlurPool2D", "EvoNorm2dS0": "EvoNormS0", "FilterResponseNorm2d": "FilterResponseNorm",
                "Identity": None}


@pytest.mark.parametrize("name", FAMILY_SPECS)
@pytest.mark.keras_backend
def test_side_by_side_shows_timm_layers(name: str) -> None:
    spec = FAMILY_SPECS[name]
    rows = side_by_side(spec, (64, 64))
    assert {op.name for op in make_plan(spec).ops()} <= {r.canonical for r in rows}
    for row in rows[1:]:
        if row.torch_class in ("Sequential", "ResNet") or FAMILY_CLASS.get(row.torch_class, "") is None:
            continue
        assert row.keras_layers, row
        layer_name, layer_class = row.keras_layers[-1]
        parent = row.canonical.rpartition(".")[0].replace(".", "_")
        if layer_name.startswith(parent + "."):  # a module inside an op: SE's fc1 / fc2, ECA's Conv1d kernel
            assert (row.torch_class, layer_class.split(" ")[0]) in (("Conv2d", "Conv2D"), ("Conv1d", "variable")), row
            assert row.keras_shape is None
            continue
        assert layer_class == FAMILY_CLASS[row.torch_class], row


# what the generator writes of timm's layers: SE and ECA (as classes) and GroupNorm (in `norm`)
FAMILY_SOURCE_CASES = {
    "seresnet18": get_spec("seresnet18", stages=TWO_STAGES),  # SE widths by timm's make_divisible
    "ecaresnet50d": get_spec("ecaresnet50d", stages=TWO_STAGES),  # ECA on a deep-stem ResNet-D
    "resnet50_gn": get_spec("resnet50_gn", stages=TWO_STAGES, norm={"groups": 8}),  # GroupNorm everywhere
}


@pytest.mark.parametrize("case", list(FAMILY_SOURCE_CASES))
def test_generated_torch_source_of_timm_layers(case: str) -> None:
    spec = FAMILY_SOURCE_CASES[case]
    model = _exec(resnet_source(spec, "torch"))["ResNet"](num_classes=spec.num_classes)
    weights = random_weights(spec)
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    ours = rt.build(spec)
    rt.import_weights(ours, weights)
    x = random_input(spec, (32, 32))
    assert_f32_close(torch_forward(model, x), torch_forward(ours, x), f"{case}: generated PyTorch source")


# per backend: the SE layer class the generator writes (GroupNorm and ECA use keras.layers / keras.ops only)
@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.keras_backend) if c == "seresnet18" else c
                                  for c in FAMILY_SOURCE_CASES])
def test_generated_keras_source_of_timm_layers(case: str) -> None:
    spec = FAMILY_SOURCE_CASES[case]
    model = _exec(resnet_source(spec, "keras"))["resnet"](num_classes=spec.num_classes)
    ours = rk.build(spec)
    rk.import_weights(ours, random_weights(spec))
    weighted = [layer for layer in ours.layers if layer.weights]
    assert sorted(layer.name for layer in weighted) == sorted(layer.name for layer in model.layers if layer.weights)
    for layer in weighted:  # canonical weights by canonical layer name; SE's fc1, fc2 and ECA's kernel inside
        model.get_layer(layer.name).set_weights(layer.get_weights())
    x = random_input(spec, (32, 32))
    assert_f32_close(keras_forward(model, x), keras_forward(ours, x), f"{case}: generated Keras source")


def test_source_refuses_specs_it_cannot_write_naming_the_fields(capsys: pytest.CaptureFixture[str]) -> None:
    import re

    expected = {"se_gn_std_blur": "anti_alias='blur', std_conv_epsilon=1e-08",
                "eca_evonorm_v2": "norm.kind='evonorm_s0'",
                "frn_avg_eca": "anti_alias='avg', norm.kind='frn'"}
    for name, spec in FAMILY_SPECS.items():
        for framework in ("torch", "keras"):
            with pytest.raises(SpecError, match=f"source generation does not cover {re.escape(expected[name])} "):
                resnet_source(spec, framework)
    assert main(["source", "resnetrs50", "--framework", "torch"]) == 2
    err = capsys.readouterr().err
    assert "does not cover stem.pool='conv' (in resnetrs50)" in err and len(err.strip().splitlines()) == 1
