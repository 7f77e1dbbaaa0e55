"""`resnet-rosetta describe PATH`: what a model file or directory holds, and what travels with it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from shared_specs import count_params, find_preset, get_spec


def register(sub: Any) -> None:
    p = sub.add_parser(
        "describe", help="print a model file's or directory's architecture, preprocessing and class names",
        description="Read PATH as `convert` does (any format it reads, detected from content) and print the "
                    "network (preset it equals, blocks, stages, parameters), the input preprocessing it carries "
                    "(mean/std, channel order, input size, resizing) and its class names.")
    p.add_argument("path", help="model file or directory")
    p.add_argument("--preset", help="architecture of an input that carries no spec (.pth, plain safetensors)")
    p.add_argument("--json", action="store_true", help="print spec, preprocessing and labels as one JSON object")
    p.set_defaults(func=run_describe)


def run_describe(args: argparse.Namespace) -> int:
    from resnet_rosetta.interop.files import detect_format, read_model

    fmt = detect_format(args.path)
    found = read_model(args.path, get_spec(args.preset) if args.preset else None)
    spec, prep, labels = found.spec, found.preprocessing, found.labels
    if args.json:
        print(json.dumps({"format": fmt, "spec": spec.to_dict(), "preprocessing": prep.to_dict() if prep else None,
                          "labels": labels}, indent=1))
        return 0
    preset = find_preset(spec)
    kind = ("pre-activation " if spec.preactivation else "") + f"{spec.block} blocks, shortcut {spec.shortcut}"
    stages = ", ".join(f"{s.depth}x{s.width}/{s.stride}" + ("+proj" if s.always_project else "") for s in spec.stages)
    head = f"{spec.num_classes} classes" if spec.num_classes is not None else "no classifier (feature map)"
    print(f"{args.path}: {fmt}")
    print(f"network   {spec.name}" + (f" (= preset {preset})" if preset and preset != spec.name else ""))
    print(f"          {kind}; stem {'/'.join(map(str, spec.stem.widths))}; stages depth x width / stride: {stages}")
    print(f"          {count_params(spec).trainable:,} parameters, {len(found.weights)} tensors, {head}")
    if prep is None:
        print("input     no preprocessing recorded")
    else:
        first, *rest = prep.describe()
        print(f"input     {first}", *(f"          {line}" for line in rest), sep="\n")
    if labels is None:
        print("labels    none recorded")
    else:
        shown = ", ".join(f"{i}: {name}" for i, name in enumerate(labels[:5]))
        print(f"labels    {len(labels)}: {shown}" + (", ..." if len(labels) > 5 else ""))
    return 0
