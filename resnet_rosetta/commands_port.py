"""`resnet-rosetta port IN OUT`: move a model between frameworks' files and check parity."""

from __future__ import annotations

import argparse
from typing import Any

from resnet_rosetta.files import read_model_file, write_model_file
from resnet_rosetta.parity import describe, measure_parity
from shared_specs import get_spec


def register(sub: Any) -> None:
    p = sub.add_parser(
        "port", help="convert a model file between frameworks (.safetensors, .pth/.pt, .keras, .weights.h5)",
        description="Read IN (format detected from content), write OUT (format from its suffix), then build "
                    "the network in both frameworks and print the output difference measured.")
    p.add_argument("input", help="model file to read")
    p.add_argument("output", help="file to write: .safetensors, .pth/.pt, .keras or .weights.h5")
    p.add_argument("--preset", help="architecture of an input that carries no spec (.pth, plain safetensors)")
    p.add_argument("--input-size", type=int, default=64, metavar="N", help="image size of the parity check (default 64)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check")
    p.set_defaults(func=run_port)


def run_port(args: argparse.Namespace) -> int:
    spec, weights = read_model_file(args.input, get_spec(args.preset) if args.preset else None)
    write_model_file(args.output, spec, weights)
    print(f"wrote {args.output} ({spec.name}, {len(weights)} tensors)")
    if not args.no_check:
        _, written = read_model_file(args.output, spec)
        print(describe(measure_parity(spec, written, (args.input_size, args.input_size))))
    return 0
