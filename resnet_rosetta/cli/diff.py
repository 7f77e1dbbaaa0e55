"""`resnet-rosetta diff A B`: where two models part ways, layer by layer."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from resnet_rosetta.interop.diff import DEFAULT_TOLERANCE, as_side, diff, file_side, plot
from resnet_rosetta.interop.files import detect_format
from resnet_rosetta.teaching.naive import naive_port
from shared_specs import CheckpointError, SpecError, get_spec


def register(sub: Any) -> None:
    p = sub.add_parser(
        "diff", help="feed two models the same input and compare them layer by layer",
        description="A and B are model files (.safetensors, .pth/.pt, .keras, .weights.h5). Torch files run "
                    "in PyTorch and Keras files in Keras; a safetensors A runs in PyTorch and a safetensors B "
                    "in Keras unless --framework-a/-b say otherwise.")
    p.add_argument("a")
    p.add_argument("b", nargs="?", help="omit with --naive")
    p.add_argument("--naive", metavar="TRAP", help="compare A with a naive port of A into the other framework that "
                   "falls into TRAP (resnet_rosetta.teaching.naive: kernel-reshape, same-padding, bn-epsilon, ...)")
    p.add_argument("--framework-a", choices=("torch", "keras"))
    p.add_argument("--framework-b", choices=("torch", "keras"))
    p.add_argument("--preset", help="architecture of files that carry no spec")
    p.add_argument("--input-size", type=int, default=64, metavar="N", help="random N x N input (default 64)")
    p.add_argument("--input", metavar="NPY", help="a .npy input batch in NCHW layout instead of a random one")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="relative error that counts as diverged")
    p.add_argument("--plot", metavar="PNG", help="also write a plot of the per-layer error")
    p.add_argument("--all", action="store_true", help="print every layer (default: up to the first divergence + 5)")
    p.set_defaults(func=run_diff)


def _framework(path: str, given: str | None, default: str) -> str:
    if given:
        return given
    fmt = detect_format(path)
    return {"torch": "torch", "keras": "keras", "keras-weights": "keras"}.get(fmt, default)


def run_diff(args: argparse.Namespace) -> int:
    spec = get_spec(args.preset) if args.preset else None
    a = file_side(args.a, _framework(args.a, args.framework_a, "torch"), spec)
    if (args.b is None) == (args.naive is None):
        raise SpecError("give either a second model file B or --naive TRAP")
    if args.naive:
        target = a.framework.other  # type: ignore[union-attr]  # file sides always have one
        b = as_side(naive_port(a.spec, a.weights, args.naive, target.name),
                    f"naive port into {target.name} ({args.naive})")
    else:
        b = file_side(args.b, _framework(args.b, args.framework_b, "keras"), spec)
    x = None
    if args.input:
        try:
            x = np.load(args.input, allow_pickle=False).astype(np.float32)
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{args.input}: not a readable .npy array: {err}") from None
        if x.ndim != 4 or x.shape[1] != a.spec.in_channels:
            raise CheckpointError(f"{args.input}: expected an NCHW batch with {a.spec.in_channels} channels, "
                                  f"got {x.shape}")
    report = diff(a, b, input_hw=(args.input_size, args.input_size), x=x, tolerance=args.tolerance)
    if not args.all and report.first_divergence:
        cut = [r.name for r in report.rows].index(report.first_divergence) + 6
        report = type(report)(report.rows[:cut], report.first_divergence, report.causes, report.tolerance,
                              report.output_max_rel, report.labels, report.notes + [f"({len(report.rows) - cut} more "
                                                                                   "layers; --all prints them)"])
    print(report.table())
    if args.plot:
        print(f"plot: {plot(report, args.plot)}")
    return 1 if report.first_divergence else 0
