"""The resnet-rosetta command: list, show, port, and one-line errors with exit status 2."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import resnet_torch as rt
from resnet_rosetta.cli import main
from shared_specs import ResNetSpec, get_spec, layer_table, read_checkpoint
from support import random_weights


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_console_script_is_installed_and_lists_presets():
    exe = Path(sys.executable).with_name("resnet-rosetta")
    result = subprocess.run([str(exe), "list", "resnet5*"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = [line.split()[:3] for line in result.stdout.splitlines()[2:]]
    assert rows == [["resnet50", "25,557,032", "4.09"], ["resnet50_v1", "25,583,592", "3.86"],
                    ["resnet50_v2", "25,568,360", "3.48"], ["resnet50d", "25,576,264", "4.33"]]


def test_show_prints_one_row_per_layer_with_both_frameworks(capsys):
    code, out, _ = run(capsys, "show", "resnet18", "--input", "64,64")
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith(("conv1", "bn1", "relu", "maxpool", "layer", "avgpool", "fc"))]
    assert len(rows) == len(layer_table(get_spec("resnet18"), (64, 64)))
    assert rows[0].split()[:4] == ["conv1", "Conv2d", "conv1", "(ZeroPadding2D"]
    assert "layer2.0.downsample.0  Conv2d" in out and "layer2_0_downsample_0 (Conv2D)" in out
    assert "11,689,512 trainable parameters" in out


def test_show_spec_prints_the_json(capsys):
    code, out, _ = run(capsys, "show", "cifar_resnet20", "--spec")
    assert code == 0 and ResNetSpec.from_json(out) == get_spec("cifar_resnet20")


def test_unknown_preset_is_one_line_and_status_2(capsys):
    code, out, err = run(capsys, "show", "resnet05")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("resnet-rosetta show: error: unknown preset 'resnet05'; did you mean resnet50")


@pytest.mark.keras_backend
def test_port_moves_a_model_through_every_format_and_checks_parity(capsys, tmp_path):
    model = rt.build("cifar_resnet20")
    weights = random_weights(model.spec)
    rt.import_weights(model, weights)
    src = tmp_path / "src.safetensors"
    rt.save_weights(model, src)
    chain = [src, tmp_path / "a.keras", tmp_path / "b.pth", tmp_path / "c.weights.h5", tmp_path / "d.safetensors"]
    for a, b in zip(chain, chain[1:]):
        code, out, err = run(capsys, "port", str(a), str(b), "--preset", "cifar_resnet20", "--input-size", "32")
        assert code == 0, err
        relative = float(out.split(" = ")[1].split()[0])
        assert relative < 1e-4, out  # the float32 parity bound (tests/support.py)
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


def test_convert_writes_a_keras_applications_model_and_reads_it_back(capsys, tmp_path):
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
    assert float(out.split(" = ")[1].split()[0]) < 1e-4, out  # the float32 parity bound (tests/support.py)
    stored, final, _ = read_checkpoint(back)
    assert stored.differences(spec) == []
    assert all(np.array_equal(final[k], weights[k]) for k in weights)  # lossless both ways


def test_convert_to_onnx_and_back_is_lossless(capsys, tmp_path):
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
    assert float(out.split(" = ")[1].split()[0]) < 1e-4, out  # the float32 parity bound (tests/support.py)
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
