"""Porting from the command line as a new user would: a checkpoint of their own model class
(--module), a bare checkpoint with a preset or a spec file and overrides (--preset, --spec,
--set) or with its spec inferred (what was read, what assumed), and the messages met on the
way (a run's training state, a pickle holding code, the CIFAR tutorial's input size)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import resnet_torch as rt
from resnet_rosetta.cli import main
from shared_specs import count_flops, get_spec, read_checkpoint

MODEL_FILE = textwrap.dedent('''
    import torch.nn as nn
    import torch.nn.functional as F


    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
            self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
            return F.relu(y + (x if self.down is None else self.down(x)))


    class TinyNet(nn.Module):
        def __init__(self, classes=10, width=8):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
            self.blocks = nn.ModuleList([Block(width, width, 1), Block(width, 2 * width, 2)])
            self.head = nn.Linear(2 * width, classes)

        def forward(self, x):
            for block in self.blocks:
                x = block(x) if block is not self.blocks[0] else block(self.stem(x))
            return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))
''')


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    """A user's model file and a checkpoint of it in the model's own names."""
    source = tmp_path / "mynet.py"
    source.write_text(MODEL_FILE)
    namespace: dict = {}
    exec(compile(MODEL_FILE, str(source), "exec"), namespace)
    model = namespace["TinyNet"](classes=5)
    torch.manual_seed(0)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape) + 0.5)
    state = model.state_dict()
    torch.save(state, tmp_path / "tiny.pth")
    return source, tmp_path / "tiny.pth", state


def test_convert_with_the_users_own_module(tiny: tuple[Path, Path, dict], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    source, weights, state = tiny
    out = tmp_path / "tiny.safetensors"
    assert main(["convert", str(weights), str(out), "--module", f"{source}:TinyNet", "--module-kwargs",
                 '{"classes": 5}', "--input-size", "33"]) == 0
    printed = capsys.readouterr().out
    assert "(weights only), then the network off the model: TinyNet, 32 tensors" in printed
    assert "of the output scale" in printed  # the parity check ran on what was written
    spec, written, _ = read_checkpoint(out)
    assert spec.name == "TinyNet" and spec.num_classes == 5 and spec.stem.pool == "none"
    assert np.array_equal(written["layer2.0.downsample.0.weight"], state["blocks.1.down.0.weight"].numpy())


def test_module_refusals_are_one_line(tiny: tuple[Path, Path, dict], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    source, weights, _ = tiny
    out = str(tmp_path / "x.safetensors")
    assert main(["convert", str(weights), out, "--module", f"{source}:TinyNet"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "does not fit TinyNet: mis-shaped 2: head.weight (5, 16) (model: (10, 16)), head.bias (5,) (model: (10,))")
    assert main(["convert", str(weights), out, "--module", f"{source}:Nope"]) == 2
    assert "defines no class or function 'Nope'" in capsys.readouterr().err
    assert main(["convert", str(weights), out, "--module", f"{source}:TinyNet", "--preset", "resnet18"]) == 2
    assert "--module reads the network off your model" in capsys.readouterr().err


def tuned_resnet() -> nn.Module:
    """A small torchvision ResNet fine-tuned as people do: one input channel, an MLP head."""
    from torchvision.models.resnet import BasicBlock, ResNet

    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=1000)
    model.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    model.fc = nn.Sequential(nn.Linear(512, 32), nn.ReLU(), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 4))
    return model.eval()


def test_bare_checkpoint_spec_read_assumed_or_given(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tuned_resnet()
    path = tmp_path / "tuned.pth"
    torch.save(model.state_dict(), path)
    out = str(tmp_path / "out.safetensors")
    assert main(["convert", str(path), out, "--no-check"]) == 2  # fc.1 ... fc.3: no convention says
    assert "fc.1 ... fc.3 hold no tensors" in capsys.readouterr().err
    head = {"layers": [{"kind": "linear", "features": 32}, {"kind": "relu"}, {"kind": "relu"},
                       {"kind": "dropout", "rate": 0.3}]}
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(get_spec("resnet18", stages=[{"depth": 1, "width": w, "stride": s} for w, s in
                                                      ((64, 1), (128, 2), (256, 2), (512, 2))]).to_json())
    assert main(["convert", str(path), out, "--spec", str(spec_file), "--set", "in_channels=1", "--set",
                 "num_classes=4", "--set", f"head={json.dumps(head)}", "--input-size", "37"]) == 0
    assert "of the output scale" in capsys.readouterr().out
    spec, weights, _ = read_checkpoint(out)
    assert spec.name == "resnet18_modified" and spec.in_channels == 1 and len(spec.head.layers) == 4
    ours = rt.build(spec).eval()
    rt.import_weights(ours, weights)
    x = torch.randn(2, 1, 37, 41)
    with torch.no_grad():
        assert torch.equal(ours(x), model(x))
    # the same checkpoint without its odd ReLU: the spec inferred, each field said to be read or assumed
    model.fc = nn.Sequential(nn.Linear(512, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 4))
    torch.save(model.state_dict(), path)
    assert main(["convert", str(path), out, "--no-check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{path} carries no spec: resnet inferred from its tensors' names and shapes"
    assert lines[1].startswith("  read from the weights: ")
    assert "in_channels=1" in lines[1] and "num_classes=4" in lines[1]
    assert lines[2].startswith("  assumed by convention") and "head.layers[1].kind='relu'" in lines[2]
    assert "stages[].stride=[1, 2, 2, 2]" in lines[2] and "batchnorm.epsilon=1e-05" in lines[2]


def test_set_needs_a_preset_or_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", "x.pth", str(tmp_path / "o.safetensors"), "--set", "num_classes=None"]) == 2
    assert "--set changes a field of --preset or --spec" in capsys.readouterr().err
    assert main(["convert", "x.pth", str(tmp_path / "o.safetensors"), "--preset", "resnet18", "--set", "nope=1"]) == 2
    assert "unknown ResNetSpec field(s) ['nope']" in capsys.readouterr().err


class Payload:
    """Any class: a pickle of it calls code when loaded."""


def test_a_pickle_holding_code_is_refused_plainly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "code.pth"
    torch.save({"model": Payload()}, path)
    assert main(["convert", str(path), str(tmp_path / "o.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("the file holds Python code (test_port_cli.Payload), which resnet-rosetta will not run: it "
                        "loads weights only")
    assert "weights_only" not in err


def test_evaluate_names_the_checkpoint_of_a_training_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    run = tmp_path / "run"
    assert main(["train", "--framework", "torch", "--preset", "cifar_resnet20", "--data", "digits", "--epochs", "1",
                 "--subset", "32", "--batch-size", "16", "--out", str(run), "--quiet", "--device", "cpu"]) == 0
    evaluate = ["--framework", "torch", "--data", "digits", "--subset", "16", "--device", "cpu"]
    assert main(["evaluate", str(run / "train_state.safetensors"), *evaluate]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"the training state of a run (momentum buffers and settings), not a model; its newest epoch's checkpoint "
        f"is {run / 'epoch-0001.safetensors'} (or give the run directory {run})")
    assert main(["evaluate", str(run), *evaluate]) == 0
    assert capsys.readouterr().out.startswith(f"cifar_resnet20 ({run / 'epoch-0001.safetensors'}) on digits test")


def test_list_shows_the_cifar_tutorial_at_32x32(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "tutorial_*"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("tutorial_cifar_resnet18"))
    gmacs = count_flops(get_spec("tutorial_cifar_resnet18"), (32, 32)) / 1e9
    assert " 32x32 " in row and f" {gmacs:.2f} " in row  # counted at CIFAR's 32x32, not at 224x224


def test_a_fine_tuned_keras_model_file_converts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A .keras file of a functional model that is neither ours nor keras.applications: read by from_model."""
    import keras

    L = keras.layers
    inputs = keras.Input((None, None, 3))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same", use_bias=False)(inputs)))
    y = L.BatchNormalization()(L.Conv2D(8, 3, padding="same", use_bias=False)(
        L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same", use_bias=False)(x)))))
    x = L.GlobalAveragePooling2D()(L.ReLU()(L.add([x, y])))
    model = keras.Model(inputs, L.Dense(3)(L.Dropout(0.2)(L.Dense(6, activation="relu")(x))), name="tuned")
    model.save(tmp_path / "tuned.keras")
    out = tmp_path / "tuned.pth"
    assert main(["convert", str(tmp_path / "tuned.keras"), str(out), "--input-size", "33"]) == 0
    assert "wrote " + str(out) + " (torch, tuned, " in capsys.readouterr().out
    state = torch.load(out, weights_only=True)
    assert sorted(k for k in state if k.startswith("fc"))[:2] == ["fc.0.bias", "fc.0.weight"]
