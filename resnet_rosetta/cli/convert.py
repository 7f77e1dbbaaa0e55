"""`resnet-rosetta convert IN OUT` (alias `port`): move a model between frameworks' files and check parity."""

from __future__ import annotations

import argparse
from typing import Any

from resnet_rosetta.interop.files import OUTPUT_FORMATS, format_for_output, read_model_file, write_model_file
from resnet_rosetta.interop.parity import describe, measure_parity
from shared_specs import get_spec


def register(sub: Any) -> None:
    p = sub.add_parser(
        "convert", aliases=["port"],
        help="convert a model file between frameworks (.safetensors, .pth/.pt, .keras, .weights.h5, .onnx)",
        description="Read IN (format detected from content: safetensors, torch.save, .keras of ours or of "
                    "keras.applications, .weights.h5, ONNX), write OUT (format from --to, else from its suffix), "
                    "then build the network in both frameworks from what was written and print the output "
                    "difference measured. A .pth state_dict is what torchvision's and timm's models load.")
    p.add_argument("input", help="model file to read")
    p.add_argument("output", help="file to write: .safetensors, .pth/.pt, .keras, .weights.h5 or .onnx")
    p.add_argument("--to", choices=OUTPUT_FORMATS,
                   help="output format when the suffix does not say it (keras-applications: the "
                        "keras.applications model itself, as a .keras file)")
    p.add_argument("--preset", help="architecture of an input that carries no spec (.pth, plain safetensors)")
    p.add_argument("--input-size", type=int, default=64, metavar="N",
                   help="image size of the parity check (default 64)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check")
    p.set_defaults(func=run_port)


def run_port(args: argparse.Namespace) -> int:
    fmt = format_for_output(args.output, args.to)  # refused before anything slow is read
    spec, weights = read_model_file(args.input, get_spec(args.preset) if args.preset else None)
    write_model_file(args.output, spec, weights, fmt)
    print(f"wrote {args.output} ({fmt}, {spec.name}, {len(weights)} tensors)")
    if not args.no_check:
        # a keras.applications model carries its own spec, named after its preset
        _, written = read_model_file(args.output, None if fmt == "keras-applications" else spec)
        print(describe(measure_parity(spec, written, (args.input_size, args.input_size))))
    return 0
