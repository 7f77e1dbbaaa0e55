"""`resnet-rosetta list` and `resnet-rosetta show NAME`: presets and their layers."""

from __future__ import annotations

import argparse
from typing import Any

from resnet_rosetta.table import format_table
from shared_specs import count_flops, count_params, get_spec, layer_table, list_presets, make_plan, preset_doc


def register(sub: Any) -> None:
    p = sub.add_parser("list", help="list the presets with parameters, GMACs and source")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet5*'")
    p.set_defaults(func=run_list)

    p = sub.add_parser("show", help="per-layer table of a preset: canonical name, torch and Keras layer, shape, cost")
    p.add_argument("name", help="preset name (see `resnet-rosetta list`)")
    p.add_argument("--input", type=parse_hw, default=None, metavar="H,W",
                   help="input size (default 224,224; 32,32 for CIFAR nets)")
    p.add_argument("--spec", action="store_true", help="print the spec as JSON instead")
    p.set_defaults(func=run_show)


def default_input(name: str) -> tuple[int, int]:
    spec = get_spec(name)
    return (32, 32) if spec.stem.pool == "none" and spec.stem.stride < 3 else (224, 224)


def run_list(args: argparse.Namespace) -> int:
    rows = []
    for name in list_presets(args.pattern):
        spec = get_spec(name)
        hw = default_input(name)
        rows.append((name, f"{count_params(spec).trainable:,}", f"{count_flops(spec, hw) / 1e9:.2f}",
                     f"{hw[0]}x{hw[1]}", preset_doc(name)))
    print(format_table(("preset", "params", "GMACs", "input", "source"), rows, right=(1, 2)))
    return 0


def parse_hw(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--input must be H,W (two integers), got {text!r}") from None
    return h, w


def run_show(args: argparse.Namespace) -> int:
    spec = get_spec(args.name)
    if args.spec:
        print(spec.to_json())
        return 0
    hw = args.input or default_input(args.name)
    from resnet_rosetta.frameworks import import_frameworks

    import_frameworks()
    from resnet_keras.layers import keras_name, make_layers
    from resnet_torch.layers import make_layer

    ops = {op.name: op for op in make_plan(spec).ops()}
    rows = []
    for row in layer_table(spec, hw):
        op = ops[row.name]
        keras_layers = " + ".join(type(layer).__name__ for layer in make_layers(op))
        rows.append((row.name, type(make_layer(op)).__name__, f"{keras_name(row.name)} ({keras_layers})",
                     "x".join(map(str, row.output_shape)), f"{row.params:,}", f"{row.macs:,}"))
    print(f"{args.name}: {preset_doc(args.name)}")
    print(format_table(("canonical name", "torch module", "keras layer", "output (CxHxW)", "params", "MACs"),
                       rows, right=(4, 5)))
    params = count_params(spec)
    print(f"\ntotal: {params.trainable:,} trainable parameters + {params.buffers:,} BN statistics; "
          f"{count_flops(spec, hw) / 1e9:.3f} GMACs at {hw[0]}x{hw[1]}")
    return 0
