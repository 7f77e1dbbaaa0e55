"""`resnet-rosetta train` and `resnet-rosetta evaluate`: one network, either framework.

    resnet-rosetta train --framework torch --preset cifar_resnet20 --data digits --epochs 5 --out runs/r20
    resnet-rosetta train --framework keras --out runs/r20 --epochs 8 --resume
    resnet-rosetta evaluate runs/r20/epoch-0008.safetensors --framework keras --data digits
    torchrun --nproc_per_node 2 -m resnet_rosetta.cli train --distributed ...

See docs/training.md.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from resnet_rosetta.frameworks import FRAMEWORK_NAMES
from resnet_rosetta.training.runs import (
    KERAS_TRAIN_BACKEND,
    RunSettings,
    evaluate_checkpoint,
    load_framework,
    model_checkpoint,
    read_state,
    train,
)
from shared_specs import SpecError, get_spec
from shared_specs.training import PRECISIONS, SGDConfig

# Defaults of the options that define a run; None on the command line means "not given",
# so that --resume can tell an explicit (and conflicting) choice from a default.
DEFAULTS: dict[str, Any] = {"batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "nesterov": False,
                            "milestones": (), "gamma": 0.1, "seed": 0, "augment": True, "precision": "fp32"}


def register(sub: Any) -> None:
    p = sub.add_parser(
        "train", help="train a preset on digits or CIFAR in PyTorch or Keras; resumable",
        description="Train with torch.optim.SGD semantics in either framework (the same batches, the same update), "
                    "writing a canonical checkpoint and the resumable training state after every epoch.")
    p.add_argument("--framework", required=True, choices=FRAMEWORK_NAMES)
    p.add_argument("--preset",
                   help="architecture (see `resnet-rosetta list`); num_classes and in_channels follow the data")
    p.add_argument("--data", help="'digits' (scikit-learn, offline) or a directory with CIFAR-10/100 binary files")
    p.add_argument("--epochs", type=_positive, required=True, help="train until this many epochs are done")
    p.add_argument("--out", required=True, type=Path, help="run directory: checkpoints, training state, history")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (its settings are kept)")
    p.add_argument("--batch-size", type=_positive, help=f"global batch size (default {DEFAULTS['batch_size']})")
    p.add_argument("--lr", type=float, help=f"learning rate (default {DEFAULTS['lr']})")
    p.add_argument("--momentum", type=float, help=f"default {DEFAULTS['momentum']}")
    p.add_argument("--weight-decay", type=float,
                   help=f"L2, added to the gradient as torch does (default {DEFAULTS['weight_decay']})")
    p.add_argument("--nesterov", action="store_const", const=True, help="Nesterov momentum")
    p.add_argument("--milestones", type=_epochs,
                   help="epochs after which the lr is multiplied by --gamma, e.g. 100,150")
    p.add_argument("--gamma", type=float, help=f"lr factor at each milestone (default {DEFAULTS['gamma']})")
    p.add_argument("--seed", type=int, help="initial weights, batch order and augmentation (default 0)")
    p.add_argument("--no-augment", dest="augment", action="store_const", const=False,
                   help="skip the pad-and-crop + flip augmentation CIFAR gets by default")
    p.add_argument("--channels", type=int, choices=(1, 3), help="digits only: 1 gray channel or 3 copies (default 3)")
    p.add_argument("--subset", type=_positive, help="use only the first N training and test images (quick runs)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="fp32 (default), or bf16/fp16 mixed precision: float32 weights and update, half-precision "
                        "convolutions (torch autocast; a Keras mixed policy); a setting of the run, as it changes "
                        "the rounding (docs/training.md: by how much)")
    p.add_argument("--channels-last", action="store_true",
                   help="torch: NHWC memory format, faster convolutions on GPUs and recent CPUs (Keras is NHWC)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model; Keras: jit_compile=True (XLA on TensorFlow, which Keras leaves off "
                        "on CPUs; JAX always compiles)")
    _add_framework_options(p)
    p.add_argument("--distributed", action="store_true",
                   help="data parallel: torch under torchrun (gloo on CPU, NCCL on GPU), Keras on every JAX device")
    p.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    p.set_defaults(func=run_train)

    p = sub.add_parser("evaluate", help="accuracy of a canonical checkpoint on digits or CIFAR, in either framework")
    p.add_argument("checkpoint", help="a canonical .safetensors checkpoint (e.g. epoch-0010.safetensors from "
                                      "`train`), or a run directory: its newest epoch")
    p.add_argument("--framework", required=True, choices=FRAMEWORK_NAMES)
    p.add_argument("--data", required=True, help="'digits' or a directory with CIFAR-10/100 binary files")
    p.add_argument("--split", choices=("test", "train"), default="test")
    p.add_argument("--subset", type=_positive, help="only the first N images of the split")
    _add_framework_options(p)
    p.set_defaults(func=run_evaluate)


def _add_framework_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("tensorflow", "jax", "torch"),
                   help="Keras backend (default: $KERAS_BACKEND, else the one that trains fastest, measured: "
                        f"{KERAS_TRAIN_BACKEND})")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _epochs(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected epochs like 100,150, got {text!r}") from None


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    """The run's settings: a resumed run's stored ones with explicit options laid over
    them (a conflicting one then fails in `train`), else the options and defaults."""
    given = {k: getattr(args, k) for k in (*DEFAULTS, "channels", "subset") if getattr(args, k) is not None}
    sgd_keys = {f.name for f in dataclasses.fields(SGDConfig)}
    sgd_given = {k: v for k, v in given.items() if k in sgd_keys}
    run_given = {k: v for k, v in given.items() if k not in sgd_keys}
    if args.resume:
        stored = read_state(args.out)[0].settings
        spec = stored.spec if args.preset is None else get_spec(args.preset)
        data = stored.data if args.data is None else _data_source(args.data)
        return dataclasses.replace(stored, spec=spec, data=data, sgd=dataclasses.replace(stored.sgd, **sgd_given),
                                   **run_given)
    if args.preset is None or args.data is None:
        raise SpecError("train needs --preset and --data (or --resume with the --out of an earlier run)")
    sgd = SGDConfig(**{**{k: DEFAULTS[k] for k in sgd_keys}, **sgd_given})
    run = {k: DEFAULTS[k] for k in ("batch_size", "seed", "augment", "precision")}
    return RunSettings(spec=get_spec(args.preset), data=_data_source(args.data), sgd=sgd, **{**run, **run_given})


def _data_source(text: str) -> str:
    """'digits', or the directory as an absolute path (so a resume from elsewhere matches)."""
    return text if text == "digits" else str(Path(text).resolve())


def run_train(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    framework = load_framework(args.framework, args.backend, args.device)
    train(settings, args.out, framework, args.epochs, resume=args.resume, distributed=args.distributed,
          verbose=not args.quiet, channels_last=args.channels_last, compile=args.compile)
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    checkpoint = model_checkpoint(args.checkpoint)  # before the framework loads: a wrong file fails fast
    framework = load_framework(args.framework, args.backend, args.device)
    spec, metrics, data = evaluate_checkpoint(checkpoint, framework, args.data, subset=args.subset,
                                              split=args.split)
    correct = round(metrics.accuracy * metrics.count)
    where = f" ({checkpoint})" if Path(args.checkpoint).is_dir() else ""
    print(f"{spec.name}{where} on {data.name} {args.split} ({args.framework}): accuracy {metrics.accuracy:.4f} "
          f"({correct}/{metrics.count}), loss {metrics.loss:.4f}")
    return 0
