"""Every ResNet timm registers (101: 81 ResNet, 20 ResNetV2), from one spec, in both frameworks.

All 101, on the meta device (no memory, no time spent on initialisation): the preset's
parameter count equals timm's model's, the spec read off timm's model is the preset's, timm can
build the spec back (to_timm's check), and infer_spec reads the canonical state_dict back.

Each family (SE, ECA, GroupNorm, EvoNorm, FRN, BlurPool, avg-pool anti-aliasing, ResNet-RS,
SENet-154, pruned, mixed block types, ResNetV2 bottleneck and basic, BiT) at one block per
stage, every tensor and norm statistic of timm's own model randomised: from_timm's spec and
weights give timm's outputs through resnet_torch, to_timm gives timm's model back with an
equal state_dict, the bare state_dict reads back as the same spec, and the Keras model computes
the same function at an odd input size (float32 on every backend, float64 on TensorFlow).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytest
import timm
import torch
from torch import nn

import resnet_torch as rt
from resnet_torch.timm_port import _timm_problems
from shared_specs import (
    ResNetSpec,
    SpecError,
    canonical_shapes,
    count_params,
    get_spec,
    infer_spec,
    preset_doc,
    preset_family,
    timm_architecture,
)
from shared_specs.presets_timm import TABLE, TABLE_PRESETS
from shared_specs.timm_names import weights_from_timm_v2
from support import (
    assert_f32_close,
    assert_gradients_agree,
    keras_forward,
    keras_model,
    random_input,
    torch_forward,
)

ALL = list(TABLE)
ODD = (35, 33)  # every strided layer meets an odd size somewhere (35 -> 18 -> 9 -> 5 -> 3 -> 2)
EVEN = (64, 64)  # timm's avg-pool anti-aliasing floors where its shortcut ceils: even sizes only, in timm too


def test_timm_registers_101_resnets_and_the_table_holds_each_once() -> None:
    from timm.models._registry import _model_entrypoints

    registered = sorted(n for n, f in _model_entrypoints.items()
                        if f.__module__ in ("timm.models.resnet", "timm.models.resnetv2"))
    assert len(registered) == 101 and sorted(TABLE) == registered
    # 87 new presets; the other 14 names were presets already (torchvision's ten, resnet18d ... 101d)
    assert len(TABLE_PRESETS) == 87


def meta_model(name: str) -> nn.Module:
    with torch.device("meta"):
        return timm.create_model(name)


@pytest.mark.parametrize("name", ALL)
def test_every_timm_resnet_is_a_preset_read_off_timms_model(name: str) -> None:
    model = meta_model(name)
    spec = timm_architecture(name)
    assert count_params(get_spec(name)).trainable == sum(p.numel() for p in model.parameters())
    assert rt.timm_spec(model) == spec  # read off the modules and shapes, name included
    # the preset: the same network; torchvision's presets keep torchvision's init (timm zero-inits the last norm)
    assert get_spec(name) == spec.replace(zero_init_last_bn=get_spec(name).zero_init_last_bn)
    assert _timm_problems(spec) == []  # to_timm builds it: the constructor's model reads back as the spec
    if name in TABLE_PRESETS:
        assert preset_doc(name).startswith(f"timm {name} (") and preset_family(name).startswith("timm ")


def test_published_weights_with_other_heads_read_back() -> None:
    # timm's pretrained configs set the classes (ImageNet-21k, -12k heads); every tag's architecture is
    # read as it is built for that tag, except resnet50.bamboo: pooled features without a classifier
    tags = [t for t in timm.list_pretrained() if t.split(".")[0] in TABLE]
    assert len(tags) == 174
    for tag in ("resnetv2_152x4_bit.goog_in21k", "resnetaa101d.sw_in12k", "seresnextaa201d_32x8d.sw_in12k",
                "resnetv2_50x1_bit.goog_in21k_ft_in1k"):
        with torch.device("meta"):
            model = timm.create_model(tag)
        spec = rt.timm_spec(model)
        assert spec.num_classes == model.num_classes and _timm_problems(spec) == [], tag
    with torch.device("meta"):
        bamboo = timm.create_model("resnet50.bamboo")
    with pytest.raises(SpecError, match=r"global_pool='avg', fc=Identity\) is neither avg-pool \+ Linear nor absent"):
        rt.timm_spec(bamboo)
    with torch.device("meta"):
        assert rt.timm_spec(timm.create_model("resnet50.bamboo", global_pool="")).num_classes is None


# Weights show all but these (infer_spec's conventions): anti-aliasing holds no tensors, and the
# init of plain 7x7-stem ResNets is torchvision's by convention, timm's zero_init_last here.
def inference_hints(spec: ResNetSpec) -> dict[str, Any]:
    hints: dict[str, Any] = {}
    if spec.anti_alias != "none":
        hints["anti_alias"] = spec.anti_alias
    if spec.zero_init_last_bn and not infer_spec(shapes_only(spec)).zero_init_last_bn:
        hints["zero_init_last_bn"] = True
    return hints


def shapes_only(spec: ResNetSpec) -> dict[str, np.ndarray]:
    return {n: np.broadcast_to(np.float32(0), s) for n, s in canonical_shapes(spec).items()}


@pytest.mark.parametrize("name", ALL)
def test_every_timm_state_dict_is_inferred(name: str) -> None:
    spec = timm_architecture(name)
    state = meta_model(name).state_dict()  # timm's names: ResNetV2's renamed through the table
    canonical = weights_from_timm_v2(state, spec.shortcut) if spec.preactivation else state
    hints = inference_hints(spec)
    assert infer_spec(canonical, **hints) == spec.replace(name=infer_spec(canonical, **hints).name)
    assert set(hints) <= {"anti_alias", "zero_init_last_bn"}
    if not hints:  # nothing but the weights: the name is the preset's too
        assert infer_spec(canonical).name == name


# -- each family, at one block per stage ------------------------------------------------------


def randomize_(model: nn.Module, seed: int) -> nn.Module:
    """Random values in every parameter and statistic of a timm model, named its own way: convs
    He-normal, ECA's Conv1d and Linear U(+-1/sqrt(fan_in)), norm weights and EvoNorm's v
    U(0.5, 1.5), running means N(0, 0.3) and variances U(0.5, 2), biases and FRN's tau N(0, 0.1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if not t.is_floating_point() or name.endswith(".filt"):  # BlurPool's fixed filter
                continue
            leaf = name.rsplit(".", 1)[-1]
            fan = t[0].numel() if t.dim() > 1 else 1
            if t.dim() == 4:
                t.normal_(0.0, math.sqrt(2.0 / fan), generator=g)
            elif t.dim() in (2, 3):
                t.uniform_(-1 / math.sqrt(fan), 1 / math.sqrt(fan), generator=g)
            elif leaf in ("weight", "v"):
                t.uniform_(0.5, 1.5, generator=g)
            elif leaf == "running_var":
                t.uniform_(0.5, 2.0, generator=g)
            elif leaf == "running_mean":
                t.normal_(0.0, 0.3, generator=g)
            else:
                t.normal_(0.0, 0.1, generator=g)
    return model.eval()


