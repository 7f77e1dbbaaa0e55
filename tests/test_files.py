"""Model files: formats detected from content, and every kind of bad input refused with one
message naming the file, nothing written, nothing half-loaded."""

import os
import pickle

import numpy as np
import pytest
import torch

import resnet_torch as rt
from resnet_rosetta.cli import main
from resnet_rosetta.interop.files import detect_format, read_model_file, write_model_file
from shared_specs import WeightsError, get_spec
from support import random_weights


@pytest.fixture
def state(tmp_path):
    model = rt.build("cifar_resnet20")
    rt.import_weights(model, random_weights(model.spec))
    return model.state_dict()


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def refuse(capsys, tmp_path, src, message, *extra):
    out = tmp_path / "out.safetensors"
    code = main(["port", str(src), str(out), "--no-check", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(src) in err[0] and message in err[0], err
    assert not out.exists()


def test_formats_are_detected_from_content_not_names(tmp_path, state):
    spec = get_spec("cifar_resnet20")
    weights = {k: v.numpy() for k, v in state.items() if not k.endswith("num_batches_tracked")}
    for name, fmt in (("a.safetensors", "safetensors"), ("b.pth", "torch"), ("c.weights.h5", "keras-weights")):
        path = tmp_path / name
        write_model_file(path, spec, weights)
        disguised = tmp_path / f"disguised_{fmt}.bin"
        disguised.write_bytes(path.read_bytes())
        assert detect_format(disguised) == fmt
    legacy = tmp_path / "legacy.pt"
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    assert detect_format(legacy) == "torch"
    spec_read, read = read_model_file(legacy)
    assert spec_read.replace(name=spec.name) == spec
    assert all(np.array_equal(read[k], weights[k]) for k in weights)


def test_training_checkpoint_wrappers_and_ddp_prefixes_are_unwrapped(tmp_path, state):
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    _, weights = read_model_file(path)
    assert torch.equal(torch.from_numpy(weights["fc.weight"]), state["fc.weight"])


def test_a_pickle_that_would_run_code_is_refused_and_never_run(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"conv1.weight": RunsCode()}, f)
    # the callable named, and not torch's advice to load with weights_only=False
    refuse(capsys, tmp_path, path, "the file holds Python code (posix.system), which resnet-rosetta will not run")
    assert not (tmp_path / "pwned").exists()


def test_truncated_and_corrupted_files(capsys, tmp_path, state):
    pth = tmp_path / "m.pth"
    torch.save(state, pth)
    data = pth.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    refuse(capsys, tmp_path, tmp_path / "cut.pth", "damaged or truncated zip")
    (tmp_path / "noise.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    refuse(capsys, tmp_path, tmp_path / "noise.bin", "unrecognised format")
    (tmp_path / "empty.pth").write_bytes(b"")
    refuse(capsys, tmp_path, tmp_path / "empty.pth", "unrecognised format")
    refuse(capsys, tmp_path, tmp_path / "missing.pth", "cannot read")


def test_a_head_of_another_size_is_named(tmp_path, state):
    path = tmp_path / "m.pth"
    torch.save(state, path)  # 10 classes
    message = rf"{path} do not fit .*fc.weight has shape \(10, 64\), expected \(100, 64\)"
    with pytest.raises(WeightsError, match=message):
        read_model_file(path, get_spec("cifar_resnet20", num_classes=100))


@pytest.mark.parametrize(("bad", "message"), [(np.nan, "holds 1 NaN/Inf values"), (np.inf, "holds 1 NaN/Inf values")])
def test_non_finite_tensors_are_refused(capsys, tmp_path, state, bad, message):
    state = dict(state)
    state["layer2.0.conv1.weight"] = state["layer2.0.conv1.weight"].clone()
    state["layer2.0.conv1.weight"][0, 0, 0, 0] = bad
    path = tmp_path / "m.pth"
    torch.save(state, path)
    refuse(capsys, tmp_path, path, f"layer2.0.conv1.weight {message}")


def test_integer_tensors_are_refused(capsys, tmp_path, state):
    state = dict(state)
    state["bn1.weight"] = torch.ones(16, dtype=torch.int64)
    path = tmp_path / "m.pth"
    torch.save(state, path)
    refuse(capsys, tmp_path, path, "bn1.weight has dtype int64, expected a floating type")


def test_keras_applications_weight_files_read_with_a_preset(capsys, tmp_path):
    # Keras weight files carry no architecture; keras.applications' own (Keras 3 .weights.h5 and
    # the legacy .h5 its published ImageNet weights come in) load only into its own model.
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    import resnet_keras as rk

    spec = get_spec("resnet50_v2", num_classes=10)
    weights = random_weights(spec)
    app = rk.to_keras_applications(spec, weights)
    app.save_weights(tmp_path / "app.weights.h5")
    with h5py.File(tmp_path / "legacy.h5", "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, app)
    for name in ("app.weights.h5", "legacy.h5"):
        found, read = read_model_file(tmp_path / name, spec)
        assert found == spec and all(np.array_equal(read[k], weights[k]) for k in weights), name
    refuse(capsys, tmp_path, tmp_path / "app.weights.h5", "cannot load these Keras weights, not into "
           "resnet_keras.build('resnet18')", "--preset", "resnet18")
