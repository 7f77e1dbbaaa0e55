"""The seed tutorials: the checker finds the bugs the posts contain, reads faithful code as
faithful, and the two tutorial presets compute what the posts' code computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import resnet_keras as rk
import resnet_torch as rt
from resnet_rosetta.cli import main
from resnet_rosetta.teaching import architecture as A
from resnet_rosetta.teaching import seeds
from shared_specs import SpecError, get_spec
from shared_specs.synthetic import random_weights
from support import assert_f32_close, keras_forward, torch_forward


def codes(findings: tuple[A.Finding, ...], architectural: bool | None = None) -> set[str]:
    return {f.code for f in findings if architectural is None or f.architectural == architectural}


def plan_arch(name: str) -> A.Arch:
    return A.segment(A.from_plan(get_spec(name)))


def load_matched_torch(model: torch.nn.Module, arch: A.Arch, preset: str, weights: dict[str, np.ndarray]) -> None:
    """Canonical weights into a seed's own module names, paired by the checker's structure."""
    pairs = A.match_layers(arch, plan_arch(preset))
    state = {f"{mine}.{suffix}": torch.from_numpy(weights[f"{canonical}.{suffix}"])
             for mine, canonical in pairs.items()
             for suffix in ("weight", "bias", "running_mean", "running_var") if f"{canonical}.{suffix}" in weights}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)


def test_seed000_is_a_faithful_resnet34() -> None:
    check = seeds.check_seed("000")
    assert check.built and check.faithful and check.findings == ()
    model = seeds.seed000().eval()
    assert_same_outputs(model, seeds.architecture_of(model), "resnet34")


def test_seed001_bugs_against_resnet18() -> None:
    check = seeds.check_seed("001")
    assert check.built and not check.faithful
    assert {"stem.missing.maxpool", "stem.conv.kernel", "stem.conv.stride", "stem.conv.padding", "stages.depth",
            "main.conv.stride", "shortcut.extra.conv"} <= codes(check.findings, architectural=True)
    assert {"stem.conv.bias", "main.conv.bias", "shortcut.conv.bias"} <= codes(check.findings, architectural=False)
    depth = next(f for f in check.findings if f.code == "stages.depth")
    assert "(1, 1, 1, 1)" in depth.message and "(2, 2, 2, 2)" in depth.message


def test_preset_tutorial_cifar_resnet18_is_post_001() -> None:
    model = seeds.seed001().eval()
    arch = seeds.architecture_of(model)
    assert A.compare(arch, plan_arch("tutorial_cifar_resnet18")) == []
    assert_same_outputs(model, arch, "tutorial_cifar_resnet18")


def assert_same_outputs(model, arch, preset: str) -> None:  # type: ignore[no-untyped-def]
    """The seed's model and our preset, holding the same random weights, compute the same function."""
    spec = get_spec(preset)
    weights = random_weights(spec)
    load_matched_torch(model, arch, preset, weights)
    ours = rt.build(spec)
    rt.import_weights(ours, weights)
    x = np.random.default_rng(1).normal(size=(2, 3, 32, 32)).astype(np.float32)
    # same ATen kernels in the same order: identical in practice, held to the float32 bound
    assert_f32_close(torch_forward(model, x), torch_forward(ours, x), f"seed model vs {preset}")


def test_seed003_torch_bugs() -> None:
    check = seeds.check_seed("003-torch")
    assert not check.faithful
    assert {"stem.missing.bn", "stem.missing.relu", "stem.maxpool.padding", "main.relu_before_bn",
            "main.extra.relu", "after.missing.relu", "shortcut.missing.bn", "shortcut.extra.relu"} \
        <= codes(check.findings, architectural=True)
    after = next(f for f in check.findings if f.code == "after.missing.relu")
    assert "all 16 blocks" in after.where


@pytest.mark.keras_backend
def test_seed003_keras_bugs() -> None:
    check = seeds.check_seed("003-keras")
    assert not check.faithful
    assert {"stem.missing.bn", "stem.missing.relu", "stem.maxpool.padding", "main.extra.relu",
            "main.ends_with_relu", "shortcut.missing.bn", "shortcut.extra.relu"} \
        <= codes(check.findings, architectural=True)
    # Keras defaults and the softmax head are reported, as details
    assert {"main.bn.epsilon", "main.conv.bias", "head.extra.softmax"} <= codes(check.findings, architectural=False)
    assert "relu_before_bn" not in " ".join(codes(check.findings))  # the Keras half normalises first


