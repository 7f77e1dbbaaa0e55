"""Model directories: transformers' `save_pretrained` and keras-hub's presets.

Both are a directory with a `config.json`, which says whose it is: transformers writes
`model_type` ("resnet"), keras-hub a serialised Keras object (`class_name`
"ResNetBackbone"). What they hold beside the weights travels with them: the label
names (transformers' id2label; keras-hub has none, so ours go in its metadata.json) and
the preprocessing (transformers' preprocessor_config.json, keras-hub's image converter).

Reading checks every file it needs before loading anything and names the file in each
error. Writing builds the whole directory under a temporary name beside the target and
renames it into place, so a failure leaves nothing half-written; an existing non-empty
target is refused rather than merged into or deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from resnet_rosetta.frameworks import import_frameworks
from resnet_rosetta.interop.files import _one_line, _read_torch
from shared_specs import CheckpointError, ResNetSpec, SpecError, WeightsError, make_plan
from shared_specs import preprocessing as pre
from shared_specs.checkpoint import _umask, atomic_write, read_checkpoint

DIRECTORY_FORMATS = ("transformers", "keras-hub")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_KERAS_HUB_TASKS = ("ResNetImageClassifier", "ImageClassifier")
_OURS = "resnet_rosetta"  # our entry in keras-hub's metadata.json, which keras-hub never reads


def detect_directory(path: Path) -> str:
    """"transformers" or "keras-hub", from config.json; CheckpointError naming what is not."""
    config = _json(path / "config.json", what="not a transformers or keras-hub model directory")
    if "model_type" in config:
        if config["model_type"] != "resnet":
            raise CheckpointError(f"{path / 'config.json'}: model_type {config['model_type']!r} is not "
                                  "transformers' ResNet ('resnet')")
        return "transformers"
    if "class_name" in config:
        if config["class_name"] != "ResNetBackbone":
            raise CheckpointError(f"{path / 'config.json'}: class_name {config['class_name']!r} is not keras-hub's "
                                  "ResNetBackbone")
        return "keras-hub"
    raise CheckpointError(f"{path / 'config.json'}: neither a transformers config (model_type) nor a keras-hub "
                          "preset config (class_name)")


def read_directory(path: Path) -> tuple[ResNetSpec, dict[str, np.ndarray], pre.Preprocessing | None,
                                         list[str] | None]:
    """(spec, canonical weights, preprocessing, labels) of a transformers or keras-hub directory."""
    if detect_directory(path) == "transformers":
        return _read_transformers(path)
    return _read_keras_hub(path)


def write_directory(path: str | os.PathLike[str], fmt: str, spec: ResNetSpec, weights: Mapping[str, np.ndarray],
                    preprocessing: pre.Preprocessing | None = None, labels: list[str] | None = None) -> list[str]:
    """Write a `fmt` directory (one of DIRECTORY_FORMATS) at `path`; returns notes on what
    the target cannot say (e.g. a crop fraction keras-hub has no word for).

    BGR preprocessing (keras.applications' "caffe" mode) is made RGB on the way: neither
    target has a channel flip, so the first conv's input channels are reversed instead,
    which computes exactly the same function of RGB pixels.
    """
    target = Path(path)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise CheckpointError(f"{target}: exists and is not an empty directory; remove it or choose another path")
    notes: list[str] = []
    if preprocessing is not None and preprocessing.channel_order == "BGR":
        first_conv = next(op.name for op in make_plan(spec).stem)
        preprocessing, weights = pre.to_rgb(preprocessing, first_conv, weights)
        notes.append(f"BGR input made RGB by reversing {first_conv}'s input channels")
    if labels is not None and spec.num_classes is not None and len(labels) != spec.num_classes:
        raise CheckpointError(f"{len(labels)} labels for the {spec.num_classes} classes of {spec.name}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        writer = _write_transformers if fmt == "transformers" else _write_keras_hub
        notes += writer(tmp, spec, weights, preprocessing, labels)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's directory is owner-only
        if target.exists():
            target.rmdir()  # empty, checked above
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return notes


# -- transformers ----------------------------------------------------------------------


def _read_transformers(path: Path) -> tuple[ResNetSpec, dict[str, np.ndarray], pre.Preprocessing | None,
                                            list[str] | None]:
    config = _json(path / "config.json")
    weights_file = next((path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()), None)
    if weights_file is None:
        sharded = [n for n in ("model.safetensors.index.json", "pytorch_model.bin.index.json") if (path / n).exists()]
        problem = f"sharded weights ({sharded[0]}) are not supported" if sharded else \
            "no model.safetensors or pytorch_model.bin: the weights config.json describes are missing"
        raise CheckpointError(f"{path}: {problem}")
    if weights_file.suffix == ".safetensors":
        _, state, _ = read_checkpoint(weights_file)
    else:
        state = _read_torch(weights_file)  # weights_only=True: nothing unpickled but tensors
    import_frameworks()
    from resnet_torch.transformers import from_transformers

    try:
        spec, weights = from_transformers(state, config=config)
    except (SpecError, WeightsError) as err:
        raise CheckpointError(f"{weights_file}: does not fit {path / 'config.json'}: {err}") from None
    labels = pre.labels_from_id2label(config.get("id2label"), spec.num_classes, str(path / "config.json"))
    prep = None
    if (path / "preprocessor_config.json").is_file():
        where = str(path / "preprocessor_config.json")
        try:
            prep = pre.from_transformers(_json(path / "preprocessor_config.json"), where)
        except SpecError as err:
            raise CheckpointError(str(err)) from None
    return spec, weights, prep, labels


def _write_transformers(tmp: Path, spec: ResNetSpec, weights: Mapping[str, np.ndarray],
                        prep: pre.Preprocessing | None, labels: list[str] | None) -> list[str]:
    import_frameworks()
    from transformers.utils import logging as transformers_logging

    from resnet_torch.transformers import to_transformers

    transformers_logging.disable_progress_bar()  # "Writing model shards": noise in a command's output
    to_transformers(spec, weights, labels=labels).save_pretrained(tmp)
    if prep is not None:
        _write_json(tmp / "preprocessor_config.json", pre.to_transformers(prep))
    return []


# -- keras-hub -------------------------------------------------------------------------


def _read_keras_hub(path: Path) -> tuple[ResNetSpec, dict[str, np.ndarray], pre.Preprocessing | None,
                                         list[str] | None]:
    task = _json(path / "task.json") if (path / "task.json").exists() else None
    if task is not None and task.get("class_name") not in _KERAS_HUB_TASKS:
        raise CheckpointError(f"{path / 'task.json'}: class_name {task.get('class_name')!r} is not keras-hub's "
                              "ResNetImageClassifier")
    needed = ["model.weights.h5"] + (["task.weights.h5"] if task is not None else [])
    for name in needed:
        _check_h5(path / name)
    _, keras = import_frameworks()
    import keras_hub

    from resnet_keras.keras_hub import from_keras_hub

    cls = keras_hub.models.ResNetImageClassifier if task is not None else keras_hub.models.ResNetBackbone
    try:
        model = cls.from_preset(str(path))
    except Exception as err:  # keras-hub and Keras raise many types for a damaged preset
        raise CheckpointError(f"{path}: keras-hub cannot load the preset ({', '.join(needed)}): "
                              f"{_one_line(err)}") from None
    try:
        spec, weights = from_keras_hub(model)
    except SpecError as err:
        raise CheckpointError(f"{path}: {err}") from None
    ours = _json(path / "metadata.json").get(_OURS, {}) if (path / "metadata.json").is_file() else {}
    stored, labels = pre.from_metadata({k: json.dumps(v) for k, v in ours.items()}, str(path / "metadata.json"))
    converter = getattr(getattr(model, "preprocessor", None), "image_converter", None)
    if converter is None and (path / "image_converter.json").is_file():
        converter_config = _json(path / "image_converter.json").get("config", {})
    else:
        converter_config = converter.get_config() if converter is not None else None
    prep = pre.from_keras_hub(converter_config) if converter_config is not None else None
    # our record says what keras-hub's converter cannot (a crop fraction); it stands unless the
    # converter was changed since
    if stored is not None and (prep is None or pre.to_keras_hub(stored)[0] == pre.to_keras_hub(prep)[0]):
        prep = stored
    if labels is not None and len(labels) != spec.num_classes:
        raise CheckpointError(f"{path / 'metadata.json'}: {len(labels)} labels for {spec.num_classes} classes")
    return spec, weights, prep, labels


def _write_keras_hub(tmp: Path, spec: ResNetSpec, weights: Mapping[str, np.ndarray],
                     prep: pre.Preprocessing | None, labels: list[str] | None) -> list[str]:
    import_frameworks()
    import keras_hub

    from resnet_keras.keras_hub import to_keras_hub

    notes = pre.to_keras_hub(prep)[1] if prep is not None else []
    model = to_keras_hub(spec, weights, preprocessing=prep)
    model.save_to_preset(str(tmp))
    if prep is not None and spec.num_classes is None:  # a backbone has no preprocessor: the converter alone
        keras_hub.layers.ResNetImageConverter(**pre.to_keras_hub(prep)[0]).save_to_preset(str(tmp))
    metadata = _json(tmp / "metadata.json")
    entry = {k: json.loads(v) for k, v in pre.to_metadata(prep, labels).items()}
    if entry:
        metadata[_OURS] = entry
        _write_json(tmp / "metadata.json", metadata)
    return notes


# -- helpers ---------------------------------------------------------------------------


def _json(path: Path, what: str = "") -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path.parent}: no {path.name}" + (f" ({what})" if what else "")) from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read: {err.strerror or err}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: holds a JSON {type(data).__name__}, not an object")
    return data


def _check_h5(path: Path) -> None:
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except FileNotFoundError:
        raise CheckpointError(f"{path.parent}: no {path.name}: the preset's weights are missing") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read: {err.strerror or err}") from None
    if head != _HDF5_MAGIC:
        raise CheckpointError(f"{path}: not an HDF5 file, which keras-hub keeps its weights in")


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def library_forward(path: str | os.PathLike[str], x: np.ndarray) -> np.ndarray:
    """Eval-mode output, on the NCHW batch `x`, of the directory's model as its own library
    loads it (`from_pretrained` / `from_preset`, nothing of this package): the check that
    what was written is what its users will run. NCHW feature maps or (N, classes)."""
    path = Path(path)
    fmt = detect_directory(path)
    torch, keras = import_frameworks()
    if fmt == "transformers":
        import transformers

        head = "ResNetForImageClassification" in _json(path / "config.json").get("architectures", [])
        model = (transformers.ResNetForImageClassification if head else transformers.ResNetModel).from_pretrained(path)
        with torch.no_grad():
            out = model.eval()(torch.from_numpy(x))
        return (out.logits if head else out.last_hidden_state).numpy()
    import keras_hub

    head = (path / "task.json").exists()
    model = (keras_hub.models.ResNetImageClassifier if head else keras_hub.models.ResNetBackbone).from_preset(str(path))
    y = keras.ops.convert_to_numpy(model(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), training=False))
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2)) if y.ndim == 4 else y
