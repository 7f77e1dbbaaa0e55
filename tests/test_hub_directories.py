"""transformers and keras-hub directories through the CLI: round trips, what travels with the
weights (labels, preprocessing), loading without this package, and one-line errors.

One small transformers classifier (bottleneck, 2 stages; keras-hub needs 64 filters first) is
saved with `save_pretrained` and a preprocessor config, then converted to keras-hub, back to
transformers and to a canonical checkpoint, once for the module.
"""

import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from resnet_rosetta.cli import main
from resnet_rosetta.interop.files import read_model
from shared_specs import read_checkpoint
from support import F32_ATOL_SCALE, F32_RTOL

LABELS = ["cat", "dog", "emu"]
PREPROCESSOR = {  # microsoft/resnet-50's keys; crop_pct 1 so that keras-hub can say it too
    "image_processor_type": "ConvNextImageProcessor", "crop_pct": 1.0, "do_normalize": True, "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 3,
    "size": {"shortest_edge": 64}, "do_rescale": True, "rescale_factor": 1 / 255}


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    root = tmp_path_factory.mktemp("hub")
    config = ResNetConfig(embedding_size=32, hidden_sizes=[256, 96], depths=[1, 1], num_labels=3,
                          id2label=dict(enumerate(LABELS)), label2id={v: i for i, v in enumerate(LABELS)})
    model = ResNetForImageClassification(config).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # random BatchNorm statistics and affine parameters
        for name, value in model.state_dict().items():
            if name.endswith(("running_var", "normalization.weight")):
                value.copy_(torch.rand(value.shape, generator=generator) + 0.5)
            elif name.endswith(("running_mean", "normalization.bias")):
                value.copy_(torch.randn(value.shape, generator=generator) * 0.1)
    model.save_pretrained(root / "hf")
    (root / "hf" / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))
    printed = []
    steps = (("hf", "kh", "keras-hub"), ("kh", "hf2", "transformers"), ("hf2", "c.safetensors", None))
    for source, target, to in steps:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            code = main(["convert", str(root / source), str(root / target), "--input-size", "33",
                         *(["--to", to] if to else [])])
        assert code == 0, (source, target)
        printed.append(out.getvalue())
    return root, printed


def test_directories_round_trip_through_the_cli(dirs, capsys):
    root, printed = dirs
    for out in printed:  # each written model, loaded by its own library, against resnet_torch on the input
        relative = float(re.search(r"= (\S+) of the output scale", out)[1])
        assert relative < F32_RTOL, out  # the float32 bound (tests/support.py)
    assert "keras-hub's from_preset" in printed[0] and "transformers' from_pretrained" in printed[1]
    assert sorted(p.name for p in (root / "kh").iterdir()) == [
        "config.json", "image_converter.json", "metadata.json", "model.weights.h5", "preprocessor.json", "task.json",
        "task.weights.h5"]
    _, first, _ = read_checkpoint(root / "hf" / "model.safetensors")
    _, last, _ = read_checkpoint(root / "hf2" / "model.safetensors")
    assert first.keys() == last.keys() and all(np.array_equal(first[k], last[k]) for k in first)  # bit for bit
    records = [read_model(root / name) for name in ("hf", "kh", "hf2", "c.safetensors")]
    assert all(r.labels == LABELS for r in records)
    assert records[0].preprocessing.crop_fraction == 1.0 and records[0].preprocessing.input_size == (64, 64)
    for r in records[1:]:
        assert r.preprocessing.input_size == (64, 64) and r.preprocessing.resize == "crop"
        np.testing.assert_allclose(r.preprocessing.mean + r.preprocessing.std,  # via keras-hub's scale/offset
                                   records[0].preprocessing.mean + records[0].preprocessing.std, rtol=1e-12)
    code, out, _ = run(capsys, "describe", str(root / "kh"))
    assert code == 0 and "keras-hub" in out and "labels    3: 0: cat, 1: dog, 2: emu" in out and "64x64" in out


