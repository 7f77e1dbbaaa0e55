"""The resnet-rosetta command: list, show, port, and one-line errors with exit status 2."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import resnet_torch as rt
from resnet_rosetta.cli import main
from shared_specs import ResNetSpec, count_flops, count_params, get_spec, layer_table, list_presets, read_checkpoint
from support import F32_RTOL, random_weights


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def parities(monkeypatch):
    """Every Parity the convert command measures, as the structured result it prints."""
    from resnet_rosetta.cli import convert

    seen = []
    measure = convert.measure_parity

    def recording(*args, **kwargs):
        seen.append(measure(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(convert, "measure_parity", recording)
    return seen


def printed_parity(out: str, parities: list) -> float:
    """The max relative difference of the one parity check the command ran, which it printed."""
    from resnet_rosetta.interop.parity import describe

    assert len(parities) == 1 and describe(parities[0]) in out, out
    return parities.pop().max_rel


def test_console_script_is_installed_and_lists_presets():
    exe = Path(sys.executable).with_name("resnet-rosetta")
    result = subprocess.run([str(exe), "list", "resnet5*", "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert list(rows) == list_presets("resnet5*") == ["resnet50", "resnet50_v1", "resnet50_v2", "resnet50d",
                                                      "resnet50c", "resnet50s", "resnet50t", "resnet50_gn"]
    assert [r["family"] for r in rows.values()] == ["torchvision", "keras.applications", "keras.applications",
                                                    "timm ResNet", "timm ResNet", "timm ResNet", "timm ResNet",
                                                    "timm ResNet"]
    # published figures: torchvision's resnet50 documentation (25,557,032 parameters, 4.09
    # GFLOPS, i.e. multiply-adds); keras.applications' count_params(), which includes BN
    # statistics (ResNet50 25,636,712, ResNet50V2 25,613,800)
    assert (rows["resnet50"]["params"], round(rows["resnet50"]["macs"] / 1e9, 2)) == (25_557_032, 4.09)
    assert rows["resnet50_v1"]["params"] + rows["resnet50_v1"]["buffers"] == 25_636_712
    assert rows["resnet50_v2"]["params"] + rows["resnet50_v2"]["buffers"] == 25_613_800
    for name, row in rows.items():  # and the counting API, for every row
        params = count_params(get_spec(name))
        hw = tuple(row["input"])
        assert (row["params"], row["buffers"], row["macs"]) == (params.trainable, params.buffers,
                                                                 count_flops(get_spec(name), hw)), name
    # the table a person reads prints the same numbers
    result = subprocess.run([str(exe), "list", "resnet5*"], capture_output=True, text=True, timeout=120)
    lines = result.stdout.splitlines()[2:]
    assert [line for line in lines if line.startswith("== ")] == ["== torchvision (1)", "== keras.applications (2)",
                                                                  "== timm ResNet (5)"]  # grouped by family
    table = {line.split()[0]: line.split()[1:3] for line in lines if not line.startswith("== ")}
    assert table == {n: [f"{r['params']:,}", f"{r['macs'] / 1e9:.2f}"] for n, r in rows.items()}


def test_show_prints_one_row_per_layer_with_both_frameworks(capsys):
    code, out, _ = run(capsys, "show", "resnet18", "--input", "64,64", "--json")
    assert code == 0
    shown = json.loads(out)
    table = layer_table(get_spec("resnet18"), (64, 64))
    assert [(r["name"], tuple(r["output_shape"]), r["params"], r["macs"]) for r in shown["layers"]] == [
        (r.name, r.output_shape, r.params, r.macs) for r in table]
    rows = {r["name"]: r for r in shown["layers"]}
    assert (rows["conv1"]["torch_module"], rows["conv1"]["keras_classes"]) == ("Conv2d", ["ZeroPadding2D", "Conv2D"])
    assert (rows["layer2.0.downsample.0"]["keras_layer"], rows["layer2.0.downsample.0"]["keras_classes"]) == (
        "layer2_0_downsample_0", ["Conv2D"])  # a 1x1 projection: no padding layer
    assert shown["params"] == 11_689_512  # torchvision's resnet18 documentation
    assert shown["macs"] == count_flops(get_spec("resnet18"), (64, 64))
    code, out, _ = run(capsys, "show", "resnet18", "--input", "64,64")  # the table a person reads
    lines = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in rows}
    assert len(lines) == len(rows)
    assert lines["conv1"].split()[:4] == ["conv1", "Conv2d", "conv1", "(ZeroPadding2D"]
    assert "11,689,512 trainable parameters" in out


def test_show_spec_prints_the_json(capsys):
    code, out, _ = run(capsys, "show", "cifar_resnet20", "--spec")
    assert code == 0 and ResNetSpec.from_json(out) == get_spec("cifar_resnet20")


def test_unknown_preset_is_one_line_and_status_2(capsys):
    code, out, err = run(capsys, "show", "resnet05")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("resnet-rosetta show: error: unknown preset 'resnet05'; did you mean resnet50")


@pytest.mark.keras_backend
def test_port_moves_a_model_through_every_format_and_checks_parity(capsys, tmp_path, parities):
    model = rt.build("cifar_resnet20")
    weights = random_weights(model.spec)
    rt.import_weights(model, weights)
    src = tmp_path / "src.safetensors"
    rt.save_weights(model, src)
    chain = [src, tmp_path / "a.keras", tmp_path / "b.pth", tmp_path / "c.weights.h5", tmp_path / "d.safetensors"]
    for a, b in zip(chain, chain[1:]):
        code, out, err = run(capsys, "port", str(a), str(b), "--preset", "cifar_resnet20", "--input-size", "32")
        assert code == 0, err
        assert printed_parity(out, parities) < F32_RTOL, out  # the float32 parity bound (tests/support.py)
    spec, final, _ = read_checkpoint(chain[-1])
    assert spec == model.spec
    assert all(np.array_equal(final[k], weights[k]) for k in weights)  # lossless through every format


def test_port_infers_the_spec_of_a_bare_state_dict(capsys, tmp_path):
    import torch
    import torchvision

    pth = tmp_path / "sd.pth"
    torch.save(torchvision.models.resnext50_32x4d(weights=None).state_dict(), pth)
    out_path = tmp_path / "out.safetensors"
    code, out, err = run(capsys, "port", str(pth), str(out_path), "--no-check")
    assert code == 0, err
    spec, _, _ = read_checkpoint(out_path)
    assert spec.replace(name="resnext50_32x4d") == get_spec("resnext50_32x4d")


def test_port_of_a_non_resnet_checkpoint_says_why_and_writes_nothing(capsys, tmp_path):
    import torch

    pth = tmp_path / "mlp.pth"
    torch.save({"0.weight": torch.zeros(4, 3), "0.bias": torch.zeros(4)}, pth)
    out_path = tmp_path / "out.safetensors"
    code, _, err = run(capsys, "port", str(pth), str(out_path))
    assert code == 2 and f"{pth}: not a ResNet checkpoint" in err and len(err.strip().splitlines()) == 1
    assert not out_path.exists()


def test_port_rejects_an_unknown_output_suffix(capsys, tmp_path):
    src = tmp_path / "src.safetensors"
    rt.save_weights(rt.build("cifar_resnet20"), src)
    code, _, err = run(capsys, "port", str(src), str(tmp_path / "out.onnx2"))
    assert code == 2 and "cannot tell the output format" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.safetensors"]


def test_convert_writes_a_keras_applications_model_and_reads_it_back(capsys, tmp_path, parities):
    import keras

    spec = get_spec("resnet50_v2", num_classes=10)
    weights = random_weights(spec)
    src = tmp_path / "src.safetensors"
    rt.save_weights(_loaded(spec, weights), src)
    app = tmp_path / "app.keras"
    code, out, err = run(capsys, "convert", str(src), str(app), "--to", "keras-applications", "--no-check")
    assert code == 0 and "keras-applications" in out, err
    model = keras.saving.load_model(app, compile=False)  # keras's own loader, no resnet-rosetta class needed
    assert type(model).__name__ == "Functional" and model.get_layer("conv1_conv").kernel.shape == (7, 7, 3, 64)
    back = tmp_path / "back.safetensors"
    code, out, err = run(capsys, "convert", str(app), str(back), "--input-size", "32")
    assert code == 0, err
    assert printed_parity(out, parities) < F32_RTOL, out  # the float32 parity bound (tests/support.py)
    stored, final, _ = read_checkpoint(back)
    assert stored.differences(spec) == []
    assert all(np.array_equal(final[k], weights[k]) for k in weights)  # lossless both ways


def test_convert_to_onnx_and_back_is_lossless(capsys, tmp_path, parities):
    from resnet_rosetta.interop.files import detect_format

    spec = get_spec("cifar_resnet20")
    weights = random_weights(spec)
    src = tmp_path / "src.safetensors"
    rt.save_weights(_loaded(spec, weights), src)
    graph = tmp_path / "m.onnx"
    code, _, err = run(capsys, "convert", str(src), str(graph), "--no-check")
    assert code == 0, err
    disguised = tmp_path / "m.bin"
    disguised.write_bytes(graph.read_bytes())
    assert detect_format(disguised) == "onnx"
    back = tmp_path / "back.safetensors"
    code, out, err = run(capsys, "port", str(disguised), str(back), "--input-size", "32")
    assert code == 0, err
    assert printed_parity(out, parities) < F32_RTOL, out  # the float32 parity bound (tests/support.py)
    _, final, _ = read_checkpoint(back)
    assert all(np.array_equal(final[k], weights[k]) for k in weights)


def test_convert_refuses_a_format_its_suffix_cannot_hold_before_reading(capsys, tmp_path):
    code, _, err = run(capsys, "convert", str(tmp_path / "missing.pth"), str(tmp_path / "out.h5"),
                       "--to", "keras-weights")
    assert code == 2 and "Keras writes keras-weights only to a file named *.weights.h5" in err
    assert len(err.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []


def _loaded(spec, weights):
    model = rt.build(spec)
    rt.import_weights(model, weights)
    return model
