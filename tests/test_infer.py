"""infer_spec: every preset's weights give back the preset; non-ResNets are refused by tensor."""

from __future__ import annotations

import numpy as np
import pytest

from shared_specs import SpecError, canonical_shapes, get_spec, infer_spec, list_presets
from shared_specs.presets_timm import TABLE_PRESETS
from shared_specs.spec import ResNetSpec


def shapes_only(spec: ResNetSpec) -> dict[str, np.ndarray]:
    """Canonical weights as zero-memory arrays: infer_spec reads shapes only."""
    return {name: np.broadcast_to(np.float32(0), shape) for name, shape in canonical_shapes(spec).items()}


def identifiable(spec: ResNetSpec) -> dict[str, object]:
    """The fields the weights determine (written out here, not taken from the code under test)."""
    bottleneck = spec.block == "bottleneck"
    return {
        "block": spec.block,
        "depths": [s.depth for s in spec.stages],
        "widths": [s.width for s in spec.stages],
        "groups": spec.groups if bottleneck else None,
        "width_per_group": spec.width_per_group if bottleneck else None,
        "stem.widths": spec.stem.widths,
        "stem.kernel_size": spec.stem.kernel_size,
        "stem.norm": spec.stem.norm,
        "in_channels": spec.in_channels,
        "preactivation": spec.preactivation,
        "shortcut": spec.shortcut,
        "conv_bias": spec.conv_bias,
        "num_classes": spec.num_classes,
    }


def conventional(spec: ResNetSpec) -> dict[str, object]:
    """Every field weights cannot show, as hints."""
    s = spec.stem
    return {
        "bottleneck_stride": spec.bottleneck_stride,
        "stride_position": spec.stride_position,
        "stages": [{"stride": st.stride} for st in spec.stages],
        "stem": {"stride": s.stride, "padding": s.padding, "pool": s.pool, "pool_size": s.pool_size,
                 "pool_stride": s.pool_stride, "pool_padding": s.pool_padding, "pool_pad_value": s.pool_pad_value},
        "padding": spec.padding,
        "batchnorm": spec.batchnorm,
        "zero_init_last_bn": spec.zero_init_last_bn,
        "head_activation": spec.head_activation,
        "anti_alias": spec.anti_alias,
        "norm": {"groups": spec.norm.groups, "epsilon": spec.norm.epsilon},
        "std_conv_epsilon": spec.std_conv_epsilon,
    }


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_is_inferred_from_its_weights(name: str) -> None:
    preset = get_spec(name)
    weights = shapes_only(preset)
    assert identifiable(infer_spec(weights)) == identifiable(preset)
    assert infer_spec(weights, **conventional(preset)) == preset  # the name too: the matching preset's


# The published families need no hints: the conventions are theirs. Only the two seed
# tutorials' own choices (a stride-3 unpadded stem, Keras 'same' padding, ...) need hints.
# timm's table (shared_specs.presets_timm): tests/test_timm_families.py, with the hints its
# anti-aliased and torchvision-shaped rows need. keras-hub's resnet_vd_50 holds exactly the
# tensors of timm's resnet50d (its first stage widens anyway, so always_project shows
# nowhere): the weights cannot tell them apart, and the conventions name timm's.
@pytest.mark.parametrize("name", [n for n in list_presets()
                                  if not n.startswith("tutorial_") and n not in TABLE_PRESETS
                                  and n != "resnet_vd_50"])
def test_conventions_reproduce_published_families(name: str) -> None:
    assert infer_spec(shapes_only(get_spec(name))) == get_spec(name)


def test_tutorial_needs_hints_for_what_weights_cannot_show() -> None:
    spec = infer_spec(shapes_only(get_spec("tutorial_cifar_resnet18")))
    assert [d.path for d in spec.differences(get_spec("tutorial_cifar_resnet18"))] == [
        "batchnorm.epsilon", "batchnorm.running_stats_decay", "batchnorm.running_var", "stages[0].stride",
        "stem.padding", "stem.pool",
        "stem.pool_pad_value", "stem.stride"]
    assert spec.name == "resnet"  # no preset has these conventions


def test_variants_outside_the_registry() -> None:
    # a headless (num_classes=None) ResNeXt with 2 input channels and 5 stages
    spec = get_spec("resnext50_32x4d", in_channels=2, num_classes=None,
                    stages=[{"depth": 2, "width": w, "stride": s} for w, s in
                            ((64, 1), (128, 2), (256, 2), (512, 2), (512, 2))])
    got = infer_spec(shapes_only(spec))
    assert got.replace(name=spec.name) == spec
    # one block per stage: every block reshapes and projects, so B and C are the same
    # network; infer_spec says C ("projection in every block")
    single = spec.replace(stages=[{"depth": 1, "width": s.width, "stride": s.stride} for s in spec.stages])
    assert infer_spec(shapes_only(single)).shortcut == "C"
    assert infer_spec(shapes_only(single), shortcut="B").replace(name=spec.name) == single
    # torchvision's resnet50 with a bias on every conv has exactly the tensors of
    # keras.applications' ResNet50, whose conventions it is then read with; hints
    # recover the torchvision variant
    biased = get_spec("resnet50", conv_bias="all")
    assert infer_spec(shapes_only(biased)) == get_spec("resnet50_v1")
    torch_like = infer_spec(shapes_only(biased), bottleneck_stride="3x3", stem={"pool_pad_value": "-inf"},
                            batchnorm={"epsilon": 1e-5, "running_stats_decay": 0.9, "running_var": "unbiased"})
    assert torch_like.replace(name=biased.name) == biased