@pytest.mark.keras_backend
def test_seed004_does_not_build_and_its_fix_is_the_preset() -> None:
    check = seeds.check_seed("004")
    assert not check.built and "incompatible shapes" in check.error
    assert check.fixed is not None and not any(f.architectural for f in check.fixed)
    assert {"main.conv.padding", "main.bn.epsilon", "head.extra.softmax"} <= codes(check.fixed)

    fixed = seeds.seed004(conv_shortcut_where_needed=True)
    arch = seeds.architecture_of(fixed)
    assert A.compare(arch, plan_arch("tutorial_keras_resnet18")) == []
    spec = get_spec("tutorial_keras_resnet18")
    ours = rk.build(spec)
    rk.import_weights(ours, random_weights(spec))
    pairs = A.match_layers(arch, plan_arch("tutorial_keras_resnet18"))
    assert len(pairs) == sum(1 for layer in fixed.layers if layer.weights)
    for mine, canonical in pairs.items():
        fixed.get_layer(mine).set_weights(ours.get_layer(canonical.replace(".", "_")).get_weights())
    x = np.random.default_rng(1).normal(size=(1, 3, 224, 224)).astype(np.float32)  # the post fixes 224x224
    assert_f32_close(keras_forward(fixed, x), keras_forward(ours, x), "seed 004 (fixed) vs its preset")


def test_seed002_has_no_code() -> None:
    check = seeds.check_seed("002")
    assert not check.built and "no model code" in check.error


@pytest.mark.keras_backend
@pytest.mark.parametrize("name", ["resnet18", "resnet50_v1", "resnet50_v2", "cifar_resnet20",
                                  "tutorial_keras_resnet18"])
def test_checker_reads_our_builds_as_their_presets(name: str) -> None:
    spec = get_spec(name, stages=[{"depth": 2, "width": 16, "stride": 2}, {"depth": 1, "width": 32, "stride": 2}])
    reference = A.segment(A.from_plan(spec))
    assert A.compare(seeds.architecture_of(rt.build(spec)), reference) == []
    assert A.compare(seeds.architecture_of(rk.build(spec)), reference) == []


@pytest.mark.parametrize(("change", "code", "architectural"), [
    ({"stem": {"pool": "none"}}, "stem.missing.maxpool", True),
    ({"shortcut": "C"}, "shortcut.extra.conv", True),
    ({"preactivation": True}, "main.order", True),
    ({"stages": [{"depth": 1, "width": 64}, {"depth": 2, "width": 128, "stride": 2}]}, "stages.depth", True),
    ({"batchnorm": {"epsilon": 1e-3}}, "main.bn.epsilon", False),
    ({"padding": "same"}, "main.conv.padding", False),
    ({"conv_bias": "all"}, "main.conv.bias", False),
])
def test_checker_finds_a_single_change(change: dict, code: str, architectural: bool) -> None:
    base = get_spec("resnet18", stages=[{"depth": 2, "width": 64}, {"depth": 2, "width": 128, "stride": 2}])
    findings = A.compare(seeds.architecture_of(rt.build(base.replace(**change))), A.segment(A.from_plan(base)))
    assert code in codes(tuple(findings))
    assert all(f.architectural == architectural for f in findings if f.code == code)


def test_unknown_seed() -> None:
    with pytest.raises(SpecError, match="unknown seed '9'"):
        seeds.check_seed("9")


@pytest.mark.keras_backend
def test_seeds_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["seeds"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line[:3].isdigit()}
    assert "faithful" in lines["000"] and "not faithful" not in lines["000"]
    assert "not faithful" in lines["001"] and "not faithful" in lines["003-torch"]
    assert "does not build" in lines["004"]
    assert main(["seeds", "003-torch"]) == 0
    assert "ReLU before BatchNorm" in capsys.readouterr().out
