"""torchvision and timm ResNets to and from (spec, canonical weights), and on to Keras.

Anchors are the libraries' own models (weights=None / pretrained=False) with every
parameter and BatchNorm statistic randomised, so a mis-mapped tensor cannot hide
behind BN at identity.

Torch-to-torch comparisons are exact (assert_array_equal): our resnet_torch model,
torchvision's and timm's run the same ATen kernels (conv2d without bias, eval-mode
batch_norm, relu, max_pool2d, avg_pool2d in ceil mode, add, adaptive_avg_pool2d,
linear) on the same float32 tensors in the same order, so the bits agree; in-place
versus out-of-place ReLU and add do not change a value. Any difference is a
structural bug, not rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
import numpy as np
import pytest
import timm
import torch
import torchvision
from torch import nn

import resnet_torch as rt
from shared_specs import ResNetSpec, SpecError, WeightsError, canonical_shapes, count_params, get_spec
from support import assert_f32_close, keras_forward, keras_model, presets_for_this_backend, random_input, torch_forward

ODD, SQUARE = (33, 47), (64, 64)


def randomize_(model: nn.Module, seed: int) -> nn.Module:
    """Random values in every parameter and BN statistic of a library model, in place.

    Convs He-normal, BN gamma U(0.5, 1.5), beta N(0, 0.1), mean N(0, 0.3), var
    U(0.5, 2); the BN closing each residual branch is scaled by 1/blocks so that
    eval-mode activations stay bounded in the deepest nets (as support.random_weights).
    Works on models built on the meta device: it materialises them first.
    """
    if any(p.is_meta for p in model.parameters()):
        model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    blocks = [m for m in model.modules() if hasattr(m, "conv2") and hasattr(m, "downsample")]
    closing = {id(getattr(b, "bn3", None) or b.bn2) for b in blocks}
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.normal_(0.0, math.sqrt(2.0 / m.weight[0].numel()), generator=g)
            elif isinstance(m, nn.BatchNorm2d):
                scale = 1.0 / len(blocks) if id(m) in closing else 1.0
                m.weight.uniform_(0.5, 1.5, generator=g).mul_(scale)
                m.bias.normal_(0.0, 0.1, generator=g).mul_(scale)
                m.running_mean.normal_(0.0, 0.3, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.num_batches_tracked.zero_()
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.in_features)
                m.weight.uniform_(-bound, bound, generator=g)
                m.bias.uniform_(-bound, bound, generator=g)
    return model.eval()


def anchor(factory: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    """A library model built without paying for its random init (we overwrite every value)."""
    with torch.device("meta"):
        model = factory()
    return randomize_(model, seed)


def ours(spec: ResNetSpec, weights: dict[str, np.ndarray]) -> rt.ResNet:
    with torch.device("meta"):
        model = rt.build(spec)
    model.to_empty(device="cpu")
    rt.import_weights(model, weights)
    return model.eval()


def assert_same_function(reference: nn.Module, others: list[nn.Module], sizes: list[tuple[int, int]],
                         spec: ResNetSpec) -> None:
    for hw in sizes:
        x = random_input(spec, hw)
        ref = torch_forward(reference, x)
        assert np.abs(ref).max() > 0.1  # a real signal, not a network collapsed to zero
        for model in others:
            np.testing.assert_array_equal(torch_forward(model, x), ref, err_msg=f"{type(model).__module__} at {hw}")


def assert_weights_are_state(weights: dict[str, np.ndarray], model: nn.Module) -> None:
    state = model.state_dict()
    assert set(weights) == {k for k in state if not k.endswith("num_batches_tracked")}
    for name, value in weights.items():
        np.testing.assert_array_equal(value, state[name].numpy(), err_msg=name)
        assert not np.shares_memory(value, state[name].numpy()), f"{name} aliases the model (trap 17)"


# -- torchvision ------------------------------------------------------------------------

BIG = ("resnet152", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet101_2")
TORCHVISION = [
    pytest.param(n, marks=pytest.mark.slow) if n in BIG else n
    for n in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
              "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2")
]


def sizes_for(name: str) -> list[tuple[int, int]]:
    """Odd sizes for all (every padded/strided layer meets an odd input); more only where cheap."""
    if name == "resnet18":
        return [ODD, SQUARE, (224, 224)]
    return [ODD, SQUARE] if name == "resnet18d" else [ODD]


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_both_ways(name: str) -> None:
    model = anchor(lambda: getattr(torchvision.models, name)(weights=None), seed=1)
    spec, weights = rt.from_torchvision(model)
    assert spec == get_spec(name)  # read off the modules, equal to the preset of that name
    assert list(weights) == list(canonical_shapes(spec))
    assert_weights_are_state(weights, model)
    assert sum(p.numel() for p in model.parameters()) == count_params(spec).trainable
    back = rt.to_torchvision(spec, weights)
    assert type(back) is torchvision.models.ResNet and not back.training
    ours_model = ours(spec, weights)  # our build's state_dict is torchvision's, key for key
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in ours_model.state_dict().items()} == shapes
    assert_same_function(model, [ours_model, back], sizes_for(name), spec)
    from_state, same = rt.from_torchvision(model.state_dict())  # a bare state_dict: infer_spec
    assert from_state == spec and same.keys() == weights.keys()


def test_torchvision_cifar_style_stem_is_read_off_the_model() -> None:
    def factory() -> nn.Module:
        m = torchvision.models.resnet18(weights=None, num_classes=10)
        m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)  # the common CIFAR adaptation
        m.maxpool = nn.Identity()
        return m

    model = anchor(factory, seed=2)
    spec, weights = rt.from_torchvision(model)
    cifar_stem = {"kernel_size": 3, "stride": 1, "pool": "none"}
    assert spec.differences(get_spec("resnet18", num_classes=10, stem=cifar_stem)) == []
    assert spec.name == "resnet"  # no preset is this network
    assert_same_function(model, [ours(spec, weights)], [ODD], spec)
    with pytest.raises(SpecError, match=r"stem.kernel_size=3 \(torchvision: 7\).*stem.pool='none'"):
        rt.to_torchvision(spec, weights)
    # its bare state_dict cannot say the stem is unstrided and unpooled: refused, not guessed
    with pytest.raises(SpecError, match=r"not a torchvision ResNet state_dict \(stem.kernel_size=3"):
        rt.from_torchvision(model.state_dict())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (get_spec("resnet50_v2"), "preactivation=True (torchvision: False)"),
        (get_spec("resnet50_v1"), "bottleneck_stride='1x1' (torchvision: '3x3')"),
        (get_spec("resnet50_v1"), "conv_bias='all' (torchvision: 'none')"),
        (get_spec("resnet50d"), "stem.widths=[32, 32, 64] (torchvision: [64])"),
        (get_spec("resnet50d"), "shortcut='D' (torchvision: 'B')"),
        (get_spec("cifar_resnet20"), "stages has 3 stages (torchvision: 4)"),
        (get_spec("resnet18", num_classes=None), "num_classes=None (torchvision: 1000)"),
        (get_spec("resnet18", padding="same"), "padding='same' (torchvision: 'symmetric')"),
        (get_spec("resnet18", head_activation="softmax"), "head_activation='softmax' (torchvision: 'none')"),
        (get_spec("resnet18", stem={"pool_pad_value": "zero"}), "stem.pool_pad_value='zero' (torchvision: '-inf')"),
        (get_spec("resnet18", stages=[{"depth": 2, "width": w, "stride": 2} for w in (64, 128, 256, 512)]),
         "stages[0].stride=2 (torchvision: 1)"),
    ],
)
def test_to_torchvision_names_what_it_cannot_express(spec: ResNetSpec, message: str) -> None:
    with pytest.raises(SpecError) as err:
        rt.to_torchvision(spec, {})
    assert message in str(err.value) and "not expressible as torchvision.models.ResNet" in str(err.value)


def test_to_torchvision_accepts_equivalent_spellings_and_checks_weights_first() -> None:
    # stem.padding=3 and shortcut 'B-subsample' without stride-only blocks build the same network
    spec = get_spec("resnet18", stem={"padding": 3}, shortcut="B-subsample", num_classes=7)
    weights = rt.export_weights(rt.build(spec))
    assert isinstance(rt.to_torchvision(spec, weights), torchvision.models.ResNet)
    del weights["layer4.1.bn2.running_var"]
    weights["fc.weight"] = np.zeros((3, 512), np.float32)
    with pytest.raises(WeightsError, match=r"missing 1: layer4.1.bn2.running_var.*fc.weight has shape \(3, 512\)"):
        rt.to_torchvision(spec, weights)


def test_from_torchvision_refuses_what_the_spec_cannot_say() -> None:
    dilated = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, False, True])
    with pytest.raises(SpecError, match=r"layer4.1.conv2 has .*dilation=\(2, 2\) \(spec: \(1, 1\)\)"):
        rt.from_torchvision(dilated)
    dropout_head = torchvision.models.resnet18(weights=None)  # fine-tuned: the head is the spec's (test_heads.py)
    dropout_head.fc = nn.Sequential(nn.Dropout(0.2), nn.Linear(512, 10))
    assert rt.from_torchvision(dropout_head)[0].head.layers[0].rate == 0.2
    dropout_head.fc[0] = nn.AlphaDropout(0.2)
    with pytest.raises(SpecError, match=r"fc\.0 \(AlphaDropout\) has no counterpart in a ResNet spec"):
        rt.from_torchvision(dropout_head)
    cumulative = torchvision.models.resnet18(weights=None, norm_layer=lambda c: nn.BatchNorm2d(c, momentum=None))
    with pytest.raises(SpecError, match="momentum=None"):
        rt.from_torchvision(cumulative)
    silu = torchvision.models.resnet18(weights=None)
    silu.layer2[1].relu = nn.SiLU()
    with pytest.raises(SpecError, match="layer2.1.relu is a SiLU, which the spec has no counterpart for"):
        rt.from_torchvision(silu)
    with pytest.raises(SpecError, match="expected a torchvision.models.ResNet, got Linear"):
        rt.from_torchvision(nn.Linear(2, 2))
    with pytest.raises(SpecError, match="hints .* apply to a bare state_dict"):
        rt.from_torchvision(torchvision.models.resnet18(weights=None), num_classes=10)


# -- timm -----------------------------------------------------------------------------------

TIMM = [pytest.param(n, marks=pytest.mark.slow) if n in ("resnet101", "resnet152", "resnet101d") else n
        for n in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                  "resnet18d", "resnet34d", "resnet50d", "resnet101d")]


@pytest.mark.parametrize("name", TIMM)
def test_timm_both_ways(name: str) -> None:
    model = anchor(lambda: timm.create_model(name, pretrained=False), seed=3)
    spec, weights = rt.from_timm(model)
    # timm's plain resnets are torchvision's networks; timm inits them with zero_init_last=True
    expected = get_spec(name) if name.endswith("d") else get_spec(name, zero_init_last_bn=True)
    assert spec == expected
    assert spec.batchnorm.epsilon == 1e-5 and spec.batchnorm.running_stats_decay == 0.9  # nn.BatchNorm2d defaults
    assert_weights_are_state(weights, model)
    assert sum(p.numel() for p in model.parameters()) == count_params(spec).trainable
    back = rt.to_timm(spec, weights)
    assert type(back) is timm.models.resnet.ResNet and not back.training
    assert_same_function(model, [ours(spec, weights), back], sizes_for(name), spec)
    from_state, _ = rt.from_timm(model.state_dict())
    assert from_state == spec


def test_timm_resnet50_is_torchvision_resnet50() -> None:
    model = anchor(lambda: timm.create_model("resnet50", pretrained=False), seed=4)
    spec, weights = rt.from_timm(model)
    tv_model = rt.to_torchvision(spec, weights)
    assert_same_function(model, [tv_model], [ODD], spec)
    assert rt.from_torchvision(tv_model)[0] == get_spec("resnet50")


def test_timm_settings_the_spec_carries() -> None:
    # BN eps/momentum other than the defaults, a headless model, other stage widths and in_chans
    model = anchor(lambda: timm.create_model(
        "resnet18d", pretrained=False, num_classes=0, global_pool="", in_chans=1, channels=(32, 64, 96, 128),
        norm_layer=lambda c, **kw: nn.BatchNorm2d(c, eps=1e-3, momentum=0.01, **kw)), seed=5)
    spec, weights = rt.from_timm(model)
    assert spec.num_classes is None and spec.in_channels == 1
    assert [s.width for s in spec.stages] == [32, 64, 96, 128]
    assert (spec.batchnorm.epsilon, spec.batchnorm.running_stats_decay) == (1e-3, 0.99)  # decay = 1 - torch momentum
    back = rt.to_timm(spec, weights)
    assert back.bn1.eps == 1e-3 and back.bn1.momentum == pytest.approx(0.01, abs=1e-12)
    assert_same_function(model, [ours(spec, weights), back], [ODD], spec)


def test_from_timm_refuses_what_the_spec_cannot_say() -> None:
    cases = [
        (dict(model_name="resnet18", drop_path_rate=0.1), "layer1.1.drop_path is a DropPath"),
        (dict(model_name="resnet18", drop_block_rate=0.1), "layer3.0.drop_block is a DropBlock2d"),
        (dict(model_name="resnet18", block_args=dict(attn_layer="ese")), "layer1.0.se is a EffectiveSEModule"),
        (dict(model_name="resnet18", act_layer="silu"), "act1 is a SiLU"),
        (dict(model_name="resnet50", output_stride=16), r"layer4.1.conv2 has .*dilation=\(2, 2\)"),
        (dict(model_name="resnet18", num_classes=0), r"neither avg-pool \+ Linear nor absent"),
    ]
    for kwargs, message in cases:
        with pytest.raises(SpecError, match=message):
            rt.from_timm(timm.create_model(pretrained=False, **kwargs))
    with pytest.raises(SpecError, match=r"not a timm ResNet state_dict \(stages has 3 stages \(timm: 4\)"):
        rt.from_timm(rt.build("cifar_resnet20").state_dict())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (get_spec("resnet50_v2"), "stride_position='last' (timm: 'first')"),
        (get_spec("resnet18", shortcut="C"), "shortcut='C' (timm: 'B')"),
        (get_spec("resnet18d", stem={"widths": [16, 32, 48]}), "stem.widths=[16, 32, 48] (timm: [64])"),
        (get_spec("resnet18", stem={"widths": [32]}), "stem.widths=[32] (timm: [64])"),
        (get_spec("cifar_resnet20"), "stages has 3 stages (timm: 4)"),
        (get_spec("resnet50_v1"), "bottleneck_stride='1x1' (timm: '3x3')"),
    ],
)
def test_to_timm_names_what_it_cannot_express(spec: ResNetSpec, message: str) -> None:
    with pytest.raises(SpecError) as err:
        rt.to_timm(spec, {})
    assert message in str(err.value)


# -- timm's "d" models on Keras -------------------------------------------------------------


@pytest.mark.keras_backend
@pytest.mark.parametrize("name", [n for n in ("resnet18d", "resnet34d", "resnet50d", "resnet101d")
                                  if n in presets_for_this_backend()])  # basic and bottleneck D on JAX, torch
def test_timm_d_models_on_keras(name: str) -> None:
    # The deep stem and the avg-pool shortcut (ceil mode, padding left out of the mean)
    # are new to the Keras builder; 33x47 makes every avg-pool shortcut see an odd size
    # (9x12 -> 5x6 -> 3x3 after the stem), 64x64 only even ones.
    model = anchor(lambda: timm.create_model(name, pretrained=False), seed=6)
    spec, weights = rt.from_timm(model)
    k_model = keras_model(spec, weights)
    for hw in sizes_for(name):  # the odd size is the one that matters; each new shape costs a JAX compile
        x = random_input(spec, hw)
        # the float32 bound (support.F32_RTOL): conv accumulation order differs between ATen and oneDNN/XLA
        what = f"{name} on {keras.backend.backend()} at {hw}"
        assert_f32_close(keras_forward(k_model, x), torch_forward(model, x), what)