ONE = dict(layers=(1, 1, 1, 1))
SMALL = dict(ONE, channels=(16, 32, 64, 128))


def pruned_ecaresnet() -> nn.Module:
    """ecaresnet50d at one block per stage, pruned as timm prunes (its own adapt_model_from_string)
    to the widths of ecaresnet50d_pruned's first blocks."""
    from timm.models._prune import adapt_model_from_string

    model = timm.create_model("ecaresnet50d", **ONE)
    parts = ["conv1.0.weight:[32, 3, 3, 3]", "conv1.1.weight:[32]", "conv1.3.weight:[32, 32, 3, 3]",
             "conv1.4.weight:[32]", "conv1.6.weight:[64, 32, 3, 3]", "bn1.weight:[64]"]
    cin = 64
    for i, (a, b, c) in enumerate([(47, 18, 19), (85, 37, 171), (198, 126, 818), (492, 237, 2022)], start=1):
        n = f"layer{i}.0"
        parts += [f"{n}.conv1.weight:[{a}, {cin}, 1, 1]", f"{n}.bn1.weight:[{a}]", f"{n}.conv2.weight:[{b}, {a}, 3, 3]",
                  f"{n}.bn2.weight:[{b}]", f"{n}.conv3.weight:[{c}, {b}, 1, 1]", f"{n}.bn3.weight:[{c}]",
                  f"{n}.downsample.1.weight:[{c}, {cin}, 1, 1]", f"{n}.downsample.2.weight:[{c}]"]
        cin = c
    return adapt_model_from_string(model, "***".join([*parts, f"fc.weight:[1000, {cin}]"]))


def bit_resnet() -> nn.Module:
    from timm.models import resnetv2

    # resnetv2_50x1_bit passes its layers positionally: its own creator takes ours
    return resnetv2._create_resnetv2_bit("resnetv2_50x1_bit", layers=[1, 1, 1, 1])