def test_written_directories_load_without_this_package_and_give_the_sources_logits(dirs):
    """A raw uint8 image through each library's own preprocessing and model, in a process where
    resnet_rosetta, resnet_torch, resnet_keras and shared_specs cannot be imported."""
    root, _ = dirs
    code = textwrap.dedent("""
        import importlib.abc, json, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("resnet_rosetta", "resnet_torch", "resnet_keras", "shared_specs"):
                    raise ImportError(f"blocked by test: {name}")
        sys.meta_path.insert(0, Block())
        import triton  # before TensorFlow when one process holds both (trap 21)
        import numpy as np, torch, transformers, keras, keras_hub
        image = np.random.default_rng(0).integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8)
        def hf(path):
            pixels = transformers.AutoImageProcessor.from_pretrained(path)(list(image), return_tensors="pt")
            model = transformers.ResNetForImageClassification.from_pretrained(path).eval()
            with torch.no_grad():
                return model(pixels["pixel_values"]).logits.numpy(), model.config.id2label
        source, labels = hf(sys.argv[1])
        classifier = keras_hub.models.ResNetImageClassifier.from_preset(sys.argv[2])
        kh = keras.ops.convert_to_numpy(classifier(classifier.preprocessor.image_converter(image), training=False))
        back, back_labels = hf(sys.argv[3])
        print(json.dumps({"scale": float(abs(source).max()), "keras-hub": float(abs(kh - source).max()),
                          "back": float(abs(back - source).max()), "labels": [labels, back_labels]}))
    """)
    result = subprocess.run([sys.executable, "-c", code, str(root / "hf"), str(root / "kh"), str(root / "hf2")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    # float32 bound (tests/support.py): the same pixels reach both models (64x64 in, no resampling)
    # and the networks differ only in accumulation order
    bound = F32_ATOL_SCALE * found["scale"] + F32_RTOL * found["scale"]
    assert found["keras-hub"] <= bound and found["back"] <= bound, found
    assert found["labels"] == [{str(i): v for i, v in enumerate(LABELS)}] * 2


@pytest.mark.parametrize("case, message", [
    ("no config", "no config.json (not a transformers or keras-hub model directory)"),
    ("vit", "config.json: model_type 'vit' is not transformers' ResNet ('resnet')"),
    ("no weights", "no model.safetensors or pytorch_model.bin"),
    ("other architecture", "model.safetensors: does not fit"),
    ("keras-hub without weights", "no model.weights.h5: the preset's weights are missing"),
    ("keras-hub of another model", "config.json: class_name 'ViTBackbone' is not keras-hub's ResNetBackbone"),
])
def test_bad_directories_get_one_message_naming_the_file(dirs, capsys, tmp_path, case, message):
    root, _ = dirs
    bad = tmp_path / "bad"
    source = root / ("kh" if case.startswith("keras-hub") else "hf")
    shutil.copytree(source, bad)
    config = json.loads((bad / "config.json").read_text())
    if case == "no config":
        (bad / "config.json").unlink()
    elif case == "vit":
        (bad / "config.json").write_text(json.dumps({**config, "model_type": "vit"}))
    elif case == "no weights":
        (bad / "model.safetensors").unlink()
    elif case == "other architecture":
        (bad / "config.json").write_text(json.dumps({**config, "layer_type": "basic", "hidden_sizes": [64, 96]}))
    elif case == "keras-hub without weights":
        (bad / "model.weights.h5").unlink()
    else:
        (bad / "config.json").write_text(json.dumps({**config, "class_name": "ViTBackbone"}))
    code, out, err = run(capsys, "describe", str(bad))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert str(bad) in err


def test_an_existing_directory_is_not_overwritten(dirs, capsys):
    root, _ = dirs
    code, _, err = run(capsys, "convert", str(root / "c.safetensors"), str(root / "kh"), "--to", "keras-hub")
    assert code == 2 and "exists and is not an empty directory" in err
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []  # no temporary left behind
