"""Teaching commands: `explain` (the traps, measured now), `side-by-side`, `source`, `seeds`."""

from __future__ import annotations

import argparse
from typing import Any

from resnet_rosetta.cli.specs import default_input, parse_hw
from shared_specs import SpecError, get_spec
from shared_specs.checkpoint import atomic_write


def register(sub: Any) -> None:
    """Add explain, side-by-side, source and seeds to the CLI."""
    p = sub.add_parser(
        "explain", help="the PyTorch/Keras traps, each measured now on a real network",
        description="Measure traps (default: all) on the current Keras backend (KERAS_BACKEND) and print what "
                    "goes wrong if each is ignored, by how much, and how resnet-rosetta handles it.")
    p.add_argument("traps", nargs="*", type=int, metavar="TRAP", help="trap numbers (1-30); default: all")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--markdown", action="store_true",
                      help="write docs/differences.md: all traps, backend-specific ones on every backend")
    form.add_argument("--json", action="store_true", help="the measurements as JSON")
    p.add_argument("--backends", default="tensorflow,jax,torch", metavar="LIST",
                   help="with --markdown: Keras backends for the backend-specific traps (default: all three)")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (atomically) instead of printing")
    p.set_defaults(func=run_explain)

    p = sub.add_parser("side-by-side", help="PyTorch module tree next to the Keras layer graph of a preset",
                       description="One row per canonical name: the PyTorch module and the Keras layer(s) "
                                   "carrying it, with both frameworks' output shapes.")
    p.add_argument("name", help="preset name (see `resnet-rosetta list`)")
    p.add_argument("--input", type=parse_hw, default=None, metavar="H,W",
                   help="input size (default 224,224; 32,32 for CIFAR nets)")
    p.set_defaults(func=run_side_by_side)

    p = sub.add_parser("source", help="readable PyTorch or Keras source of a preset, as a learner would write it",
                       description="Print a self-contained file building the preset: helpers, the stem, one "
                                   "residual block, the stage loop. Canonical weights load into it as they are.")
    p.add_argument("name", help="preset name (see `resnet-rosetta list`)")
    p.add_argument("--framework", choices=("torch", "keras"), required=True)
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (atomically) instead of printing")
    p.set_defaults(func=run_source)

    p = sub.add_parser("seeds", help="rebuild the seed tutorials' models and check them against the paper",
                       description="Without ID: list the seed posts and whether each builds a faithful ResNet. "
                                   "With ID: every difference from the network the post claims to build.")
    p.add_argument("id", nargs="?", help="seed id (000, 001, 002, 003-keras, 003-torch, 004)")
    p.set_defaults(func=run_seeds)


def _emit(text: str, output: str | None) -> None:
    if output:
        atomic_write(output, lambda f: f.write(text.encode()))
        print(f"wrote {output}")
    else:
        print(text, end="" if text.endswith("\n") else "\n")


def run_explain(args: argparse.Namespace) -> int:
    from resnet_rosetta.teaching import traps

    for n in args.traps:
        traps.get_trap(n)  # every bad number is an error before anything is measured
    if args.markdown:
        backends = [b.strip() for b in args.backends.split(",") if b.strip()]
        unknown = sorted(set(backends) - set(traps.BACKENDS))
        if unknown:
            raise SpecError(f"--backends: unknown backend(s) {unknown}; choose from {list(traps.BACKENDS)}")
        if args.traps:
            raise SpecError("--markdown writes every trap; leave out the trap numbers")
        _emit(traps.markdown(backends), args.output)
        return 0
    measured = traps.measure(args.traps or None)
    if args.json:
        _emit(traps.to_json(measured) + "\n", args.output)
        return 0
    text = "\n\n".join(traps.format_trap(traps.TRAPS[n], m) for n, m in measured.items())
    _emit(text + "\n", args.output)
    return 0


def run_side_by_side(args: argparse.Namespace) -> int:
    from resnet_rosetta.table import format_table
    from resnet_rosetta.teaching.side_by_side import format_rows, side_by_side

    spec = get_spec(args.name)
    hw = args.input or default_input(args.name)
    rows = side_by_side(spec, hw)
    print(f"{args.name} at {hw[0]}x{hw[1]}: PyTorch modules (NCHW) next to Keras layers (NHWC), by canonical name")
    print(format_table(("PyTorch module", "class", "output", "Keras layer(s)", "output"), format_rows(rows)))
    return 0


def run_source(args: argparse.Namespace) -> int:
    from resnet_rosetta.teaching.source import resnet_source

    _emit(resnet_source(get_spec(args.name), args.framework, preset=args.name), args.output)
    return 0


def run_seeds(args: argparse.Namespace) -> int:
    from resnet_rosetta.table import format_table
    from resnet_rosetta.teaching import seeds

    if args.id:
        print(seeds.format_check(seeds.check_seed(args.id)))
        return 0
    rows = []
    for seed_id in seeds.SEEDS:
        check = seeds.check_seed(seed_id)
        if check.seed.build is None:
            verdict = check.error or ""
        elif not check.built:
            verdict = "does not build"
        else:
            arch = sum(f.architectural for f in check.findings)
            verdict = "faithful" if check.faithful else f"not faithful ({arch} architectural differences)"
        ports = "-" if not check.ports else (check.ports.split(" (")[0]
                                             + (" once fixed" if check.fixed is not None else ""))
        rows.append((seed_id, check.seed.framework or "-", check.seed.claims or "-", verdict, ports,
                     check.seed.title))
    print(format_table(("seed", "framework", "claims", "checker's verdict", "ports as", "post"), rows))
    print("\n`resnet-rosetta seeds ID` lists every difference and the fix; \"ports as\": the spec "
          "resnet_torch.from_module / resnet_keras.from_model read off the model.")
    return 0
