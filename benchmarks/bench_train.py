"""Training-step speed of our builds against torchvision and keras.applications, measured in one run.

    python benchmarks/bench_train.py [--frameworks torch,keras] [--batch 8] [--size 96]
        [--torch-modes fp32,bf16-cl,bf16-cl-compile] [--keras-modes fp32] [--device cpu|cuda]

PyTorch: `resnet_torch.build("resnet50")` and `torchvision.models.resnet50` hold the same
weights and run the same loop, `resnet_torch.training.train_step` (the one `train` runs),
with the mode's StepOptions: a mode is fp32|bf16|fp16, then -cl (channels_last) and
-compile (torch.compile). Keras, on the process's KERAS_BACKEND: `train_on_batch` of
`resnet_keras.build("resnet50_v1")` against `keras.applications.ResNet50` holding the
same weights (logits heads), first both with Keras's own BatchNorm and SGD (the
architectures alone), then ours as `train --framework keras` runs it (torch-semantics
BatchNorm and TorchSGD, `resnet_keras.training`) against the same reference. Keras's SGD
gets the same learning rate, momentum and weight decay, and every model the loss and
accuracy metric `make_optimizer` compiles; -compile is jit_compile=True on both sides,
bf16 a mixed_bfloat16 policy on both.

Each round times one step of each side, interleaved (benchmarks/harness.py); the first
step (tracing, compiling) is reported apart. Results: benchmarks/results/train-<device>-<what>.md/.json.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    RATIO_HEADER,
    RESULTS,
    Report,
    command_line,
    device_label,
    interleave,
    set_torch_threads,
    timed,
)

from resnet_rosetta.frameworks import import_frameworks  # noqa: E402
from shared_specs.training import SGDConfig, StepOptions  # noqa: E402

SGD = SGDConfig(lr=0.01, momentum=0.9, weight_decay=1e-4)


def parse_mode(mode: str) -> StepOptions:
    """'bf16-cl-compile' -> StepOptions(precision='bf16', channels_last=True, compile=True)."""
    precision, *flags = mode.split("-")
    if unknown := set(flags) - {"cl", "compile"}:
        raise ValueError(f"mode {mode!r}: unknown part(s) {sorted(unknown)}; use fp32|bf16|fp16[-cl][-compile]")
    return StepOptions(precision, channels_last="cl" in flags, compile="compile" in flags)


def batch(args: argparse.Namespace, classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.normal(size=(args.batch, 3, args.size, args.size)).astype(np.float32),
            rng.integers(0, classes, args.batch))


def measure(args: argparse.Namespace, label: str, ours: Callable[[], Any], ref: Callable[[], Any]
            ) -> tuple[Any, list[str]]:
    """First calls of each (tracing/compiling), then the interleaved ratio."""
    _, first_ours = timed(ours)
    _, first_ref = timed(ref)
    r = interleave(ours, ref, warmup=args.warmup, min_rounds=args.min_rounds, max_rounds=args.max_rounds,
                   target_spread=args.target_spread, max_seconds=args.max_seconds, label=label)
    s = r.summary()
    cells = [f"{first_ours:.2f}", f"{first_ref:.2f}", f"{s['median_ours_s'] * 1e3:.1f}",
             f"{s['median_ref_s'] * 1e3:.1f}", f"{args.batch / s['median_ours_s']:.1f}", *r.cells()]
    print(f"{label}: " + " | ".join(cells), flush=True)
    return r, cells


CELLS = ["1st step ours (s)", "1st step ref (s)", "step ours (ms)", "step ref (ms)", "ours (img/s)", *RATIO_HEADER]


def bench_torch(args: argparse.Namespace, report: Report, torch: Any) -> None:
    x, y = batch(args, 1000)
    rows = []
    for mode in args.torch_modes:
        r, cells = torch_mode(args, mode, x, y)
        rows.append([mode, *cells])
        report.results.append({"framework": "torch", "mode": mode, "ours": "resnet_torch.build('resnet50')",
                               "ref": "torchvision.models.resnet50", **r.summary()})
    report.add("PyTorch: resnet_torch.build('resnet50') vs torchvision.models.resnet50, same weights, "
               "resnet_torch.training.train_step", ["mode", *CELLS], rows)


def torch_mode(args: argparse.Namespace, mode: str, x: np.ndarray, y: np.ndarray) -> tuple[Any, list[str]]:
    import torch
    import torchvision

    import resnet_torch as rt
    from resnet_torch import training as tt

    options = parse_mode(mode)
    if args.device != "cpu":  # the batch waits on the device: the step is timed, not the transfer
        x, y = torch.from_numpy(x).to(args.device), torch.from_numpy(y).to(args.device)
    ref = torchvision.models.resnet50(weights=None).to(args.device)
    ours = rt.build("resnet50").to(args.device)
    rt.import_weights(ours, {k: v.cpu().numpy() for k, v in ref.state_dict().items()})
    ref.spec = ours.spec  # make_optimizer reads the head from the spec; the loop is the same function
    opt_ours, opt_ref = tt.make_optimizer(ours, SGD, options), tt.make_optimizer(ref, SGD, options)
    return measure(args, f"torch {mode}", lambda: tt.train_step(ours, opt_ours, x, y),
                   lambda: tt.train_step(ref, opt_ref, x, y))


TRAINERS = {"keras": "Keras's BatchNorm + keras.optimizers.SGD",
            "torch-semantics": "torch-semantics BatchNorm + TorchSGD (train --framework keras)"}


def bench_keras(args: argparse.Namespace, report: Report, keras: Any) -> None:
    x, y = batch(args, 1000)
    x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    backend = keras.backend.backend()
    rows = []
    for mode in args.keras_modes:
        for trainer in args.keras_trainers:
            label = TRAINERS[trainer]
            r, cells = keras_mode(args, keras, mode, trainer, x, y)
            rows.append([mode, label, *cells])
            report.results.append({"framework": "keras", "backend": backend, "mode": mode, "trainer": trainer,
                                   "ours": "resnet_keras.build('resnet50_v1')",
                                   "ref": "keras.applications.ResNet50 + keras.optimizers.SGD", **r.summary()})
    report.add(f"Keras ({backend}): resnet_keras.build('resnet50_v1') vs keras.applications.ResNet50 "
               "(keras.optimizers.SGD), same weights, train_on_batch", ["mode", "ours trains with", *CELLS], rows)


def keras_mode(args: argparse.Namespace, keras: Any, mode: str, trainer: str, x: np.ndarray, y: np.ndarray
               ) -> tuple[Any, list[str]]:
    import resnet_keras as rk
    from resnet_keras import training as kt

    options = parse_mode(mode)
    policy = kt.model_dtype(options)
    keras.config.set_dtype_policy(policy or "float32")  # keras.applications takes no dtype: set while it builds
    try:
        ref = keras.applications.ResNet50(weights=None, input_shape=(args.size, args.size, 3),
                                          classifier_activation=None)
    finally:
        keras.config.set_dtype_policy("float32")
    spec, weights = rk.from_keras_applications(ref)  # resnet50_v1 with a logits head: the same weights
    if trainer == "torch-semantics":
        spec = spec.replace(batchnorm={"running_var": "unbiased"})
    ours = rk.build(spec, dtype=policy, initialize=False)
    rk.import_weights(ours, weights)
    jit = True if options.compile else "auto"
    for model in (ref, ours) if trainer == "keras" else (ref,):
        # Keras's own SGD with the same hyper-parameters (its weight decay is decoupled: trap 10), and the
        # loss and metric resnet_keras.training.make_optimizer compiles with
        model.compile(optimizer=keras.optimizers.SGD(SGD.lr, momentum=SGD.momentum, weight_decay=SGD.weight_decay),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit,
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    if trainer == "torch-semantics":
        kt.make_optimizer(ours, SGD, options)
    if args.device != "cpu":  # the batch waits on the device: the step is timed, not the transfer
        x, y = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
    return measure(args, f"keras {keras.backend.backend()} {mode} {trainer}", lambda: ours.train_on_batch(x, y),
                   lambda: ref.train_on_batch(x, y))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frameworks", default="torch,keras")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--torch-modes", default="fp32,bf16-cl,bf16-cl-compile")
    parser.add_argument("--keras-modes", default="fp32")
    parser.add_argument("--keras-trainers", default=",".join(TRAINERS), help="which of ours: " + ", ".join(TRAINERS))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--warmup", type=int, default=2, help="steps of each side after the first, untimed")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default; harness.py)")
    parser.add_argument("--min-rounds", type=int, default=10)
    parser.add_argument("--max-rounds", type=int, default=60)
    parser.add_argument("--target-spread", type=float, default=0.05)
    parser.add_argument("--max-seconds", type=float, default=240.0, help="per comparison")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/train-<device>-<what>")
    args = parser.parse_args(argv)
    frameworks = [f for f in args.frameworks.split(",") if f]
    args.torch_modes = [m for m in args.torch_modes.split(",") if m]
    args.keras_modes = [m for m in args.keras_modes.split(",") if m]
    args.keras_trainers = [t for t in args.keras_trainers.split(",") if t]
    if unknown := set(args.keras_trainers) - set(TRAINERS):
        parser.error(f"--keras-trainers: unknown {sorted(unknown)}; choose from {', '.join(TRAINERS)}")
    try:
        for mode in args.torch_modes + args.keras_modes:
            parse_mode(mode)
    except Exception as err:
        parser.error(str(err))
    torch, keras = import_frameworks()
    set_torch_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    parts = (["pytorch"] if "torch" in frameworks else []) + (
        [f"keras-{keras.backend.backend()}"] if "keras" in frameworks else [])
    report = Report(f"Training step, batch {args.batch}, {args.size}x{args.size}",
                    command_line("bench_train.py", sys.argv[1:] if argv is None else argv),
                    settings={k: v for k, v in vars(args).items() if k != "out"} | {"out": str(args.out)})
    if "torch" in frameworks:
        bench_torch(args, report, torch)
    if "keras" in frameworks:
        # no device scope on CPUs: on Keras's torch backend, variables made inside keras.device("cpu:0")
        # are copies that never receive gradients (train_on_batch: "No gradients provided")
        with keras.device("gpu:0") if args.device == "cuda" else contextlib.nullcontext():
            bench_keras(args, report, keras)
    out = args.out or RESULTS / f"train-{device_label(args.device)}-{'-'.join(parts)}"
    report.publish(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