def test_projection_in_every_block_is_c_and_a_parameter_free_net_is_a() -> None:
    c = get_spec("resnet18", shortcut="C")
    assert infer_spec(shapes_only(c)).shortcut == "C"
    a = get_spec("cifar_resnet20")
    assert not any("downsample" in k for k in shapes_only(a))
    assert infer_spec(shapes_only(a)).shortcut == "A"


def test_torch_arrays_and_counters_are_accepted() -> None:
    import torch
    weights = {k: torch.zeros(v.shape) for k, v in shapes_only(get_spec("resnet18")).items()}
    weights["bn1.num_batches_tracked"] = torch.tensor(0)
    assert infer_spec(weights) == get_spec("resnet18")


# -- what is not a ResNet -------------------------------------------------------------


def mutated(name: str, drop: tuple[str, ...] = (), **extra: tuple[int, ...]) -> dict[str, np.ndarray]:
    weights = shapes_only(get_spec(name))
    weights = {k: v for k, v in weights.items() if not k.startswith(drop)} if drop else weights
    weights.update({k: np.zeros(s, np.float32) for k, s in extra.items()})
    return weights


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (mutated("resnet18", drop=("conv1.",)), "no stem: a ResNet's weights hold conv1.weight"),
        (mutated("resnet18", drop=("layer",)), "no layer1.* tensors"),
        (mutated("resnet18", drop=("layer2.",)), "layer4.* tensors are present but no layer2.*"),
        (mutated("resnet34", drop=("layer2.1.",)), "layer2.3.* tensors are present but no layer2.1.*"),
        (mutated("resnet18", **{"layer2.0.conv1.weight": (128, 32, 3, 3)}),
         "layer2.0.conv1.weight takes 32 input channels but layer1.1 outputs 64"),
        (mutated("resnet50", **{"layer3.0.conv1.weight": (128, 512, 1, 1)}),
         "layer3.0.conv2.weight has shape (256, 256, 3, 3): the 3x3 conv of a bottleneck maps the 128 channels"),
        (mutated("resnet18", **{"head.weight": (10, 512)}),
         "unexpected tensor head.weight (no layer of this ResNet has that name)"),
        (mutated("resnet18", **{"layer1.0.conv1.bias": (64,)}),
         "layer1.0.conv1.bias is present but conv1.bias is not"),
        (mutated("resnet18", **{"layer2.1.conv3.weight": (128, 128, 1, 1)}),
         "layer2.1.conv3.weight is present but layer2.0 is a basic block: one stage has one block type"),
        (mutated("resnet18", **{"fc.weight": (10, 256)}), "fc.weight has shape (10, 256)"),
        (mutated("resnet18", **{"layer1.0.bn1.weight": (32,)}),
         "layer1.0.bn1.weight has shape (32,), the network needs (64,)"),
        (mutated("resnet18", drop=("layer3.0.downsample.",)),
         "layer3.0 changes shape under the stage strides [1, 2, 2, 2] in each stage's first block"),
        (mutated("resnet18", **{"layer1.1.downsample.0.weight": (64, 64, 1, 1)}),
         "layer1.1.downsample.0.weight projects the shortcut of a block that keeps its shape"),
        (mutated("resnet18", **{"conv1.weight": (64, 3, 7)}), "conv1.weight has shape (64, 3, 7)"),
        ({f"module.{k}": v for k, v in shapes_only(get_spec("resnet18")).items()}, "strip it"),
        (mutated("resnet50d", **{"layer2.0.downsample.0.weight": (512, 256, 1, 1)}),
         "layer2.0.downsample.0.weight is a projection shortcut but layer1.0.downsample.1.weight timm's avg-pool"),
    ],
    ids=["no-stem", "no-layer1", "stage-gap", "block-gap", "channels-chain", "bottleneck-mid", "unknown-tensor",
         "stray-bias", "mixed-blocks", "fc-width", "bn-width", "missing-projection", "extra-projection", "conv-ndim",
         "module-prefix", "mixed-shortcuts"],
)
def test_non_resnets_are_refused_naming_the_tensor(weights: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(SpecError) as err:
        infer_spec(weights)
    assert message in str(err.value)


def test_hints_that_contradict_the_weights_are_refused() -> None:
    weights = shapes_only(get_spec("resnet50"))
    with pytest.raises(SpecError, match=r"with hints \{'num_classes': 10\}: fc.weight has shape \(1000, 2048\)"):
        infer_spec(weights, num_classes=10)
    with pytest.raises(SpecError, match=r"hint stages\[2\].depth=5 contradicts the weights: layer3 has depth 6"):
        infer_spec(weights, stages=[{}, {}, {"depth": 5}, {}])
    with pytest.raises(SpecError, match="one entry per stage: the weights have 4"):
        infer_spec(weights, stages=[{"stride": 1}])
    with pytest.raises(SpecError, match=r"unknown hint\(s\) \['strides'\]"):
        infer_spec(weights, strides=(1, 2, 2, 2))


def test_strides_hint_changes_the_shortcut_reading() -> None:
    # keras.applications V2 weights read under torchvision's strides: layer1.2 would keep
    # its shape, so B; under V2's own (stride in the last block) it subsamples: B-subsample.
    weights = shapes_only(get_spec("resnet50_v2"))
    assert infer_spec(weights).shortcut == "B-subsample"
    assert infer_spec(weights, stride_position="first", stages=[{"stride": s} for s in (1, 2, 2, 2)]).shortcut == "B"
