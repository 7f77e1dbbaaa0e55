"""ResNetSpec: validation, strict JSON round trip, overrides, the preset registry."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared_specs import (
    BatchNormSpec,
    ResNetSpec,
    SpecError,
    StageSpec,
    StemSpec,
    get_spec,
    list_presets,
    register,
    resolve_spec,
)

# Every preset registered by hand, family by family (README's table); the table-driven families
# add theirs (shared_specs.presets_timm, presets_keras_hub). A preset that appears or vanishes
# without this list, or a table named here, changing fails test_registry_holds_exactly_the_presets_listed.
HAND_REGISTERED = {
    "torchvision": ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                    "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"],
    "keras.applications": ["resnet50_v1", "resnet101_v1", "resnet152_v1", "resnet50_v2", "resnet101_v2",
                           "resnet152_v2"],
    "CIFAR (He et al. 2015)": ["cifar_resnet20", "cifar_resnet32", "cifar_resnet44", "cifar_resnet56",
                               "cifar_resnet110", "cifar_resnet1202"],
    "timm D": ["resnet18d", "resnet34d", "resnet50d", "resnet101d"],
    "tutorials": ["tutorial_cifar_resnet18", "tutorial_keras_resnet18"],
}


def test_registry_holds_exactly_the_presets_listed():
    from shared_specs import presets_keras_hub, presets_timm

    listed = [name for names in HAND_REGISTERED.values() for name in names]
    listed += [*presets_timm.TABLE_PRESETS, *presets_keras_hub.TABLE]
    assert len(set(listed)) == len(listed)
    assert sorted(list_presets()) == sorted(listed)


@pytest.mark.parametrize("name", list_presets())
def test_preset_json_round_trip_is_lossless(name):
    spec = get_spec(name)
    assert spec.name == name
    again = ResNetSpec.from_json(spec.to_json())
    assert again == spec
    assert again.to_json() == spec.to_json()


def test_list_presets_filters_with_shell_patterns():
    import fnmatch

    found = list_presets("resnet5*")
    assert found == [n for n in list_presets() if fnmatch.fnmatchcase(n, "resnet5*")]  # registry order
    assert {"resnet50", "resnet50_v1", "resnet50_v2", "resnet50d"} <= set(found)
    assert not any(n.startswith("resnet1") for n in found)
    assert list_presets("nothing*") == []


def test_registering_a_taken_name_fails():
    with pytest.raises(SpecError, match="'resnet50' is already registered"):
        register("resnet50")(lambda: get_spec("resnet18"))


def test_unknown_preset_suggests_close_names():
    with pytest.raises(SpecError, match="unknown preset 'resnet05'.*did you mean resnet50"):
        get_spec("resnet05")


def test_overrides_replace_fields_and_reject_typos():
    spec = get_spec("resnet50", num_classes=10, batchnorm={"epsilon": 1e-3})
    assert spec.num_classes == 10 and spec.batchnorm == BatchNormSpec(1e-3, 0.9)
    assert spec.stages == get_spec("resnet50").stages
    with pytest.raises(SpecError, match=r"unknown ResNetSpec field\(s\) \['num_class'\]"):
        get_spec("resnet50", num_class=10)
    with pytest.raises(SpecError, match=r"unknown key\(s\) \['stem.kernel'\]"):
        get_spec("resnet50", stem={"kernel": 3})


def test_resolve_spec_accepts_spec_or_name_only():
    spec = get_spec("resnet18")
    assert resolve_spec(spec) is spec
    assert resolve_spec("resnet18", num_classes=5).num_classes == 5
    with pytest.raises(SpecError, match="expected a ResNetSpec or a preset name, got int"):
        resolve_spec(18)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"groups": 32, "width_per_group": 4, "block": "basic"}, "groups and width_per_group apply to bottleneck"),
        ({"stages": [{"depth": 3, "width": 64}, {"depth": 0, "width": 128}]},
         r"stages\[1\]\.depth must be >= 1, got 0"),
        ({"stages": []}, "stages must hold at least one stage"),
        ({"width_per_group": 4, "stages": [{"depth": 1, "width": 10}]},
         r"stages\[0\].width=10 times width_per_group=4 must be a multiple of 64"),
        ({"shortcut": "E"}, r"shortcut must be one of \['A', 'B', 'B-subsample', 'C', 'D'\], got 'E'"),
        ({"block": "Bottleneck"}, "block must be one of"),
        ({"num_classes": 0}, "num_classes must be >= 1, got 0"),
        ({"num_classes": None, "head_activation": "softmax"}, "head_activation needs a classifier"),
        ({"in_channels": 2.5}, "in_channels must be an integer, got 2.5"),
        ({"preactivation": "yes"}, "preactivation must be true or false"),
        ({"batchnorm": {"running_stats_decay": 0.1 - 1.0}}, r"running_stats_decay .* must be in \[0, 1\)"),
        ({"batchnorm": {"epsilon": 0}}, "batchnorm.epsilon must be > 0"),
        ({"stem": {"widths": []}}, "stem.widths must name at least one conv width"),
        ({"stem": {"pool_padding": 2}}, "stem.pool_padding=2 is too large for pool_size=3"),
        ({"zero_init_last_bn": True, "preactivation": True}, "zero_init_last_bn needs a BatchNorm closing"),
    ],
)
def test_inconsistent_specs_are_rejected_naming_the_field(changes, message):
    with pytest.raises(SpecError, match=message):
        get_spec("resnet50", **changes)


def test_parameter_free_shortcut_cannot_shrink_channels():
    with pytest.raises(SpecError, match=r"shortcut 'A' .* stages\[1\] shrinks 32 -> 16 channels"):
        get_spec("cifar_resnet20", stages=[StageSpec(3, 32), StageSpec(3, 16, 2)])


def test_from_dict_rejects_unknown_and_misspelled_keys_anywhere():
    data = get_spec("resnet18").to_dict()
    for path, key in ((data, "num_clases"), (data["stem"], "kernal_size"), (data["stages"][2], "strides")):
        path[key] = 1
        with pytest.raises(SpecError, match=key):
            ResNetSpec.from_dict(data)
        del path[key]
    assert ResNetSpec.from_dict(data) == get_spec("resnet18")


def test_from_dict_names_the_nested_field_at_fault():
    data = get_spec("resnet18").to_dict()
    data["stages"][1]["depth"] = 0
    with pytest.raises(SpecError, match=r"stages\[1\]\.depth must be >= 1, got 0"):
        ResNetSpec.from_dict(data)


def test_from_json_rejects_invalid_json_and_missing_required_field():
    with pytest.raises(SpecError, match="not valid JSON"):
        ResNetSpec.from_json("{")
    with pytest.raises(SpecError, match="stages"):
        ResNetSpec.from_json(json.dumps({"block": "basic"}))


def test_differences_lists_dotted_paths():
    a = get_spec("resnet50")
    b = get_spec("resnet50", batchnorm={"epsilon": 1e-3}, stages=[StageSpec(3, 64), StageSpec(4, 128, 2),
                                                                  StageSpec(6, 256, 2), StageSpec(2, 512, 2)])
    assert a.differences(b) == [("batchnorm.epsilon", 1e-5, 1e-3), ("stages[3].depth", 3, 2)]
    assert a.differences(a.replace(name="x")) == []


def test_running_stats_decay_is_not_torch_momentum():
    # torchvision's BatchNorm2d(momentum=0.1) keeps 0.9 of the old value; Keras's default keeps 0.99.
    assert get_spec("resnet50").batchnorm.running_stats_decay == 0.9
    assert get_spec("resnet50_v1").batchnorm.running_stats_decay == 0.99


specs = st.builds(
    ResNetSpec,
    stages=st.lists(
        st.builds(StageSpec, depth=st.integers(1, 4), width=st.sampled_from([16, 64, 128]), stride=st.integers(1, 3)),
        min_size=1, max_size=5,
    ),
    block=st.sampled_from(["basic", "bottleneck"]),
    preactivation=st.booleans(),
    bottleneck_stride=st.sampled_from(["1x1", "3x3"]),
    stride_position=st.sampled_from(["first", "last"]),
    shortcut=st.sampled_from(["B", "B-subsample", "C", "D"]),
    stem=st.builds(StemSpec, widths=st.lists(st.integers(1, 64), min_size=1, max_size=3), kernel_size=st.integers(1, 7),
                   stride=st.integers(1, 4), pool=st.sampled_from(["max", "none"]),
                   pool_pad_value=st.sampled_from(["-inf", "zero"])),
    conv_bias=st.sampled_from(["none", "all", "unnormalized"]),
    padding=st.sampled_from(["symmetric", "same"]),
    batchnorm=st.builds(BatchNormSpec, epsilon=st.floats(1e-8, 1e-1), running_stats_decay=st.floats(0.0, 0.999)),
    in_channels=st.integers(1, 4),
    num_classes=st.one_of(st.none(), st.integers(1, 1000)),
)


@settings(max_examples=200, deadline=None)
@given(specs)
def test_any_valid_spec_round_trips_through_json(spec):
    assert ResNetSpec.from_json(spec.to_json()) == spec
