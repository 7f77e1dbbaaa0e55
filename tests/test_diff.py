"""resnet-rosetta diff: per-layer agreement, the first divergence, and the cause it names.

Only the faithful-port test runs on every Keras backend (it proves layer outputs are read
alike on each); diagnosing a naive port is backend-independent logic, run once.
"""

import pytest

import resnet_keras as rk
import resnet_torch as rt
from resnet_rosetta.cli import main
from resnet_rosetta.interop.diff import diff, plot
from shared_specs import get_spec, make_plan
from support import F32_RTOL, random_weights


def models(name="resnet18", seed=0, **keras_overrides):
    spec = get_spec(name)
    weights = random_weights(spec, seed=seed)
    torch_model = rt.build(spec)
    rt.import_weights(torch_model, weights)
    keras_model = rk.build(spec.replace(**keras_overrides))
    rk.import_weights(keras_model, weights)
    return torch_model, keras_model, weights


@pytest.mark.keras_backend
def test_a_faithful_port_agrees_at_every_layer():
    torch_model, keras_model, _ = models()
    report = diff(torch_model, keras_model, input_hw=(48, 40))
    assert report.first_divergence is None and report.causes == []
    assert [r.name for r in report.rows] == [op.name for op in make_plan(torch_model.spec).ops()]
    assert max(r.max_rel for r in report.rows) < F32_RTOL  # the float32 parity bound


def test_keras_same_padding_is_caught_at_the_stem_conv():
    torch_model, keras_model, _ = models(padding="same")
    report = diff(torch_model, keras_model, input_hw=(64, 64))  # even size: 'same' pads (2, 3), torch (3, 3)
    assert report.first_divergence == "conv1"
    assert any("padding convention" in c and "trap 4" in c for c in report.causes)
    assert report.output_max_rel > 1e-2  # another function (trap 4: order 1), 100x above the float32 bound


def test_keras_default_epsilon_is_caught_at_the_first_batchnorm():
    torch_model, keras_model, _ = models(batchnorm={"epsilon": 1e-3})
    report = diff(torch_model, keras_model)
    assert report.first_divergence == "bn1"
    assert any("epsilon" in c and "trap 6" in c for c in report.causes)


def test_a_reshaped_kernel_is_recognised_as_a_layout_transpose():
    torch_model, keras_model, weights = models()
    naive = dict(weights)
    w = weights["layer2.0.conv2.weight"]  # (128, 128, 3, 3)
    naive["layer2.0.conv2.weight"] = w.reshape(3, 3, 128, 128).transpose(3, 2, 0, 1)  # HWIO reshape, then "ported"
    rk.import_weights(keras_model, naive)
    report = diff(torch_model, keras_model)
    assert report.first_divergence == "layer2.0.conv2"
    assert report.causes == ["layer2.0.conv2.weight: kernel reshaped instead of transposed between OIHW and HWIO: "
                             "layout transpose (trap 1)"]


def test_biased_running_variance_is_recognised():
    torch_model, keras_model, weights = models("cifar_resnet20")
    changed = dict(weights)
    changed["layer1.1.bn2.running_var"] = weights["layer1.1.bn2.running_var"] * (128 / 127)
    rk.import_weights(keras_model, changed)
    report = diff(torch_model, keras_model, input_hw=(32, 32))
    assert report.first_divergence == "layer1.1.bn2"
    assert "n = 128" in report.causes[0] and "trap 8" in report.causes[0]


