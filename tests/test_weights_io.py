"""Canonical weights: export/import in both frameworks, the safetensors file, strictness, atomicity."""

import json
import struct

import numpy as np
import pytest
import safetensors.numpy
import torch
import torchvision

import resnet_keras as rk
import resnet_torch as rt
from shared_specs import CheckpointError, WeightsError, canonical_shapes, get_spec, read_checkpoint, write_checkpoint
from shared_specs import checkpoint as ckpt
from support import keras_model, random_weights


def snapshot_torch(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_torch_export_import_round_trip_is_exact_and_copies():
    model = rt.build("resnet18")
    weights = random_weights(model.spec)
    rt.import_weights(model, weights)
    out = rt.export_weights(model)
    assert list(out) == list(canonical_shapes(model.spec))
    assert all(np.array_equal(out[k], weights[k]) for k in weights)
    out["conv1.weight"][...] = 0  # exported arrays never alias the model (trap 17)
    assert model.conv1.weight.abs().sum() > 0


def test_a_torchvision_state_dict_is_a_canonical_checkpoint():
    tv = torchvision.models.resnet50(weights=None)
    model = rt.build("resnet50")
    rt.import_weights(model, tv.state_dict())  # num_batches_tracked is accepted and ignored
    assert torch.equal(model.layer4[2].conv3.weight, tv.layer4[2].conv3.weight)


@pytest.mark.keras_backend
@pytest.mark.parametrize("name", ["resnet50", "resnet50_v2", "cifar_resnet20", "resnext50_32x4d"])
def test_torch_to_keras_to_torch_is_bit_exact(name):
    weights = random_weights(get_spec(name), seed=3)
    back = rk.export_weights(keras_model(name, weights))
    torch_model = rt.build(name)
    rt.import_weights(torch_model, back)
    again = rt.export_weights(torch_model)
    assert list(back) == list(weights)
    for key in weights:
        assert again[key].dtype == weights[key].dtype and np.array_equal(again[key], weights[key]), key


def test_import_is_strict_all_or_nothing_and_lists_every_problem():
    model = rt.build("resnet18")
    before = snapshot_torch(model)
    weights = random_weights(model.spec)
    del weights["fc.bias"], weights["layer1.0.bn1.running_var"]
    weights["layer9.0.conv1.weight"] = np.zeros((1,), np.float32)
    weights["conv1.weight"] = np.zeros((64, 3, 3, 3), np.float32)
    weights["bn1.weight"] = np.full(64, np.nan, np.float32)
    weights["layer2.0.bn1.running_var"] = -np.ones(128, np.float32)
    weights["layer1.0.conv1.weight"] = weights["layer1.0.conv1.weight"].astype(np.int32)
    with pytest.raises(WeightsError) as err:
        rt.import_weights(model, weights, source="bad.safetensors")
    message = str(err.value)
    for expected in ("bad.safetensors do not fit spec 'resnet18'", "missing 2: layer1.0.bn1.running_var, fc.bias",
                     "unexpected 1: layer9.0.conv1.weight",
                     "conv1.weight has shape (64, 3, 3, 3), expected (64, 3, 7, 7)",
                     "bn1.weight holds 64 NaN/Inf values", "layer2.0.bn1.running_var holds negative variances",
                     "layer1.0.conv1.weight has dtype int32, expected a floating type"):
        assert expected in message
    after = snapshot_torch(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # untouched


@pytest.mark.keras_backend
def test_keras_import_is_all_or_nothing():
    model = rk.build("cifar_resnet20")
    before = [np.array(v) for v in model.weights]
    weights = random_weights(model.spec)
    weights["fc.weight"] = weights["fc.weight"].T  # (64, 10): the Keras layout, a classic mistake
    with pytest.raises(WeightsError, match=r"fc.weight has shape \(64, 10\), expected \(10, 64\)"):
        rk.import_weights(model, weights)
    assert all(np.array_equal(a, np.array(v)) for a, v in zip(before, model.weights))


def test_checkpoint_file_is_standard_safetensors_with_spec_and_version(tmp_path):
    model = rt.build("cifar_resnet20")
    path = tmp_path / "m.safetensors"
    rt.save_weights(model, path)
    # the reference implementation reads our file ...
    loaded = safetensors.numpy.load_file(path)
    assert all(np.array_equal(loaded[k], v) for k, v in rt.export_weights(model).items())
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        meta = json.loads(f.read(n))["__metadata__"]
    assert meta["format"] == "resnet-rosetta" and meta["format_version"] == "1"
    assert json.loads(meta["spec"])["name"] == "cifar_resnet20"
    # ... and we read its files
    other = tmp_path / "other.safetensors"
    safetensors.numpy.save_file({"a": np.arange(6, dtype=np.float64).reshape(2, 3), "b": np.ones(3, np.int64)}, other)
    spec, weights, _ = read_checkpoint(other)
    assert spec is None and weights["a"].dtype == np.float64 and weights["a"][1, 2] == 5 and weights["b"].sum() == 3


def test_save_then_load_restores_every_tensor(tmp_path):
    src = rt.build("resnet50_v2")
    rt.import_weights(src, random_weights(src.spec))
    path = tmp_path / "v2.safetensors"
    rt.save_weights(src, path)
    dst = rt.build("resnet50_v2")
    rt.load_weights(dst, path)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    rebuilt = rt.load_model(path)
    assert rebuilt.spec == src.spec


@pytest.mark.keras_backend
def test_keras_save_load_and_cross_framework_file(tmp_path):
    torch_model = rt.build("cifar_resnet20")
    rt.import_weights(torch_model, random_weights(torch_model.spec))
    path = tmp_path / "c.safetensors"
    rt.save_weights(torch_model, path)
    keras_model = rk.load_model(path)
    back = tmp_path / "k.safetensors"
    rk.save_weights(keras_model, back)
    again = rt.build("cifar_resnet20")
    rt.load_weights(again, back)
    assert all(torch.equal(a, b) for a, b in zip(torch_model.state_dict().values(), again.state_dict().values()))


def test_loading_into_a_different_spec_names_the_differences(tmp_path):
    path = tmp_path / "m.safetensors"
    rt.save_weights(rt.build("resnet18"), path)
    other = rt.build("resnet18", num_classes=10, batchnorm={"epsilon": 1e-3})
    with pytest.raises(CheckpointError, match=r"differs from the model's in batchnorm.epsilon 1e-05 \(stored\) "
                                             r"vs 0.001 \(model\), "
                                             r"num_classes 1000 \(stored\) vs 10 \(model\)"):
        rt.load_weights(other, path)


def test_write_is_atomic_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    weights = random_weights(get_spec("cifar_resnet20"))
    write_checkpoint(path, weights, get_spec("cifar_resnet20"))
    original = path.read_bytes()

    def explode(f, blob, arrays):
        f.write(blob[:100])
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "_write_all", explode)
    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(path, weights, get_spec("cifar_resnet20"))
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left behind


def test_written_file_has_the_permissions_open_would_give(tmp_path):
    import os

    old = os.umask(0o027)
    try:
        spec = get_spec("cifar_resnet20")
        write_checkpoint(tmp_path / "m.safetensors", random_weights(spec), spec)
    finally:
        os.umask(old)
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o640  # 0o666 & ~umask, not mkstemp's 0o600


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda b: b[:5], "not a safetensors file"),
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: b[:8] + b"\xff" * 40 + b[48:], "header is not valid JSON"),
        (lambda b: struct.pack("<Q", 10**12) + b[8:], "not a safetensors file or truncated"),
        (lambda b: b.replace(b'"format_version":"1"', b'"format_version":"9"'), "format_version '9' is not supported"),
        (lambda b: b.replace(b'\\"block\\": \\"basic\\"', b'\\"block\\": \\"basix\\"'),
         "stored spec is invalid: block"),
    ],
)
def test_damaged_files_get_one_clear_message_naming_the_file(tmp_path, mangle, message):
    path = tmp_path / "bad.safetensors"
    rt.save_weights(rt.build("cifar_resnet20"), path)
    path.write_bytes(mangle(path.read_bytes()))
    with pytest.raises(CheckpointError, match=message) as err:
        rt.load_weights(rt.build("cifar_resnet20"), path)
    assert str(path) in str(err.value)


def test_a_missing_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="cannot read"):
        read_checkpoint(tmp_path / "nope.safetensors")
