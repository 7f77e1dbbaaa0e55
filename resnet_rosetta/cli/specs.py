"""`resnet-rosetta list` and `resnet-rosetta show NAME`: presets and their layers."""

from __future__ import annotations

import argparse
import json
from typing import Any

from resnet_rosetta.table import format_table
from shared_specs import (
    count_flops,
    count_params,
    get_spec,
    layer_table,
    list_presets,
    make_plan,
    preset_doc,
    preset_family,
)


def register(sub: Any) -> None:
    p = sub.add_parser("list", help="list the presets with parameters, GMACs and source")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet5*'")
    p.add_argument("--json", action="store_true", help="print the rows as JSON (exact counts, unrounded GMACs)")
    p.set_defaults(func=run_list)

    p = sub.add_parser("show", help="per-layer table of a preset: canonical name, torch and Keras layer, shape, cost")
    p.add_argument("name", help="preset name (see `resnet-rosetta list`)")
    p.add_argument("--input", type=parse_hw, default=None, metavar="H,W",
                   help="input size (default 224,224; 32,32 for CIFAR nets)")
    p.add_argument("--spec", action="store_true", help="print the spec as JSON instead")
    p.add_argument("--json", action="store_true", help="print the table and totals as JSON")
    p.set_defaults(func=run_show)


def default_input(name: str) -> tuple[int, int]:
    """The input a preset's network was made for: 32x32 for the CIFAR nets (no stem max-pool,
    tutorial_cifar_resnet18's 3x3/3 stem included), else ImageNet's 224x224."""
    spec = get_spec(name)
    return (32, 32) if spec.stem.pool == "none" else (224, 224)


def run_list(args: argparse.Namespace) -> int:
    found = []
    for name in list_presets(args.pattern):
        spec = get_spec(name)
        hw = default_input(name)
        params = count_params(spec)
        found.append({"name": name, "family": preset_family(name), "params": params.trainable,
                      "buffers": params.buffers, "macs": count_flops(spec, hw), "input": list(hw),
                      "source": preset_doc(name)})
    families = list(dict.fromkeys(r["family"] for r in found))  # in registration order
    found.sort(key=lambda r: families.index(r["family"]))  # stable: registration order within a family
    if args.json:
        print(json.dumps(found, indent=1))
        return 0
    rows = [(r["name"], f"{r['params']:,}", f"{r['macs'] / 1e9:.2f}", "x".join(map(str, r["input"])), r["source"])
            for r in found]
    header, rule, *lines = format_table(("preset", "params", "GMACs", "input", "source"), rows,
                                        right=(1, 2)).splitlines()
    print(header, rule, sep="\n")
    for family in families:  # one heading line per family, then its rows, all in one set of columns
        group = [line for line, r in zip(lines, found) if r["family"] == family]
        print(f"== {family} ({len(group)})", *group, sep="\n")
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
    layers = []
    for row in layer_table(spec, hw):
        op = ops[row.name]
        layers.append({"name": row.name, "torch_module": type(make_layer(op)).__name__,
                       "keras_layer": keras_name(row.name),
                       "keras_classes": [type(layer).__name__ for layer in make_layers(op)],
                       "output_shape": list(row.output_shape), "params": row.params, "macs": row.macs})
    params = count_params(spec)
    if args.json:
        print(json.dumps({"name": args.name, "input": list(hw), "layers": layers, "params": params.trainable,
                          "buffers": params.buffers, "macs": count_flops(spec, hw)}, indent=1))
        return 0
    rows = [(r["name"], r["torch_module"], f"{r['keras_layer']} ({' + '.join(r['keras_classes'])})",
             "x".join(map(str, r["output_shape"])), f"{r['params']:,}", f"{r['macs']:,}") for r in layers]
    print(f"{args.name}: {preset_doc(args.name)}")
    print(format_table(("canonical name", "torch module", "keras layer", "output (CxHxW)", "params", "MACs"),
                       rows, right=(4, 5)))
    print(f"\ntotal: {params.trainable:,} trainable parameters + {params.buffers:,} BN statistics; "
          f"{count_flops(spec, hw) / 1e9:.3f} GMACs at {hw[0]}x{hw[1]}")
    return 0
