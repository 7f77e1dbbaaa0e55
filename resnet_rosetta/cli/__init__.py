"""The `resnet-rosetta` console command.

Each subcommand lives in a module of its own exposing `register(subparsers)`, which
adds its parser and sets `func`; this file only lists them. Errors on bad input
(SpecError, WeightsError, CheckpointError) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from resnet_rosetta.cli import convert, demo, describe, diff, specs, teach, train
from shared_specs import CheckpointError, SpecError, WeightsError

COMMANDS = (specs, convert, describe, diff, train, demo, teach)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resnet-rosetta",
        description="One ResNet spec, identical networks in PyTorch and Keras 3, weights moved between them.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    # Keras's TensorFlow backend runs a grouped conv (ResNeXt) on CPU through a tf.function it
    # creates anew at every eager call, and TensorFlow warns of "retracing" each time after the
    # fifth: noise in a command's output, not a problem of the user's.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        return int(args.func(args) or 0)
    except (SpecError, WeightsError, CheckpointError) as err:
        print(f"resnet-rosetta {args.command}: error: {err}", file=sys.stderr)
        return 2

