"""`resnet-rosetta convert IN OUT` (alias `port`): move a model between frameworks' files and check parity."""

from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from resnet_rosetta.frameworks import KerasFramework
from resnet_rosetta.interop.files import (
    OUTPUT_FORMATS,
    ModelFile,
    format_for_output,
    read_back_keras,
    read_model,
    read_model_file,
    write_model_file,
)
from resnet_rosetta.interop.parity import describe, measure_parity
from resnet_rosetta.interop.user_models import port_module
from shared_specs import CheckpointError, ResNetSpec, SpecError, find_preset, get_spec
from shared_specs.checkpoint import is_safetensors
from shared_specs.infer import inference_sources


def register(sub: Any) -> None:
    p = sub.add_parser(
        "convert", aliases=["port"],
        help="convert a model between frameworks' files (.safetensors, .pth/.pt, .keras, .weights.h5, .onnx, "
             "transformers and keras-hub directories)",
        description="Read IN (format detected from content: safetensors, torch.save, .keras of ours or of "
                    "keras.applications, .weights.h5, ONNX, a transformers save_pretrained or keras-hub preset "
                    "directory), write OUT (format from --to, else from its suffix), then build the network in "
                    "both frameworks from what was written and print the output difference measured; a "
                    "transformers or keras-hub directory is loaded by that library itself and compared with "
                    "resnet_torch. The input preprocessing and class names travel where the output format has "
                    "a place for them. A .pth state_dict is what torchvision's and timm's models load.")
    p.add_argument("input", help="model file or directory to read")
    p.add_argument("output", help="file to write (.safetensors, .pth/.pt, .keras, .weights.h5 or .onnx), or the "
                                  "directory of --to transformers / keras-hub")
    p.add_argument("--to", choices=OUTPUT_FORMATS,
                   help="output format when the suffix does not say it (keras-applications: the "
                        "keras.applications model itself, as a .keras file; transformers: a save_pretrained "
                        "directory; keras-hub: a preset directory)")
    p.add_argument("--preset", help="architecture of an input that carries no spec (.pth, plain safetensors)")
    p.add_argument("--spec", metavar="FILE.json", dest="spec_file",
                   help="architecture of an input that carries no spec, as a spec JSON file (`resnet-rosetta show "
                        "NAME --spec` prints one)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="overrides",
                   help="change a field of --preset or --spec, e.g. --set num_classes=None for keras.applications "
                        "weights without the top; VALUE is JSON (None, True, False also read); repeatable")
    p.add_argument("--module", metavar="FILE.py:NAME",
                   help="an input in your own model's names: build the model with the class or function NAME of "
                        "FILE.py (this runs your code, as you ask), load IN into it weights-only, and read the "
                        "network off the model (resnet_torch.from_module / resnet_keras.from_model)")
    p.add_argument("--module-kwargs", metavar="JSON", default="{}", help="keyword arguments for --module's NAME")
    p.add_argument("--input-size", type=int, default=64, metavar="N",
                   help="image size of the parity check (default 64)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check")
    p.set_defaults(func=run_port)


def run_port(args: argparse.Namespace) -> int:
    fmt = format_for_output(args.output, args.to)  # refused before anything slow is read
    source = read_source(args)
    spec = source.spec
    # Keras files: the model built to write is the one read back into and compared (one Keras build)
    keras_model = KerasFramework().build(spec, source.weights) if fmt in ("keras", "keras-weights") else None
    notes = write_model_file(args.output, spec, source.weights, fmt, preprocessing=source.preprocessing,
                             labels=source.labels, keras_model=keras_model)
    print(f"wrote {args.output} ({fmt}, {spec.name}, {len(source.weights)} tensors)")
    for note in notes:
        print(f"note: {note}")
    if args.no_check:
        return 0
    if fmt in ("transformers", "keras-hub"):
        print(_library_parity(args.output, fmt, source, args.input_size))
        return 0
    if keras_model is not None:
        written = read_back_keras(keras_model, args.output)
        if changed := [k for k, v in source.weights.items() if not np.array_equal(written[k], v)]:
            raise CheckpointError(f"{args.output}: {len(changed)} tensors read back differ from those written, "
                                  f"e.g. {changed[0]}")
    else:  # a keras.applications model carries its own spec, named after its preset
        _, written = read_model_file(args.output, None if fmt == "keras-applications" else spec)
    print(describe(measure_parity(spec, written, (args.input_size, args.input_size), keras_model=keras_model)))
    return 0