@dataclass(frozen=True)
class Family:
    name: str  # the timm registration whose constructor arguments it keeps
    kwargs: dict[str, Any] = field(default_factory=dict)
    make: Callable[[], nn.Module] | None = None  # when create_model(name, **kwargs) cannot reduce it
    # torch parity: bit-exact where timm and resnet_torch run the same ATen kernels in the same order
    # (convs, batch_norm, group_norm, relu, max/avg pools, BlurPool's depthwise conv, SE's 1x1 convs,
    # ECA's conv1d, linear); ResNetV2 classifies with a 1x1 conv (another kernel than linear), and
    # EvoNorm, FRN and StdConv compute their statistics with other ops than ours: float32 bound there.
    exact: bool = True
    hw: tuple[int, int] = ODD
    hints: dict[str, Any] = field(default_factory=dict)  # for its bare state_dict (not in the weights)

    def model(self) -> nn.Module:
        return self.make() if self.make else timm.create_model(self.name, **self.kwargs)

    def expected(self) -> ResNetSpec:
        """The registration's spec at this family's depth and widths."""
        spec = timm_architecture(self.name)
        widths = self.kwargs.get("channels", [s.width for s in spec.stages])
        stages = [replace(s, depth=1, width=w, block_widths=s.block_widths[:1] if s.block_widths else None)
                  for s, w in zip(spec.stages, widths)]
        return spec.replace(stages=stages)


FAMILIES = {
    "se": Family("seresnext26d_32x4d", SMALL),
    "eca": Family("ecaresnet26t", SMALL),
    "groupnorm": Family("resnet50_gn", ONE),
    "evonorm": Family("resnetv2_50d_evos", ONE, exact=False),
    "frn": Family("resnetv2_50d_frn", ONE, exact=False),
    "blurpool": Family("resnetblur50d", SMALL, hints={"anti_alias": "blur"}),
    "aa": Family("resnetaa50d", SMALL, hw=EVEN, hints={"anti_alias": "avg"}),
    "resnet-rs": Family("resnetrs50", SMALL),
    "senet154": Family("senet154", dict(ONE, channels=(32, 64, 128, 256))),
    "pruned": Family("ecaresnet50d_pruned", make=pruned_ecaresnet),
    "mixed": Family("test_resnet"),
    "resnetv2": Family("resnetv2_50d", ONE, exact=False),
    "resnetv2-basic": Family("resnetv2_18", ONE, exact=False),
    "bit": Family("resnetv2_50x1_bit", make=bit_resnet, exact=False),
}


@functools.cache
def ported(family: str) -> tuple[nn.Module, ResNetSpec, dict[str, np.ndarray], rt.ResNet]:
    """(timm's model with random values, from_timm's spec and weights, our torch model of them)."""
    model = randomize_(FAMILIES[family].model(), seed=len(family))
    spec, weights = rt.from_timm(model)
    ours = rt.build(spec)
    rt.import_weights(ours, weights)
    return model, spec, weights, ours.eval()


@pytest.mark.parametrize("family", FAMILIES)
def test_family_ports_both_ways_with_timms_outputs(family: str) -> None:
    fam = FAMILIES[family]
    model, spec, weights, ours = ported(family)
    assert spec.differences(fam.expected()) == []
    assert sum(p.numel() for p in model.parameters()) == count_params(spec).trainable
    x = random_input(spec, fam.hw)
    ref = torch_forward(model, x)
    assert np.abs(ref).max() > 0.1  # a real signal, not a network collapsed to zero
    if fam.exact:
        np.testing.assert_array_equal(torch_forward(ours, x), ref, err_msg=family)
    else:  # the float32 bound (support.F32_RTOL): other kernels for the same function, see Family.exact
        assert_f32_close(torch_forward(ours, x), ref, f"{family}: resnet_torch vs timm")
    back = rt.to_timm(spec, weights)
    assert type(back) is type(model) and not back.training
    source, built = model.state_dict(), back.state_dict()
    assert built.keys() == source.keys()
    for name, value in source.items():
        assert torch.equal(built[name], value), name
    np.testing.assert_array_equal(torch_forward(back, x), ref, err_msg=f"{family}: to_timm")  # timm's own class
    from_state, same = rt.from_timm(model.state_dict(), **fam.hints)
    assert from_state.differences(spec) == [] and same.keys() == weights.keys()  # named "resnet": no preset is it


@pytest.mark.keras_backend
@pytest.mark.parametrize("family", FAMILIES)
def test_family_on_keras(family: str) -> None:
    _, spec, weights, ours = ported(family)
    x = random_input(spec, FAMILIES[family].hw)
    # the float32 bound (support.F32_RTOL): conv accumulation order differs between ATen and oneDNN/XLA
    assert_f32_close(keras_forward(keras_model(spec, weights), x), torch_forward(ours, x), f"{family} on Keras")


