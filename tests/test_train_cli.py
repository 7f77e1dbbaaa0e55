"""`resnet-rosetta train` / `evaluate`: checkpoints, resume after an interruption, and
checkpoints that evaluate the same in both frameworks."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import torch

import resnet_keras as rk
import resnet_torch as rt
from resnet_rosetta import cli
from resnet_rosetta.training.runs import (
    HISTORY_FILE,
    STATE_FILE,
    RunSettings,
    evaluate_checkpoint,
    load_framework,
    prepare_data,
    read_state,
    spec_for_data,
    train,
)
from shared_specs import check_weights, get_spec, make_plan, read_checkpoint, write_checkpoint
from shared_specs.checkpoint import read_spec_and_weights
from shared_specs.training import SGDConfig, initial_weights
from support import assert_f32_close, build_in_dtype, state_distance

only_on = pytest.mark.only_on

# 16 digits in batches of 8: 2 steps an epoch, seconds per framework.
SETTINGS = RunSettings(get_spec("cifar_resnet20"), "digits", batch_size=8, subset=16,
                       sgd=SGDConfig(lr=0.05, momentum=0.9, weight_decay=1e-4, milestones=(2,)))

TRAINABLE = sum(trainable for _, _, trainable in make_plan(SETTINGS.spec).tensors())


class Interrupted(Exception):
    pass


def _stop_after(epoch: int):  # type: ignore[no-untyped-def]
    def hook(done: int, record: dict) -> None:  # type: ignore[type-arg]
        if done == epoch:
            raise Interrupted(f"killed after epoch {done}")
    return hook


def _files(out: Path, epoch: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[dict]]:  # type: ignore[type-arg]
    _, weights = read_spec_and_weights(out / f"epoch-{epoch:04d}.safetensors")
    _, buffers, _ = read_checkpoint(out / STATE_FILE)
    history = json.loads((out / HISTORY_FILE).read_text())
    return weights, buffers, [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in history]


@pytest.fixture(scope="module")
def torch_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One uninterrupted 3-epoch torch run, and one killed after epoch 2 and resumed."""
    root = tmp_path_factory.mktemp("runs")
    fw = load_framework("torch", device="cpu")
    train(SETTINGS, root / "whole", fw, 3, verbose=False)
    with pytest.raises(Interrupted):
        train(SETTINGS, root / "resumed", fw, 3, verbose=False, on_epoch_end=_stop_after(2))
    assert read_state(root / "resumed")[0].epoch == 2  # the epoch that finished was kept
    shutil.copytree(root / "resumed", root / "after2")
    train(SETTINGS, root / "resumed", fw, 3, resume=True, verbose=False)
    return {"whole": root / "whole", "resumed": root / "resumed", "after2": root / "after2"}


def test_torch_resume_equals_uninterrupted_run(torch_runs: dict[str, Path]) -> None:
    whole, resumed = _files(torch_runs["whole"], 3), _files(torch_runs["resumed"], 3)
    # Same initial weights, batches, momentum buffers and learning rate (the milestone
    # at epoch 2 included): the same float32 operations in the same order, so equal bits.
    for name, value in whole[0].items():
        assert np.array_equal(resumed[0][name], value), name
    assert whole[1].keys() == resumed[1].keys() and len(whole[1]) == TRAINABLE  # a buffer per trainable weight
    assert all(np.array_equal(resumed[1][k], v) for k, v in whole[1].items())
    assert resumed[2] == whole[2] and [r["lr"] for r in whole[2]] == [0.05, 0.05, 0.05 * 0.1]
    assert whole[2][-1]["train_loss"] < whole[2][0]["train_loss"]  # it does learn


@pytest.mark.keras_backend
def test_keras_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    fw = load_framework("keras")
    train(SETTINGS, tmp_path / "whole", fw, 2, verbose=False)
    with pytest.raises(Interrupted):
        train(SETTINGS, tmp_path / "resumed", fw, 2, verbose=False, on_epoch_end=_stop_after(1))
    train(SETTINGS, tmp_path / "resumed", fw, 2, resume=True, verbose=False)
    whole, resumed = _files(tmp_path / "whole", 2), _files(tmp_path / "resumed", 2)
    for name, value in whole[0].items():  # CPU kernels are deterministic on every backend: equal bits
        assert np.array_equal(resumed[0][name], value), name
    assert all(np.array_equal(resumed[1][k], v) for k, v in whole[1].items()) and len(whole[1]) == TRAINABLE
    assert resumed[2] == whole[2]