def read_source(args: argparse.Namespace) -> ModelFile:
    """What `convert` reads: through the user's --module, or the file with the spec given
    (--preset / --spec with --set), stored, or inferred; an inferred spec's fields are
    printed as read from the weights or assumed by convention."""
    given = given_spec(args.preset, args.spec_file, args.overrides)
    if args.module:
        if given is not None:
            raise SpecError("--module reads the network off your model: drop --preset, --spec and --set")
        spec, weights, _ = port_module(args.input, args.module, _json_object(args.module_kwargs, "--module-kwargs"))
        print(f"read {args.input} into {args.module} (weights only), then the network off the model: "
              f"{spec.name}, {len(weights)} tensors")
        return ModelFile(spec, weights)
    source = read_model(args.input, given)
    if given is None and not stores_spec(args.input):
        read, assumed = inference_sources(source.spec)
        print(f"{args.input} carries no spec: {source.spec.name} inferred from its tensors' names and shapes")
        print(f"  read from the weights: {', '.join(read)}")
        print(f"  assumed by convention (else give --preset or --spec, with --set): {', '.join(assumed)}")
    return source


def given_spec(preset: str | None, spec_file: str | None, overrides: list[str]) -> ResNetSpec | None:
    """The spec --preset or --spec names, with --set FIELD=VALUE applied (nested fields as
    `batchnorm.epsilon=0.001`); None when neither is given."""
    if preset and spec_file:
        raise SpecError("give --preset or --spec, not both")
    if spec_file:
        try:
            text = Path(spec_file).read_text()
        except OSError as err:
            raise CheckpointError(f"--spec {spec_file}: cannot read: {err.strerror or err}") from None
        spec = ResNetSpec.from_json(text)
    elif preset:
        spec = get_spec(preset)
    elif overrides:
        raise SpecError("--set changes a field of --preset or --spec: give one of them")
    else:
        return None
    changes: dict[str, Any] = {}
    for item in overrides:
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise SpecError(f"--set {item!r}: expected FIELD=VALUE, e.g. num_classes=None")
        *parents, leaf = field.split(".")
        target = changes
        for part in parents:  # batchnorm.epsilon=... -> {"batchnorm": {"epsilon": ...}}
            target = target.setdefault(part, {})
        target[leaf] = _json_value(value)
    if not changes:
        return spec
    changed = spec.replace(**changes)
    # a preset's name no longer fits a changed network, unless it is another preset's
    return changed if "name" in changes else changed.replace(name=find_preset(changed) or f"{spec.name}_modified")


def _json_value(text: str) -> Any:
    python = {"None": None, "True": True, "False": False}
    if text in python:
        return python[text]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare word: a string value (--set head_activation=softmax)


def _json_object(text: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise SpecError(f"{option} {text!r}: not JSON ({err})") from None
    if not isinstance(value, dict):
        raise SpecError(f"{option} must be a JSON object of keyword arguments, got {text!r}")
    return value


def stores_spec(path: str) -> bool:
    """Whether `path` is a safetensors file carrying its resnet-rosetta spec (its header says)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if not is_safetensors(head + f.read(2)):
                return False
            f.seek(8)
            header = json.loads(f.read(struct.unpack("<Q", head)[0]))
    except (OSError, ValueError):
        return False
    return (header.get("__metadata__") or {}).get("format") == "resnet-rosetta"


def _library_parity(path: str, fmt: str, source: Any, size: int) -> str:
    """resnet_torch on what was read vs the target library's own model loaded from what was written."""
    from resnet_rosetta.frameworks import TorchFramework
    from resnet_rosetta.interop.directories import library_forward

    spec = source.spec
    x = np.random.default_rng(0).normal(size=(2, spec.in_channels, size, size)).astype(np.float32)
    torch_fw = TorchFramework()
    ref = torch_fw.forward(torch_fw.build(spec, source.weights), x)
    bgr = source.preprocessing is not None and source.preprocessing.channel_order == "BGR"
    out = library_forward(path, np.ascontiguousarray(x[:, ::-1]) if bgr else x)  # written for RGB pixels
    diff, scale = float(np.abs(out - ref).max()), float(np.abs(ref).max())
    same = f", same top-1 on {float((out.argmax(1) == ref.argmax(1)).mean()):.0%}" if ref.ndim == 2 else ""
    library = {"transformers": "transformers' from_pretrained", "keras-hub": "keras-hub's from_preset"}[fmt]
    return (f"resnet_torch on the input vs {library} on {path}, random {x.shape} batch: max |diff| {diff:.3g} "
            f"= {diff / max(scale, 1e-30):.2g} of the output scale {scale:.3g}{same}")
