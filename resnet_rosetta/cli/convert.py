"""`resnet-rosetta convert IN OUT` (alias `port`): move a model between frameworks' files and check parity."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from resnet_rosetta.interop.files import (
    OUTPUT_FORMATS,
    format_for_output,
    read_model,
    read_model_file,
    write_model_file,
)
from resnet_rosetta.interop.parity import describe, measure_parity
from shared_specs import get_spec


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
    p.add_argument("--input-size", type=int, default=64, metavar="N",
                   help="image size of the parity check (default 64)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check")
    p.set_defaults(func=run_port)


def run_port(args: argparse.Namespace) -> int:
    fmt = format_for_output(args.output, args.to)  # refused before anything slow is read
    source = read_model(args.input, get_spec(args.preset) if args.preset else None)
    spec = source.spec
    notes = write_model_file(args.output, spec, source.weights, fmt, preprocessing=source.preprocessing,
                             labels=source.labels)
    print(f"wrote {args.output} ({fmt}, {spec.name}, {len(source.weights)} tensors)")
    for note in notes:
        print(f"note: {note}")
    if args.no_check:
        return 0
    if fmt in ("transformers", "keras-hub"):
        print(_library_parity(args.output, fmt, source, args.input_size))
        return 0
    # a keras.applications model carries its own spec, named after its preset
    _, written = read_model_file(args.output, None if fmt == "keras-applications" else spec)
    print(describe(measure_parity(spec, written, (args.input_size, args.input_size))))
    return 0


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