def test_report_is_data_and_plots_to_png(tmp_path):
    torch_model, keras_model, _ = models(batchnorm={"epsilon": 1e-3})
    report = diff(torch_model, keras_model)
    first = next(r for r in report.rows if r.diverged)
    assert first.name == "bn1" and first.kind == "BatchNorm" and first.max_rel > F32_RTOL
    png = plot(report, tmp_path / "err.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_diff_of_two_files(tmp_path, capsys):
    torch_model, _, weights = models("cifar_resnet20")
    a = tmp_path / "a.safetensors"
    rt.save_weights(torch_model, a)
    b = tmp_path / "b.keras"
    bad = rk.build(torch_model.spec.replace(batchnorm={"epsilon": 1e-3}))
    rk.import_weights(bad, weights)
    bad.save(b)
    code = main(["diff", str(a), str(a), "--input-size", "32"])
    out = capsys.readouterr().out
    assert code == 0 and "all 63 layers agree within 0.0001" in out
    code = main(["diff", str(a), str(b), "--input-size", "32", "--plot", str(tmp_path / "p.png")])
    out = capsys.readouterr().out
    assert code == 1
    assert "first divergence beyond 0.0001: bn1" in out and "epsilon" in out and (tmp_path / "p.png").exists()


NAIVE_CASES = [  # (preset, naive trap, target framework, first diverging layer, trap number named)
    ("resnet50", "kernel-reshape", "keras", "conv1", "trap 1"),
    ("resnet50", "kernel-reversed", "keras", "conv1", "trap 1"),
    ("resnet50", "dense-untransposed", "keras", "fc", "trap 2"),
    ("resnet50", "same-padding", "keras", "conv1", "trap 4"),
    ("resnet50", "bn-epsilon", "keras", "bn1", "trap 6"),
    ("resnet50", "stride-on-1x1", "keras", "layer2.0.conv1", "trap 19"),
    ("resnet50_v2", "zero-pool-padding", "torch", "maxpool", "trap 5"),
    ("resnet50_v2", "v2-stride-first", "keras", "layer1.0.conv2", "trap 20"),
]


@pytest.mark.parametrize(("name", "trap", "framework", "first", "cause"), NAIVE_CASES)
def test_each_naive_port_is_diagnosed_where_it_bites(name, trap, framework, first, cause):
    from resnet_rosetta.teaching.naive import naive_port

    spec = get_spec(name)
    weights = random_weights(spec, seed=4)
    source = rt.build(spec) if framework == "keras" else rk.build(spec)
    (rt if framework == "keras" else rk).import_weights(source, weights)
    report = diff(source, naive_port(spec, weights, trap, framework), input_hw=(64, 64))
    assert report.first_divergence == first
    assert any(cause in c for c in report.causes), report.causes


def test_cli_diff_against_a_naive_port(tmp_path, capsys):
    torch_model, _, _ = models("resnet18")
    path = tmp_path / "r18.safetensors"
    rt.save_weights(torch_model, path)
    code = main(["diff", str(path), "--naive", "bn-epsilon"])
    out = capsys.readouterr().out
    assert code == 1 and "naive port into keras (bn-epsilon)" in out and "first divergence beyond 0.0001: bn1" in out


# -- timm's layers -------------------------------------------------------------------------------

from shared_specs.tolerances import F32_PARITY  # noqa: E402

FAMILY_STAGES = [{"depth": 1, "width": 16, "stride": 1}, {"depth": 1, "width": 32, "stride": 2}]
TINY = get_spec("resnet18", stem={"widths": [16]}, stages=FAMILY_STAGES)
FAMILY_DIFF = {  # every new op kind: SE, GroupNorm, standardised convs, BlurPool; ECA, EvoNorm-S0, FRN, avg pools
    "se_gn_std_blur": TINY.replace(attention={"kind": "se"}, norm={"kind": "groupnorm", "groups": 8},
                                   std_conv_epsilon=1e-8, anti_alias="blur"),
    "eca_evonorm_v2": get_spec("resnetv2_50d_evos", stages=FAMILY_STAGES, stem={"widths": [16, 16, 32]},
                               norm={"groups": 8}),
    "frn_avg_aa": TINY.replace(norm={"kind": "frn"}, anti_alias="avg", attention={"kind": "eca"}),
}


def family_models(spec, **keras_overrides):
    weights = random_weights(spec, seed=2)
    torch_model = rt.build(spec)
    rt.import_weights(torch_model, weights)
    keras_model = rk.build(spec.replace(**keras_overrides))
    rk.import_weights(keras_model, weights)
    return torch_model, keras_model, weights


# per backend: one net shows layer outputs (SE's sub-layers, BlurPool, GroupNorm) are read alike on each
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.keras_backend) if n == "se_gn_std_blur" else n
                                  for n in FAMILY_DIFF])
def test_a_faithful_port_of_timm_layers_agrees_at_every_layer(name):
    from resnet_rosetta.interop.layer_outputs import probe_names

    torch_model, keras_model, _ = family_models(FAMILY_DIFF[name])
    report = diff(torch_model, keras_model, input_hw=(32, 32))  # a multiple of the total stride: 'avg' pools
    assert report.first_divergence is None and report.causes == [] and report.notes == []
    assert [r.name for r in report.rows] == probe_names(torch_model.spec)  # every op, read in both frameworks
    assert max(r.max_rel for r in report.rows) < F32_PARITY


@pytest.mark.parametrize(("change", "first", "cause"), [
    # standardised 7x7x3 stem kernels (147 unit-variance taps) give bn1 inputs of variance ~147: 1e-2 barely moves it
    ({"norm": {"epsilon": 1e-2}}, "layer1.0.bn1", "trap 24"),
    ({"norm": {"groups": 4}}, "bn1", "traps 23, 25"),
    ({"attention": {"kind": "eca"}}, "layer1.0.se", "trap 29"),
    ({"std_conv_epsilon": None}, "conv1", "trap 30"),
    ({"anti_alias": "none"}, "layer1.0.conv1", "trap 27"),  # the stem pool strides by itself; maxpool.* differ
])
def test_spec_differences_of_timm_layers_are_named(change, first, cause):
    spec = FAMILY_DIFF["se_gn_std_blur"]
    weights = random_weights(spec, seed=2)
    source = rt.build(spec)
    rt.import_weights(source, weights)
    other = spec.replace(**change)
    target = rk.build(other)
    ours = random_weights(other, seed=2)
    rk.import_weights(target, {k: weights[k] if k in weights and weights[k].shape == v.shape else v
                               for k, v in ours.items()})
    report = diff(source, target, input_hw=(32, 32))
    assert report.first_divergence == first
    assert any(cause in c for c in report.causes), report.causes


@pytest.mark.parametrize(("spec", "trap", "framework", "first", "cause"), [
    (TINY.replace(norm={"kind": "groupnorm", "groups": 8}), "groupnorm-as-batchnorm", "keras", "bn1", "trap 23"),
    (TINY.replace(norm={"kind": "groupnorm", "groups": 8}), "gn-epsilon", "keras", "bn1", "trap 24"),
    (TINY.replace(anti_alias="blur"), "no-anti-alias", "keras", "layer1.0.conv1", "trap 27"),
    (TINY.replace(std_conv_epsilon=1e-8), "std-conv-forgotten", "torch", "conv1", "trap 30"),
])
def test_naive_ports_of_timm_layers_are_diagnosed_where_they_bite(spec, trap, framework, first, cause):
    from resnet_rosetta.teaching.naive import naive_port

    weights = random_weights(spec, seed=4)
    source = rt.build(spec) if framework == "keras" else rk.build(spec)
    (rt if framework == "keras" else rk).import_weights(source, weights)
    report = diff(source, naive_port(spec, weights, trap, framework), input_hw=(32, 32))
    assert report.first_divergence == first
    assert any(cause in c for c in report.causes), report.causes