@pytest.mark.keras_backend
def test_checkpoint_evaluates_alike_in_both_frameworks(torch_runs: dict[str, Path],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = torch_runs["whole"] / "epoch-0003.safetensors"
    spec, weights = read_spec_and_weights(path)
    metrics, logits = {}, {}
    for name in ("torch", "keras"):
        framework = load_framework(name, device="cpu" if name == "torch" else None)
        _, metrics[name], data = evaluate_checkpoint(path, framework, "digits")
        logits[name] = framework.training.predict(framework.build(spec, weights), data.prepare(data.test_images))
    assert cli.main(["evaluate", str(path), "--framework", "keras", "--data", "digits"]) == 0
    m = metrics["keras"]  # what the command prints is that evaluation
    assert f"accuracy {m.accuracy:.4f} ({round(m.accuracy * m.count)}/{m.count}), loss {m.loss:.4f}" in (
        capsys.readouterr().out)
    assert metrics["torch"].count == metrics["keras"].count == 359  # the whole test split
    assert_f32_close(logits["keras"], logits["torch"], "logits of a trained checkpoint")
    # What the logits' difference allows: one example's cross-entropy has gradient softmax -
    # one-hot in its logits, of L1 norm at most 2, so the mean loss moves by at most twice the
    # largest logit difference; a prediction can change only where the top two logits are
    # closer than twice that.
    gap = float(np.abs(logits["keras"] - logits["torch"]).max())
    assert abs(metrics["keras"].loss - metrics["torch"].loss) <= 2 * gap + 1e-12  # + float64 rounding
    top2 = np.sort(logits["torch"], axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * gap
    assert np.array_equal(logits["keras"].argmax(1)[clear], logits["torch"].argmax(1)[clear])
    assert abs(metrics["keras"].accuracy - metrics["torch"].accuracy) * 359 <= np.count_nonzero(~clear)


@pytest.mark.keras_backend
def test_torch_run_resumes_in_keras(torch_runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                    ) -> None:
    """Epochs 1-2 in torch, epoch 3 in Keras: the canonical state carries over, bit for bit.

    What Keras's training steps then do with it is parity's business (test_training_parity:
    float64 to 1e-8, float32 within the rounding bound); this run itself is no place to
    measure it in float32: 16 digits make channels near-constant, where BatchNorm amplifies
    rounding (torch float32 parts from float64 by 2.5e-5 of the update in epoch 3, Keras on JAX
    by 2e-5, Keras on TensorFlow and on torch by 1.3e-2).
    """
    out = tmp_path / "mixed"
    shutil.copytree(torch_runs["after2"], out)
    framework = load_framework("keras")
    started = {}
    train_epoch = framework.training.train_epoch

    def recording(model, optimizer, *args, **kwargs):  # type: ignore[no-untyped-def]
        started["state"] = {**framework.package.export_weights(model),
                            **framework.training.optimizer_state(model, optimizer)}
        started["lr"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        return train_epoch(model, optimizer, *args, **kwargs)

    monkeypatch.setattr(framework.training, "train_epoch", recording)
    history = train(SETTINGS, out, framework, 3, resume=True, verbose=False)
    assert [r["framework"] for r in history] == ["torch", "torch", "keras"]
    weights, buffers, _ = _files(torch_runs["after2"], 2)
    assert started["state"].keys() == {**weights, **buffers}.keys()
    for name, value in {**weights, **buffers}.items():
        assert np.array_equal(started["state"][name], value), name  # float32 in, float32 out: exact
    assert started["lr"] == float(np.float32(0.05 * 0.1))  # the milestone at epoch 2, as torch's run had it
    assert history[-1]["lr"] == pytest.approx(0.05 * 0.1, rel=1e-15)


@only_on("tensorflow")
def test_torch_run_resumes_in_keras_to_the_same_weights_in_float64(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The same hand-over, run in float64 (TensorFlow: Keras's float64 is float64 throughout,
    trap 16): epoch 3 in Keras ends where epoch 3 in torch ends, up to float64 rounding."""
    monkeypatch.setattr(rt, "build", build_in_dtype(rt.build, torch.float64))
    monkeypatch.setattr(rk, "build", build_in_dtype(rk.build, "float64"))
    torch_fw = load_framework("torch", device="cpu")
    train(SETTINGS, tmp_path / "torch", torch_fw, 2, verbose=False)
    shutil.copytree(tmp_path / "torch", tmp_path / "keras")
    train(SETTINGS, tmp_path / "torch", torch_fw, 3, resume=True, verbose=False)
    train(SETTINGS, tmp_path / "keras", load_framework("keras"), 3, resume=True, verbose=False)
    (t_weights, t_buffers, _), (k_weights, k_buffers, _) = (_files(tmp_path / r, 3) for r in ("torch", "keras"))
    assert {v.dtype for v in k_weights.values()} == {np.dtype(np.float64)}
    want, got = {**t_weights, **t_buffers}, {**k_weights, **k_buffers}
    # float64 rounding (2^-53) amplified by this ill-conditioned training as float32's 2^-24 is
    # (2.5e-5 of the update): ~1e-13; measured 6e-14 of the update. Lost momentum buffers move
    # it by 0.75, a missed learning-rate milestone by 8.5 (exact-arithmetic properties).
    before = _flat(_files(tmp_path / "keras", 2)[0])
    torch_update, keras_update = _flat(t_weights) - before, _flat(k_weights) - before
    assert np.linalg.norm(keras_update - torch_update) < 1e-10 * np.linalg.norm(torch_update)
    assert max(state_distance(got, want, want).values()) < 1e-10


def _flat(weights: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([v.ravel() for k, v in weights.items() if not k.endswith(("running_mean", "running_var"))])


def test_cli_refuses_conflicts_and_bad_files(tmp_path: Path, torch_runs: dict[str, Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    run = str(torch_runs["whole"])
    base = ["train", "--framework", "torch", "--out", run, "--epochs", "4"]
    assert cli.main([*base, "--preset", "cifar_resnet20", "--data", "digits"]) == 2
    assert "holds a run already; pass --resume" in capsys.readouterr().err
    assert cli.main([*base, "--resume", "--lr", "0.2", "--quiet"]) == 2
    assert "run was started with other settings: sgd.lr 0.05 (stored) vs 0.2 (now)" in capsys.readouterr().err
    assert cli.main(["train", "--framework", "torch", "--out", str(tmp_path / "x"), "--epochs", "1"]) == 2
    assert "train needs --preset and --data" in capsys.readouterr().err
    assert cli.main([*base, "--resume", "--backend", "jax"]) == 2
    assert "--backend applies to --framework keras" in capsys.readouterr().err

    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / STATE_FILE).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    broken = ["train", "--framework", "torch", "--out", str(tmp_path / "broken"), "--epochs", "2", "--resume"]
    assert cli.main(broken) == 2
    assert "train_state.safetensors" in capsys.readouterr().err

    five = get_spec("cifar_resnet20", num_classes=5)
    write_checkpoint(tmp_path / "five.safetensors", initial_weights(five, 0), five)
    assert cli.main(["evaluate", str(tmp_path / "five.safetensors"), "--framework", "torch", "--data", "digits"]) == 2
    err = capsys.readouterr().err
    assert "takes 3 channels into 5 classes, digits has 3 channels and 10 classes" in err and err.count("\n") == 1


def test_resume_with_stored_settings_continues(torch_runs: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "more"
    shutil.copytree(torch_runs["whole"], out)
    assert cli.main(["train", "--framework", "torch", "--out", str(out), "--epochs", "4", "--resume",
                     "--batch-size", "8", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "epoch 4: train loss" in printed and "epoch 3:" not in printed
    state, _ = read_state(out)
    assert state.epoch == 4 and len(state.history) == 4 and state.settings == SETTINGS
    assert (out / "epoch-0004.safetensors").exists()


def test_spec_is_fitted_to_the_data() -> None:
    data = prepare_data(RunSettings(get_spec("tutorial_keras_resnet18"), "digits", channels=1, subset=8))
    spec = spec_for_data(get_spec("tutorial_keras_resnet18"), data)
    # classes and channels from the data; the softmax head dropped, the loss takes logits (trap 13)
    assert (spec.num_classes, spec.in_channels, spec.head_activation) == (10, 1, "none")
    assert [d.path for d in spec.differences(get_spec("tutorial_keras_resnet18"))] == [
        "head_activation", "in_channels", "num_classes"]


def test_initial_weights_are_framework_neutral() -> None:
    spec = get_spec("resnet18", num_classes=10, zero_init_last_bn=True)
    weights = check_weights(spec, initial_weights(spec, 3))  # all there, right shapes, finite
    again = initial_weights(spec, 3)
    assert all(np.array_equal(v, again[k]) for k, v in weights.items())
    assert not np.array_equal(initial_weights(spec, 4)["conv1.weight"], weights["conv1.weight"])
    conv = weights["layer4.0.conv1.weight"]  # (512, 256, 3, 3): He normal, fan-out 512 * 9
    assert abs(conv.std() - math.sqrt(2 / (512 * 9))) < 0.01 * conv.std()
    assert np.abs(weights["fc.weight"]).max() <= 1 / math.sqrt(512) and weights["fc.bias"].any()
    assert not weights["layer1.0.bn2.weight"].any() and weights["layer1.0.bn1.weight"].all()  # zero_init_last_bn
    assert all(v.dtype == np.float32 for v in weights.values())