# float64 rounding over a few dozen layers stays below 1e-13; any real mismatch (an epsilon, a
# padding, a group layout) shows at 1e-6 or worse. TensorFlow only: the other backends compute
# some layers in float32 whatever the dtype (trap 16), so this test is not keras_backend.
F64_RTOL = 1e-10


@pytest.mark.parametrize("family", FAMILIES)
def test_family_float64_on_tensorflow(family: str) -> None:
    _, spec, weights, _ = ported(family)
    doubles = {k: v.astype(np.float64) for k, v in weights.items()}
    torch_model = rt.build(spec, dtype=torch.float64)
    rt.import_weights(torch_model, doubles)
    x = random_input(spec, FAMILIES[family].hw, dtype=np.float64)
    ref = torch_forward(torch_model, x)
    out = keras_forward(keras_model(spec, doubles, dtype="float64"), x)
    assert out.dtype == np.float64
    assert np.abs(out - ref).max() <= F64_RTOL * np.abs(ref).max(), family


@pytest.mark.keras_backend
@pytest.mark.parametrize("family", ["se", "groupnorm"])
def test_training_outputs_and_gradients_agree(family: str) -> None:
    _, spec, weights, _ = ported(family)
    torch_model = rt.build(spec)
    rt.import_weights(torch_model, weights)
    k_model = keras_model(spec, weights)
    x = random_input(spec, ODD, batch=3, seed=4)
    # training mode: batch statistics (SE) or per-example groups (GroupNorm); the float32 bound
    assert_f32_close(keras_forward(k_model, x, training=True), torch_forward(torch_model, x, training=True),
                     f"{family} training-mode outputs")
    rt.import_weights(torch_model, weights)  # the training pass moved the running statistics
    k_model = keras_model(spec, weights)
    upstream = np.random.default_rng(2).normal(size=(3, spec.num_classes)).astype(np.float32)
    # on an input where both passes take the same ReLU and max-pool pieces (support.assert_gradients_agree)
    assert_gradients_agree(torch_model, k_model, spec, ODD, upstream, family)


# -- what the spec cannot say, named ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("resnet50", dict(drop_path_rate=0.1), r"layer2.0.drop_path is a DropPath"),
        ("seresnet18", dict(act_layer=nn.SiLU), r"act1 is a SiLU"),
        ("resnetblur18", dict(output_stride=16), r"layer4.0.aa is an BlurPool2d the spec's network has no place"),
        ("resnetv2_50", dict(drop_path_rate=0.1), r"stages.\d.blocks.\d.drop_path is a DropPath"),
        ("resnetv2_50", dict(act_layer=nn.SiLU), r"stages.0.blocks.0.norm1.act is a SiLU; the spec's network has "
                                                 r"a ReLU after layer1.0.bn1"),
        ("resnetv2_50", dict(output_stride=16), r"stages.3.blocks.1.conv2 has .*dilation=\(2, 2\)"),
        ("resnetv2_50", dict(drop_rate=0.2), r"head.drop is a Dropout\(p=0.2\)"),
        ("resnetv2_50x1_bit", dict(preact=False), r"stages.0.blocks.0 is a Bottleneck: timm's "
                                                  r"ResNetV2\(preact=False\)"),
    ],
)
def test_from_timm_refuses_modules_the_spec_cannot_express(name: str, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        rt.timm_spec(timm.create_model(name, **kwargs, **({} if "_bit" in name else dict(layers=(1, 2, 1, 2)))))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (get_spec("resnet50", norm={"kind": "frn"}), "not expressible as timm's ResNet: norm.kind='frn' (timm: "
                                                     "'batchnorm')"),
        (get_spec("resnetv2_50", groups=32, width_per_group=4), "timm's ResNetV2: groups=32 (timm: 1)"),
        (get_spec("resnetv2_50", stem={"widths": [24, 32, 64], "kernel_size": 3, "pool_pad_value": "zero"}),
         "stem.pool_pad_value='zero' (timm: '-inf')"),
        (get_spec("resnet50_v2"), "stride_position='last' (timm: 'first')"),
        (get_spec("cifar_resnet20"), "stages has 3 stages (timm: 4)"),
    ],
)
def test_to_timm_names_what_timm_cannot_express(spec: ResNetSpec, message: str) -> None:
    with pytest.raises(SpecError) as err:
        rt.to_timm(spec, {})
    assert message in str(err.value)
